"""Components called as plain Python on temporary artifacts (as kubeflow/pipelines-components
tests do), and the adapter's glue: sweep overrides, metrics flattening, report pages."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from kfp.dsl import HTML, Artifact, Dataset, Metrics

from privfed.config import ConfigError, config_from_dict
from privfed.kubeflow.adapter import (
    collect_sweep_points,
    log_scalars,
    override_config,
    override_section,
    plots_html,
    run_stage,
    stage_config,
)
from tests.conftest import ROOT, raw_params

sys.path.insert(0, str(ROOT))

from components.check_params.component import check_params  # noqa: E402
from components.generate_data.component import generate_data  # noqa: E402
from components.ingest_data.component import ingest_data  # noqa: E402
from components.validate_data.component import validate_data  # noqa: E402


def _art(cls, tmp_path: Path, name: str):
    return cls(name=name, uri=str(tmp_path / name))


def _generate_and_ingest(config: dict, tmp_path: Path, raw: Dataset) -> None:
    generated = _art(Dataset, tmp_path, "generated")
    generate_data.python_func(config=config, generated=generated)
    ingest_data.python_func(config=config, generated=generated, raw=raw)


def test_data_components_produce_a_validated_dataset(tmp_path: Path) -> None:
    # Prepare
    config = check_params.python_func(**raw_params())
    raw = _art(Dataset, tmp_path, "raw")
    validated, report = _art(Dataset, tmp_path, "validated"), _art(Artifact, tmp_path, "v")
    page = _art(HTML, tmp_path, "validation.html")
    # Execute
    _generate_and_ingest(config, tmp_path, raw)
    validate_data.python_func(
        config=config, raw=raw, report=report, validated=validated, validation_report=page
    )
    # Assert
    assert json.loads((Path(report.path) / "report.json").read_text())["success"] is True
    assert sorted(f.name for f in Path(validated.path).iterdir()) == sorted(
        f.name for f in Path(raw.path).iterdir()
    )
    assert 'Data validation (readmission): <span class="pass">passed' in Path(page.path).read_text()


def test_invalid_data_stops_before_a_validated_dataset_exists(
    tmp_path: Path, scratch_mlflow: str
) -> None:
    from mlflow import MlflowClient

    p = raw_params(validate_data={"min_patients_per_hospital": 10_000})
    p["profiles"]["tiny"]["validate_data"] = {}  # let the section's value stand
    raw = _art(Dataset, tmp_path, "raw")
    validated = _art(Dataset, tmp_path, "validated")
    _generate_and_ingest(p, tmp_path, raw)
    with pytest.raises(RuntimeError, match="expectation"):
        validate_data.python_func(
            config=p,
            raw=raw,
            report=_art(Artifact, tmp_path, "v"),
            validated=validated,
            validation_report=_art(HTML, tmp_path, "v.html"),
        )
    assert not Path(validated.path).exists()
    # the component's stage ran inside the pipeline's MLflow run, which says where it stopped
    client = MlflowClient(tracking_uri=scratch_mlflow)
    (run,) = client.search_runs([client.get_experiment_by_name("privfed").experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["privfed.stage.validate_data"] == "failed"
    assert run.data.tags["privfed.stage.ingest_data"] == "done"


SCAFFOLD = {
    "train_federated": {"strategy": "scaffold"},
    "privacy": {"enabled": False},
    "register_model": {"candidate": "federated"},
}


def test_check_params_passes_the_whole_config_on() -> None:
    """SCAFFOLD is valid only with privacy off *and* a non-DP candidate: sections that only
    make sense together, which every component now receives together."""
    # Prepare
    sections = raw_params(**SCAFFOLD)
    # Execute
    config = check_params.python_func(**sections)
    # Assert: every section as given; without a pipeline job (the sweep) nothing logs live
    assert {k: v for k, v in config.items() if k != "register_model"} == {
        k: v for k, v in sections.items() if k != "register_model"
    }
    assert config["register_model"] == {**sections["register_model"], "live": False}
    assert stage_config(config).train_federated.strategy == "scaffold"


def test_check_params_opens_the_pipeline_run_every_stage_logs_into(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The main pipeline passes its job id and MLflow server: every component gets them in its
    config, and the run is opened once, before the stages fan out."""
    from mlflow import MlflowClient

    from privfed.tracking import open_pipeline_run

    # Prepare: no MLFLOW_TRACKING_URI (it would win over the config's)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # Execute
    config = check_params.python_func(**raw_params(), mlflow_tracking_uri=uri, pipeline_job="job-7")
    # Assert: the config names the server and the key; a stage finds the same run
    cfg = stage_config(config)
    assert cfg.register_model.tracking_uri == uri
    assert cfg.register_model.pipeline_run == "kfp:job-7"
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("privfed").experiment_id])
    assert run.data.tags["privfed.pipeline_key"] == "kfp:job-7"
    assert open_pipeline_run(cfg, tmp_path).run_id == run.info.run_id


def test_check_params_names_contradicting_sections() -> None:
    sections = raw_params(**SCAFFOLD)
    sections["register_model"] = {**sections["register_model"], "candidate": "federated_dp"}
    with pytest.raises(ConfigError, match="register_model.candidate='federated_dp'"):
        check_params.python_func(**sections)


def test_run_stage_wants_the_artifacts_its_spec_declares(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"unknown: \['centralized'\], missing: \['model'\]"):
        run_stage(
            "train_centralized",
            raw_params(),
            partitions=str(tmp_path),
            centralized=str(tmp_path / "m"),
            metrics=str(tmp_path / "m.json"),
        )


