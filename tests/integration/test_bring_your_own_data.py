"""A user's own CSV with a site column, end to end: schema infer → `dvc repro` → champion.

Every Python process of the run (stages, SuperLink, ServerApp, SuperNodes, ClientApp
executors) carries an audit hook (tests/integration/audit/sitecustomize.py) that logs each
file it opens under the data folders, so the test can say which process read which hospital.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.integration.conftest import project_env, run, set_params

pytestmark = pytest.mark.integration

AUDIT = Path(__file__).parent / "audit"
SERVER_SIDE = ("flower-superlink", "flwr-serverapp", "serverapp")


def _audit(log: Path) -> dict[tuple[int, str], list[Path]]:
    """(pid, argv) -> the audited paths that process opened or listed."""
    seen: dict[tuple[int, str], list[Path]] = defaultdict(list)
    for line in log.read_text().splitlines():
        pid, argv, path = line.split("\t")
        seen[(int(pid), argv)].append(Path(path))
    return seen


def _hospital(path: Path) -> str | None:
    """The hospital folder a path under ``data/partitions`` belongs to (None: not one)."""
    parts = path.parts
    if "partitions" not in parts or len(parts) <= parts.index("partitions") + 1:
        return None
    return parts[parts.index("partitions") + 1]


def test_own_csv_with_site_column_end_to_end(project: Path, mlflow_server: str) -> None:
    # Prepare: the user's export and the schema drafted from it
    env = project_env(MLFLOW_TRACKING_URI=mlflow_server)
    user = project.parent / "consortium"
    csv = user / "breast_cancer.csv"
    made = run(["privfed", "example", "breast-cancer", "--out", str(csv)], project, env)
    assert made.returncode == 0, made.stderr
    drafted = run(
        ["privfed", "schema", "infer", "--data", str(csv), "--target", "diagnosis",
         "--out", str(user / "schema.yaml")],
        project, env,
    )  # fmt: skip
    assert drafted.returncode == 0, drafted.stderr
    set_params(
        project,
        {
            "base.task": "tabular",
            "base.data_source": "directory",
            "ingest_data.path": str(csv),
            "ingest_data.schema": str(user / "schema.yaml"),
            "train_federated.strategy": "fedadam",
            "register_model.model_name": "privfed-breast-cancer",
            "profiles.tiny.register_model.min_ratio_to_central": 0.5,
        },
    )
    audit_log = project.parent / "audit.log"
    env |= {
        "PYTHONPATH": f"{AUDIT}",
        "PRIVFED_AUDIT_ROOTS": f"{project / 'data'}:{user}:{project / 'models'}",
        "PRIVFED_AUDIT_LOG": str(audit_log),
    }

    # Execute
    result = run(["dvc", "repro"], project, env)

    # Assert: the pipeline ran on the user's three sites and registered a champion
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    manifest = json.loads((project / "data/raw/manifest.json").read_text())
    assert manifest["hospitals"] == ["site_a", "site_b", "site_c"]
    assert manifest["data_source"] == "directory"
    evaluation = json.loads((project / "metrics/evaluation.json").read_text())
    assert evaluation["summary"]["primary_metric"] == "macro_auroc"
    assert evaluation["summary"]["federated"] > 0.9  # breast cancer is an easy table
    assert {"balanced_accuracy", "macro_f1", "accuracy"} <= set(
        evaluation["models"]["federated"]["pooled"]
    )
    registration = json.loads((project / "reports/registration/registration.json").read_text())
    assert registration["alias"] == "champion", registration["reasons"]

    # Federated standardization statistics equal the pooled training data's
    train = pd.concat(
        pd.read_parquet(project / f"data/partitions/{s}/train/table.parquet")
        for s in manifest["hospitals"]
    )
    features = [c for c in train.columns if c not in ("unit_id", "hospital", "diagnosis")]
    state = torch.load(project / "models/federated/federated/model.pt", weights_only=True)[
        "state_dict"
    ]
    np.testing.assert_allclose(state["mean"].numpy(), train[features].mean().to_numpy(), rtol=1e-5)
    np.testing.assert_allclose(
        state["std"].numpy(), train[features].std(ddof=0).to_numpy(), rtol=1e-4
    )
    rounds = json.loads((project / "models/federated/rounds.json").read_text())
    assert rounds["federated"]["statistics_from"] == ["site_a", "site_b", "site_c"]

    # No raw row crosses a SuperNode boundary: the server side opened no data file, and every
    # Flower process that read a hospital's partition read that hospital's only.
    seen = _audit(audit_log)
    server = {k: v for k, v in seen.items() if any(s in k[1] for s in SERVER_SIDE)}
    # the hook is active in the ServerApp: it saw the model files the server wrote
    assert any("model.pt" in p.name for v in server.values() for p in v), seen.keys()
    data_roots = (project / "data", user)
    server_reads = [p for v in server.values() for p in v if p.is_relative_to(data_roots[0])
                    or p.is_relative_to(data_roots[1])]  # fmt: skip
    assert server_reads == []
    clients = {k: v for k, v in seen.items() if "privfed.federated" in k[1] or "executor" in k[1]}
    readers_per_site: dict[str, int] = defaultdict(int)
    for (pid, argv), paths in clients.items():
        sites = {_hospital(p) for p in paths} - {None}
        assert len(sites) <= 1, (pid, argv, sites)
        for site in sites:
            readers_per_site[site] += 1
    assert set(readers_per_site) == {"site_a", "site_b", "site_c"}
