"""evaluate_models on real tiny partitions: the validation split the promotion gate reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from privfed.checkpoints import MODEL_FILE, save_model
from privfed.config import config_from_dict
from privfed.partitions import hospital_dirs, split_dirs
from privfed.stages import evaluate_models, partition_data, validate_data
from privfed.tasks import get_task
from tests.conftest import raw_params


def test_global_models_are_scored_on_the_pooled_val_split(tiny_raw: Path, tmp_path: Path) -> None:
    # Prepare: partitions of the tiny data, and untrained models of different seeds
    cfg = config_from_dict(
        raw_params(model={"init": "scratch"}, evaluate_models={"membership_audit": False})
    )
    task = get_task(cfg.base.task, cfg)
    validate_data.run(cfg, {"raw": tiny_raw}, {"report": tmp_path / "v"})
    partitions = tmp_path / "p"
    partition_data.run(
        cfg,
        {"raw": tiny_raw, "validation": tmp_path / "v"},
        {"partitions": partitions, "stats": tmp_path / "stats.json"},
    )
    hospitals = hospital_dirs(partitions)
    paths = {
        "centralized": tmp_path / "centralized" / MODEL_FILE,
        "federated": tmp_path / "federated" / "federated" / MODEL_FILE,
        "federated_dp": tmp_path / "federated" / "federated_dp" / MODEL_FILE,
        **{f"local:{h.name}": tmp_path / "local" / h.name / MODEL_FILE for h in hospitals},
    }
    for seed, path in enumerate(paths.values()):
        torch.manual_seed(seed)
        save_model(path, task.build_model().state_dict(), task=task.name)
    (tmp_path / "privacy.json").write_text(json.dumps({"epsilon": 1.0}))
    inputs = {
        "partitions": partitions,
        "centralized": tmp_path / "centralized",
        "local": tmp_path / "local",
        "federated": tmp_path / "federated",
        "privacy": tmp_path / "privacy.json",
    }
    outputs = {
        "metrics": tmp_path / "evaluation.json",
        "report": tmp_path / "report",
        "plots": tmp_path / "plots",
    }
    # Execute
    evaluate_models.run(cfg, inputs, outputs)
    # Assert: the val scores are each model's own on the pooled val split, test keys unchanged
    from privfed.checkpoints import load_model

    metric = task.primary_metric
    val = task.load_dataset(split_dirs(hospitals, "val"))
    test = task.load_dataset(split_dirs(hospitals, "test"))
    written = json.loads(outputs["metrics"].read_text())
    summary, models = written["summary"], written["models"]
    assert sorted(summary["val"]) == ["centralized", "federated", "federated_dp"]
    for name in ("centralized", "federated", "federated_dp"):
        model = load_model(paths[name], cfg)
        assert summary["val"][name] == pytest.approx(task.evaluate(model, val)[metric])
        assert summary[name] == pytest.approx(task.evaluate(model, test)[metric])
        assert models[name]["val"][metric] == summary["val"][name]
    assert summary["val"]["federated_dp"] != summary["federated_dp"]  # another split indeed
    assert not any("val" in m for n, m in models.items() if n.startswith("local:"))
    report = (outputs["report"] / "comparison.md").read_text()
    assert f"| federated_dp | {summary['val']['federated_dp']:.3f} |" in report