def test_failure_under_an_invalid_config_is_still_recorded(tmp_path: Path, monkeypatch) -> None:
    """The exit handler records a run that failed at check-params, on its own MLflow settings."""
    from mlflow import MlflowClient

    from privfed.kubeflow.adapter import record_pipeline_status

    # Prepare: SCAFFOLD with DP on: invalid as a whole
    sections = raw_params(**SCAFFOLD)
    sections["privacy"] = {**sections["privacy"], "enabled": True}
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # the handler sets it; restored afterwards
    # Execute
    run_id = record_pipeline_status(
        state="FAILED", job="j-1", error="check-params failed", sections=sections, tracking_uri=uri
    )
    # Assert
    run = MlflowClient(tracking_uri=uri).get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags["kfp.pipeline_job"] == "j-1"


def test_override_section_beats_the_profile_overlay() -> None:
    """A sweep's ε must hold under the tiny profile, whose overlay sets its own ε."""
    p = raw_params()
    assert p["profiles"]["tiny"]["privacy"]["target_epsilon"] == 8.0  # the trap
    # Execute
    section, profiles = override_section(
        p["privacy"],
        p["profiles"],
        "privacy",
        {"target_epsilon": 0.5, "epsilon_budget": 0.5},
        unset=["noise_multiplier"],
    )
    cfg = config_from_dict({**p, "privacy": section, "profiles": profiles})
    # Assert
    assert cfg.privacy.target_epsilon == 0.5 and cfg.privacy.epsilon_budget == 0.5
    assert cfg.privacy.noise_multiplier is None
    assert cfg.train_federated.rounds == p["profiles"]["tiny"]["train_federated"]["rounds"]
    assert p["profiles"]["tiny"]["privacy"]["target_epsilon"] == 8.0  # inputs untouched


def test_override_config_sets_one_section_of_the_whole_config() -> None:
    """The sweep's set_params: one config in, the same config with the swept value out."""
    p = raw_params()
    config = override_config(p, "privacy", {"target_epsilon": 0.5}, unset=["noise_multiplier"])
    assert config_from_dict(config).privacy.target_epsilon == 0.5
    assert {k: v for k, v in config.items() if k not in ("privacy", "profiles")} == {
        k: v for k, v in p.items() if k not in ("privacy", "profiles")
    }


def test_loop_values_come_back_as_ints_where_integral() -> None:
    section, _ = override_section({"num_hospitals": 3}, {}, "base", {"num_hospitals": 5.0})
    assert section["num_hospitals"] == 5 and isinstance(section["num_hospitals"], int)


def test_log_scalars_flattens_numbers_only() -> None:
    metrics = Metrics(name="m", uri="unused")
    n = log_scalars(
        metrics,
        {
            "val": {"auroc": 0.8, "n": 30},
            "device": "cpu",
            "ok": True,
            "rows": [1, 2],
            "x": float("nan"),
        },
    )
    assert n == 2
    assert metrics.metadata == {"val.auroc": 0.8, "val.n": 30.0}


def test_sweep_table_and_plot(tmp_path: Path) -> None:
    points = []
    for i, (variable, value, dp) in enumerate(
        [("epsilon", 0.5, 0.6), ("epsilon", 8.0, 0.8), ("hospitals", 3, 0.7)]
    ):
        path = tmp_path / f"p{i}.json"
        path.write_text(
            json.dumps(
                {
                    "variable": variable,
                    "value": value,
                    "primary_metric": "macro_auroc",
                    "centralized": 0.9,
                    "local_mean": 0.7,
                    "federated": 0.85,
                    "federated_dp": dp,
                    "epsilon_spent": value,
                }
            )
        )
        points.append(str(path))
    rows = collect_sweep_points(points, tmp_path / "r.json", tmp_path / "t.md", tmp_path / "p.html")
    assert [r["value"] for r in rows if r["variable"] == "epsilon"] == [8.0, 0.5]
    table = (tmp_path / "t.md").read_text()
    assert "## epsilon sweep" in table and "## hospitals sweep" in table
    assert "| 0.500 | 0.900 | 0.700 | 0.850 | 0.600 | 0.500 |" in table
    assert (tmp_path / "p.html").read_text().count("data:image/png;base64,") == 2


def test_plots_page_inlines_pngs(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"\x89PNG fake")
    plots_html(tmp_path, tmp_path / "page.html")
    assert "data:image/png;base64,iVBORyBmYWtl" in (tmp_path / "page.html").read_text()


def test_confusion_matrix_reaches_classification_metrics(tmp_path: Path) -> None:
    import numpy as np
    from kfp.dsl import ClassificationMetrics

    from privfed.kubeflow.adapter import log_confusion
    from privfed.metrics import confusion_counts

    # Prepare: 2 Low (1 right), 1 Medium (right), 2 High (1 called Medium, 1 right)
    entry = confusion_counts(
        np.array([0, 0, 1, 2, 2]), np.array([0, 2, 1, 1, 2]), ["Low", "Medium", "High"]
    )
    assert entry["matrix"] == [[1, 0, 1], [0, 1, 0], [0, 1, 1]]
    (tmp_path / "confusion.json").write_text(json.dumps({"federated": entry}))
    artifact = ClassificationMetrics(name="c", uri="unused")
    # Execute
    assert log_confusion(artifact, tmp_path, "federated") is True
    # Assert
    matrix = artifact.metadata["confusionMatrix"]
    assert [c["displayName"] for c in matrix["annotationSpecs"]] == ["Low", "Medium", "High"]
    assert [r["row"] for r in matrix["rows"]] == entry["matrix"]
    assert log_confusion(artifact, tmp_path, "federated_dp") is False  # no such model
