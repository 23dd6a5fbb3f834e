from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from privfed.config import STAGES, ConfigError, config_from_dict, load_config, resolved_config
from tests.conftest import PARAMS, ROOT, raw_params


def test_params_yaml_loads_with_every_profile() -> None:
    for profile in ("tiny", "default", "full"):
        raw = raw_params()
        raw["base"]["profile"] = profile
        cfg = config_from_dict(raw)
        assert cfg.base.profile == profile
    assert load_config(PARAMS).base.profile == "default"


def test_profile_overlay_replaces_single_keys() -> None:
    cfg = config_from_dict(raw_params())
    raw = yaml.safe_load(PARAMS.read_text())
    tiny = raw["profiles"]["tiny"]
    assert cfg.generate_data.patients_per_hospital == tiny["generate_data"]["patients_per_hospital"]
    # keys the overlay does not name keep the section's value
    assert cfg.train.lr == raw["train"]["lr"]


@pytest.mark.parametrize(
    ("section", "values", "needle"),
    [
        ("base", {"task": "radiology"}, "radiology"),
        ("train_federated", {"rounds": -3}, "train_federated.rounds"),
        ("privacy", {"delta": 2.0}, "privacy.delta"),
        ("partition_data", {"scheme": "random"}, "random"),
        ("train_federated", {"roundz": 3}, "roundz"),
    ],
)
def test_bad_values_are_named(section: str, values: dict, needle: str) -> None:
    raw = raw_params(**{section: values})
    raw["base"]["profile"] = "default"  # the tiny overlay would replace some of these keys
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw)
    assert needle in str(err.value)


@pytest.mark.parametrize(
    ("task", "strategy", "expected"),
    [
        ("extraction", None, "fedavgm"),  # params.yaml's null: the task's own
        ("readmission", None, "fedavg"),
        ("extraction", "fedavg", "fedavg"),  # a strategy set in params wins
    ],
)
def test_a_null_strategy_is_the_tasks_own(task: str, strategy: str | None, expected: str) -> None:
    # Prepare
    raw = raw_params(base={"task": task}, train_federated={"strategy": strategy})
    assert yaml.safe_load(PARAMS.read_text())["train_federated"]["strategy"] is None
    # Execute
    cfg = config_from_dict(raw)
    # Assert: resolved before validation, so the resolved config that travels to the
    # ServerApp and every ClientApp holds it, and reloads to the same strategy
    assert cfg.train_federated.strategy == expected
    assert resolved_config(cfg.model_dump(mode="json")).train_federated.strategy == expected


def test_unknown_profile_is_rejected() -> None:
    raw = raw_params()
    raw["base"]["profile"] = "huge"
    with pytest.raises(ConfigError, match="huge"):
        config_from_dict(raw)


