"""Every stage in its container, by the command line its Kubeflow component runs on a cluster.

``privfed pipeline run-local --runner docker`` compiles the pipeline IR and runs it with KFP's
``DockerRunner``: each task is a container of the project image started with the IR's own
``command``/``args`` (``python3 -m kfp.dsl.executor_main ...``), reading and writing the
mounted pipeline root. The result is compared with ``dvc repro`` of the same params on the host:
what is deterministic in the seed must be identical (data, partition statistics, ε, the weights
and metrics of every model trained without DP); the DP run draws its noise from OS entropy, so
only its shape (runs, rounds, models evaluated) is compared.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from tests.integration.conftest import project_env, run, set_params

pytestmark = pytest.mark.integration


def tree_digest(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``folder``."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def same_weights(a: Path, b: Path) -> bool:
    """Whether two saved models hold equal tensors under the same names."""
    import torch

    left = torch.load(a, map_location="cpu", weights_only=False)["state_dict"]
    right = torch.load(b, map_location="cpu", weights_only=False)["state_dict"]
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


def _no_time(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "seconds"}


def test_every_stage_in_the_image_matches_dvc_repro(image: str, project: Path) -> None:
    # Prepare: the tiny profile on CPU only (the GPU image is not built here: accelerator_count 0
    # gives every task the CPU image, as on a CPU-only cluster)
    set_params(project, {"kubeflow.accelerator_count": 0})
    env = project_env(PRIVFED_IMAGE=image)

    # Execute: dvc repro on the host, then the same params through KFP in containers
    t0 = time.monotonic()
    repro = run([".venv/bin/dvc", "repro"], project, env, timeout=900)
    t_repro = time.monotonic() - t0
    assert repro.returncode == 0, repro.stdout[-4000:] + repro.stderr[-4000:]
    t0 = time.monotonic()
    kfp = run(
        [".venv/bin/privfed", "pipeline", "run-local", "--runner", "docker"],
        project,
        env,
        timeout=1200,
    )
    t_kfp = time.monotonic() - t0
    print(f"dvc repro {t_repro:.0f} s; KFP DockerRunner {t_kfp:.0f} s")
    assert kfp.returncode == 0, kfp.stdout[-6000:] + kfp.stderr[-6000:]
    out = project / "kfp-local" / "outputs"

    # Assert: the data stages wrote the same bytes (the raw manifest names where the data came
    # from, a KFP artifact path there, so it is left out)
    raw_here, raw_there = tree_digest(project / "data/raw"), tree_digest(out / "data/raw")
    assert raw_here.pop("manifest.json") and raw_there.pop("manifest.json")
    assert raw_here == raw_there
    assert tree_digest(project / "data/partitions") == tree_digest(out / "data/partitions")
    for name in ("partition_stats", "privacy", "train_centralized", "train_local"):
        assert (project / f"metrics/{name}.json").read_bytes() == (
            out / f"metrics/{name}.json"
        ).read_bytes(), name
    # training without DP is deterministic in its seed: the same weights, to the bit, for the
    # centralized, every local-only and the non-DP federated model (torch.save's zip header
    # differs, so tensors are compared)
    models = sorted(
        p.relative_to(project)
        for p in (project / "models").rglob("model.pt")
        if "federated_dp" not in p.parts
    )
    assert len(models) >= 3, models
    for rel in models:
        assert same_weights(project / rel, out / rel), rel
    # the DP run draws its noise from OS entropy: only its shape is comparable
    here = json.loads((project / "metrics/evaluation.json").read_text())
    there = json.loads((out / "metrics/evaluation.json").read_text())
    assert set(here["models"]) == set(there["models"])
    for model in set(here["models"]) - {"federated_dp"}:
        assert here["models"][model] == there["models"][model], model
    fed_here = json.loads((project / "metrics/train_federated.json").read_text())["runs"]
    fed_there = json.loads((out / "metrics/train_federated.json").read_text())["runs"]
    assert fed_here.keys() == fed_there.keys() == {"federated", "federated_dp"}
    for run_name in fed_here:
        assert fed_here[run_name]["rounds_completed"] == fed_there[run_name]["rounds_completed"]
    assert [_no_time(r) for r in fed_here["federated"]["rounds"]] == [
        _no_time(r) for r in fed_there["federated"]["rounds"]
    ]
