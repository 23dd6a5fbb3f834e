"""Components called as plain Python on temporary artifacts (as kubeflow/pipelines-components
tests do), and the adapter's glue: sweep overrides, metrics flattening, report pages."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from kfp.dsl import HTML, Artifact, Dataset, Metrics

from privfed.config import config_from_dict
from privfed.kubeflow.adapter import (
    collect_sweep_points,
    log_scalars,
    override_section,
    plots_html,
)
from tests.conftest import ROOT, raw_params

sys.path.insert(0, str(ROOT))

from components.generate_data.component import generate_data  # noqa: E402
from components.ingest_data.component import ingest_data  # noqa: E402
from components.validate_data.component import validate_data  # noqa: E402


def _art(cls, tmp_path: Path, name: str):
    return cls(name=name, uri=str(tmp_path / name))


def _generate_and_ingest(p: dict, tmp_path: Path, raw: Dataset) -> None:
    generated = _art(Dataset, tmp_path, "generated")
    generate_data.python_func(
        base=p["base"],
        generate_data=p["generate_data"],
        profiles=p["profiles"],
        generated=generated,
    )
    ingest_data.python_func(
        base=p["base"],
        ingest_data=p["ingest_data"],
        profiles=p["profiles"],
        generated=generated,
        raw=raw,
    )


def test_data_components_produce_a_validated_dataset(tmp_path: Path) -> None:
    # Prepare
    p = raw_params()
    raw = _art(Dataset, tmp_path, "raw")
    validated, validation = _art(Dataset, tmp_path, "validated"), _art(Artifact, tmp_path, "v")
    page = _art(HTML, tmp_path, "validation.html")
    # Execute
    _generate_and_ingest(p, tmp_path, raw)
    validate_data.python_func(
        base=p["base"],
        generate_data=p["generate_data"],
        ingest_data=p["ingest_data"],
        validate_data=p["validate_data"],
        profiles=p["profiles"],
        raw=raw,
        validated=validated,
        validation=validation,
        validation_report=page,
    )
    # Assert
    assert json.loads((Path(validation.path) / "report.json").read_text())["success"] is True
    assert sorted(f.name for f in Path(validated.path).iterdir()) == sorted(
        f.name for f in Path(raw.path).iterdir()
    )
    assert "validation passed" in Path(page.path).read_text()


def test_invalid_data_stops_before_a_validated_dataset_exists(tmp_path: Path) -> None:
    p = raw_params(validate_data={"min_patients_per_hospital": 10_000})
    p["profiles"]["tiny"]["validate_data"] = {}  # let the section's value stand
    raw = _art(Dataset, tmp_path, "raw")
    validated = _art(Dataset, tmp_path, "validated")
    _generate_and_ingest(p, tmp_path, raw)
    with pytest.raises(RuntimeError, match="expectation"):
        validate_data.python_func(
            base=p["base"],
            generate_data=p["generate_data"],
            ingest_data=p["ingest_data"],
            validate_data=p["validate_data"],
            profiles=p["profiles"],
            raw=raw,
            validated=validated,
            validation=_art(Artifact, tmp_path, "v"),
            validation_report=_art(HTML, tmp_path, "v.html"),
        )
    assert not Path(validated.path).exists()


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