def test_dvc_yaml_params_and_stages_match_the_schema() -> None:
    """dvc.yaml, params.yaml and the config schema stay in step."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert list(dvc) == list(STAGES)
    params = yaml.safe_load(PARAMS.read_text())
    for stage, spec in dvc.items():
        assert spec["cmd"] == f".venv/bin/privfed {stage}"
        for key in spec.get("params", []):
            node = params
            for part in key.split("."):
                assert part in node, f"dvc stage {stage} lists unknown param {key}"
                node = node[part]
    schema_sections = set(config_from_dict(raw_params()).model_dump())
    assert set(params) - {"profiles"} == schema_sections


def _covers(paths: list[str], path: str) -> bool:
    """``path`` is one of ``paths`` or inside one of them."""
    return any(path == p or path.startswith(f"{p}/") for p in paths)


def _out_paths(spec: dict) -> list[str]:
    """Every path a dvc.yaml stage writes: outs, metrics and plots (each a str or {path: opts})."""
    entries = [*spec.get("outs", []), *spec.get("metrics", []), *spec.get("plots", [])]
    return [e if isinstance(e, str) else next(iter(e)) for e in entries]


@pytest.mark.parametrize("stage", STAGES)
def test_dvc_yaml_lists_each_stage_as_its_spec_declares(stage: str) -> None:
    """dvc.yaml's params, data deps and outputs are the ones ``SPEC`` declares beside ``run()``.

    dvc.yaml may list files inside a declared folder (DVC cannot track plots/ as one output and
    plots/federated_rounds.json as a plot), but nothing outside the declared paths.
    """
    from privfed.stages import stage_spec

    spec = stage_spec(stage)
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]
    assert dvc["params"] == list(spec.params)
    # dvc.lock is written by DVC after every stage: no stage can depend on it
    inputs = [p for p in spec.inputs.values() if p != "dvc.lock"]
    data_deps = [d for d in dvc["deps"] if not d.startswith(("src/", "${"))]
    for path in inputs:
        assert any(_covers([path], d) for d in data_deps), f"{stage}: input {path} not a dep"
    for dep in data_deps:
        assert _covers(inputs, dep), f"{stage}: dep {dep} is none of its declared inputs"
    outs = _out_paths(dvc)
    for path in spec.outputs.values():
        assert any(_covers([path], o) for o in outs), f"{stage}: output {path} not in dvc.yaml"
    for out in outs:
        assert _covers(list(spec.outputs.values()), out), f"{stage}: {out} is not declared"


def test_default_paths_and_the_cli_come_from_the_declarations(tmp_path: Path) -> None:
    from privfed.cli import run_stage
    from privfed.stages import DEFAULT_PATHS, stage_spec

    assert list(DEFAULT_PATHS) == list(STAGES)
    for stage in STAGES:
        spec = stage_spec(stage)
        assert DEFAULT_PATHS[stage] == {"inputs": dict(spec.inputs), "outputs": dict(spec.outputs)}
    with pytest.raises(ConfigError, match=r"no input/output named \['data'\]"):
        run_stage("register_model", str(ROOT / "params.yaml"), {"data": tmp_path}, {})


def test_flower_run_config_is_derived_from_params(tmp_path) -> None:
    from privfed.federated.launcher import write_app_dir

    write_app_dir(tmp_path, {"privfed-config": '{"a": 1}', "dp": True, "num-nodes": 3})
    text = (tmp_path / "pyproject.toml").read_text()
    assert 'serverapp = "privfed.federated.app:server_app"' in text
    assert 'privfed-config = "{\\"a\\": 1}"' in text
    assert "dp = true" in text and "num-nodes = 3" in text


# Modules that cannot change a stage's outputs: entry-point glue and the declarations.
_NOT_OUTPUT_AFFECTING = {
    "__init__.py",
    "cli.py",
    "logs.py",
    "stages/__init__.py",
    "stages/spec.py",  # the StageSpec declarations: names and default paths, no computation
    "tracking.py",  # what a stage logs to MLflow (docs/tracking.md): where users look, no output
}


#: Run in one fresh interpreter: third-party packages are imported once, then each stage is
#: imported in a forked child (a clean copy with no privfed module), which prints the privfed
#: files it loaded. Forking saves importing torch, MLflow, Flower and GX once per stage.
_IMPORT_PROBE = """
import json, os, sys
import flwr, great_expectations, matplotlib.pyplot, mlflow, numpy, opacus, pandas  # noqa: F401
import scipy.stats, sklearn, torch, yaml  # noqa: F401
assert not [n for n in sys.modules if n.startswith("privfed")], "parent imported privfed"
out = {}
for stage in sys.argv[1:]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        __import__(f"privfed.stages.{stage}")
        files = [m.__file__ for n, m in list(sys.modules.items())
                 if n.startswith("privfed") and getattr(m, "__file__", None)]
        with os.fdopen(write, "w") as pipe:
            pipe.write(json.dumps(files))
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        out[stage] = json.loads(pipe.read())
    _, status = os.waitpid(pid, 0)
    assert status == 0, f"importing privfed.stages.{stage} failed"
print(json.dumps(out))
"""


def test_every_stage_depends_on_the_code_it_imports() -> None:
    """A module a stage imports but dvc.yaml does not list would let `dvc repro` skip a rerun."""
    import json
    import subprocess
    import sys

    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    src = ROOT / "src" / "privfed"
    imported = json.loads(
        subprocess.run(
            [sys.executable, "-c", _IMPORT_PROBE, *dvc],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert set(imported) == set(dvc)
    for stage, spec in dvc.items():
        deps = [ROOT / d for d in spec["deps"] if d.startswith("src/")]
        for file in map(Path, imported[stage]):
            rel = file.resolve().relative_to(src.resolve()).as_posix()
            if rel in _NOT_OUTPUT_AFFECTING:
                continue
            assert any(
                file.resolve() == d.resolve() or d.resolve() in file.resolve().parents for d in deps
            ), f"dvc stage {stage} imports {rel} but does not depend on it"
