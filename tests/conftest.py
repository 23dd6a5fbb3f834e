"""Shared fixtures: the project's own params.yaml, resolved with the tiny profile."""

from __future__ import annotations

import copy
import gc
import os
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from privfed.config import PrivFedConfig, config_from_dict

ROOT = Path(__file__).resolve().parents[1]


def _committed_params() -> str:
    """params.yaml as committed at HEAD; the working copy only outside a git checkout.

    README's ``dvc exp run -S key=value`` rewrites the working params.yaml and leaves it so:
    tests read the committed file, so a user's experiment cannot change what they expect.
    """
    shown = subprocess.run(
        ["git", "show", "HEAD:params.yaml"], cwd=ROOT, capture_output=True, text=True
    )
    return shown.stdout if shown.returncode == 0 else (ROOT / "params.yaml").read_text()


#: The pinned params every test reads (a copy of the committed file, never the working one).
PARAMS = Path(tempfile.mkdtemp(prefix="privfed-test-params-")) / "params.yaml"
PARAMS.write_text(_committed_params())

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
# The notes task's public tokenizer and base: built once per test session (every subprocess
# inherits this), never read from or left in the user's ~/.cache.
os.environ.setdefault("PRIVFED_CACHE_DIR", tempfile.mkdtemp(prefix="privfed-test-cache-"))

#: `make test` runs on two pytest-xdist workers (``-n 2 --dist loadgroup``), which take tests
#: in collection order. These modules are started first, slowest first (from `--durations`), so
#: the suite does not end on one worker running a two-minute test while the other idles; the
#: many short unit tests then even out the end. Integration modules not listed come next.
#: (Last measured order, fresh clone, 2 workers: plugin 195 s, pipeline 169, segmentation
#: 167, dashboard 150, notes 148, retina 133, own data 116, resume 106, kfp 105, README 85.)
START_FIRST = (
    "integration/test_plugin_task.py",
    "integration/test_segmentation_pipeline.py",
    "integration/test_pipeline_e2e.py",
    "integration/test_dashboard_browser.py",
    "integration/test_notes_pipeline.py",
    "integration/test_retina_pipeline.py",
    "integration/test_bring_your_own_data.py",
    "integration/test_resume.py",
    "integration/test_kfp_local.py",
    "integration/test_readme_commands.py",
    "integration/test_dropout.py",
    "integration/test_extraction_pipeline.py",
    "integration/test_secure_aggregation.py",
    "integration/test_robust_federation.py",
    "integration/test_kubernetes_launcher.py",
    "integration/test_scaffold_federation.py",
    "unit/test_robust_aggregation.py",  # one group of ~60 s: not the last one to start
)


def _start_order(item: pytest.Item) -> tuple[int, int]:
    module = item.path.relative_to(ROOT / "tests").as_posix()  # e.g. integration/test_resume.py
    if module in START_FIRST:
        return (0, START_FIRST.index(module))
    return (1, 0) if item.get_closest_marker("integration") else (2, 0)


@pytest.hookimpl(tryfirst=True)  # before xdist's hook reads the xdist_group marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow modules first (see START_FIRST); a stable sort keeps each module's own order.

    Every unit, component and manifest module is one xdist group, so its module-scoped
    fixtures (a trained federation, compiled pipeline IR, ...) are built once, on one worker.
    Integration tests share no fixture beyond the session's and are scheduled one by one.
    """
    items.sort(key=_start_order)
    for item in items:
        if item.get_closest_marker("integration") is None:
            item.add_marker(pytest.mark.xdist_group(item.path.relative_to(ROOT).as_posix()))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Move the imported modules' objects (torch, MLflow, Flower, ...: ~0.5 M) out of the
    garbage collector's reach once every test module is imported.

    Flower's ``ArrayRecord.to_numpy_ndarrays(keep_input=False)`` (Bulyan's aggregation) calls
    ``gc.collect()`` for every update; over this process's heap each call took 0.33 s, and the
    seven-hospital Bulyan test spent 8 of its 11 s per run there. Objects made by tests are
    still collected as usual.
    """
    gc.freeze()


def raw_params(**overrides: dict) -> dict:
    """params.yaml as a dict with base.profile=tiny and section overrides merged in."""
    raw = yaml.safe_load(PARAMS.read_text())
    raw["base"]["profile"] = "tiny"
    for section, values in overrides.items():
        raw.setdefault(section, {})
        raw[section] = {**(raw[section] or {}), **values}
    return copy.deepcopy(raw)


def partition(cfg: PrivFedConfig, raw: Path, work: Path) -> Path:
    """``raw`` validated (report in ``work/v``) and partitioned: ``work/p``, one folder per
    hospital, the way the pipeline's validate_data and partition_data stages lay it out."""
    from privfed.stages import partition_data, validate_data

    validate_data.run(cfg, {"raw": raw}, {"report": work / "v"})
    partition_data.run(
        cfg,
        {"raw": raw, "validation": work / "v"},
        {"partitions": work / "p", "stats": work / "stats.json"},
    )
    return work / "p"


@pytest.fixture
def tiny_cfg() -> PrivFedConfig:
    return config_from_dict(raw_params())


@pytest.fixture(scope="session")
def tiny_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated raw data for the tiny profile (shared, read-only)."""
    from privfed.stages import generate_data, ingest_data

    cfg = config_from_dict(raw_params())
    base = tmp_path_factory.mktemp("raw")
    generate_data.run(cfg, {}, {"generated": base / "generated"})
    ingest_data.run(cfg, {"generated": base / "generated"}, {"raw": base / "raw"})
    return base / "raw"
