"""A task defined outside ``privfed`` (tests/plugins/toy) runs every stage through `dvc repro`.

The project's params.yaml names the plug-in module in ``base.plugins``; nothing in
``src/privfed`` mentions it. Every process that validates the config (each DVC stage, the
Flower SuperLink's ServerApp, each hospital's ClientApp) imports it from there.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.integration.conftest import project_env, run, set_params

pytestmark = pytest.mark.integration


def test_a_task_registered_from_outside_runs_end_to_end_through_dvc(project: Path) -> None:
    # Prepare
    set_params(
        project,
        {
            "base.task": "toy",
            "base.plugins": ["tests.plugins.toy"],
            "register_model.model_name": "privfed-toy",
            "generate_data.toy": {"separation": 4.0},
        },
    )
    env = project_env(PYTHONPATH=str(ROOT))  # where `tests.plugins.toy` is importable

    # Execute
    result = run(["dvc", "repro"], project, env, timeout=1200)

    # Assert
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    evaluation = json.loads((project / "metrics/evaluation.json").read_text())
    models = evaluation["models"]
    assert {"centralized", "federated", "federated_dp"} <= set(models)
    # the blobs are 4 standard deviations apart: chance is 0.5, the Bayes rate about 0.98
    for name in ("centralized", "federated", "federated_dp"):
        assert models[name]["pooled"]["accuracy"] > 0.75, (name, models[name]["pooled"])
    privacy = json.loads((project / "metrics/privacy.json").read_text())
    assert 0 < privacy["epsilon"] <= 8.0
    card = (project / "reports/registration/model_card.md").read_text()
    assert "toy" in card
