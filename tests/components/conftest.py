"""Component tests log to a scratch MLflow store, never to the checkout's ``mlflow.db``.

A component runs its stage inside the pipeline's MLflow run (docs/tracking.md); a config that
did not pass through check-params keeps ``register_model.live`` on and would log into the
store of the working directory, the developer's own.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def scratch_mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    uri = f"sqlite:///{tmp_path / 'scratch-mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri
