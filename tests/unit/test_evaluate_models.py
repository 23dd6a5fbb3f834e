"""evaluate_models on real tiny partitions: the validation split the promotion gate reads."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from privfed.checkpoints import MODEL_FILE, save_model
from privfed.config import config_from_dict
from privfed.partitions import hospital_dirs, split_dirs
from privfed.stages import evaluate_models
from privfed.tasks import get_task
from tests.conftest import partition, raw_params


def test_global_models_are_scored_on_the_pooled_val_split(tiny_raw: Path, tmp_path: Path) -> None:
    # Prepare: partitions of the tiny data, and untrained models of different seeds
    cfg = config_from_dict(
        raw_params(model={"init": "scratch"}, evaluate_models={"membership_audit": False})
    )
    task = get_task(cfg.base.task, cfg)
    partitions = partition(cfg, tiny_raw, tmp_path)
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
    json_results = json.loads((outputs["report"] / "comparison.json").read_text())
    assert f"| federated_dp | {summary['val']['federated_dp']:.3f} |" in report
    # every model on every hospital's test split, as a table
    local = f"local:{hospitals[0].name}"
    accuracies = [json_results[local]["per_hospital"][h.name]["accuracy"] for h in hospitals]
    assert "## Per hospital" in report
    assert f"| {local} | " + " | ".join(f"{a:.3f}" for a in accuracies) + " |" in report


def _scores(auroc: float, accuracy: float, n: int) -> dict[str, float]:
    return {"macro_auroc": auroc, "accuracy": accuracy, "n": n}


def test_mean_per_hospital_says_which_hospital_it_leaves_out() -> None:
    # Prepare: hospital_3's test split holds one class, so its AUROC is undefined (NaN)
    per = {
        "hospital_1": _scores(0.9, 0.8, 40),
        "hospital_2": _scores(0.8, 0.7, 30),
        "hospital_3": _scores(math.nan, 0.95, 20),
    }
    results = {
        "federated": {
            "pooled": {"macro_auroc": 0.85, "accuracy": 0.8},
            "per_hospital": per,
            "epsilon": math.inf,
        }
    }
    # Execute
    cell = evaluate_models.mean_per_hospital_cell(per, "macro_auroc")
    table = evaluate_models.comparison_table(results, ["macro_auroc", "accuracy"])
    tables = evaluate_models.per_hospital_tables(results, list(per), "macro_auroc")
    # Assert: (0.9 + 0.8) / 2, and the hospital left out, named with the reason
    assert cell == (
        "0.850 (2 of 3 hospitals; hospital_3: macro_auroc undefined, one class in its test split)"
    )
    assert evaluate_models.mean_per_hospital_cell(per, "accuracy") == "0.817"
    assert f"| federated | 0.850 | 0.800 | {cell} | ∞ |" in table
    assert "| model | hospital_1 (n=40) | hospital_2 (n=30) | hospital_3 (n=20) |" in tables
    assert "### macro_auroc" in tables and "| federated | 0.900 | 0.800 | n/a |" in tables
    assert "### accuracy" in tables and "| federated | 0.800 | 0.700 | 0.950 |" in tables
