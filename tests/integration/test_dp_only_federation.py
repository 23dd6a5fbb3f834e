"""With ``privacy.non_dp_run: false`` the server never receives an un-noised update.

The attack this defends against: an honest-but-curious server reading the plain federation's
updates of the very patients the DP model protects. Real SuperLink and SuperNode processes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from privfed.config import config_from_dict
from privfed.federated import ROUNDS_FILE
from privfed.io import read_json
from privfed.stages import train_federated
from tests.conftest import raw_params

pytestmark = pytest.mark.integration


def test_with_the_non_dp_run_off_every_update_the_server_received_was_dp_sgd(
    partitions: Path, tmp_path: Path
) -> None:
    # Prepare
    cfg = config_from_dict(raw_params(privacy={"non_dp_run": False}))

    # Execute
    train_federated.run(
        cfg,
        {"partitions": partitions},
        {"models": tmp_path / "fed", "metrics": tmp_path / "m.json"},
    )

    # Assert: one run, DP, and every hospital's accountant counted every round's private steps
    runs = read_json(tmp_path / "fed" / ROUNDS_FILE)
    assert list(runs) == ["federated_dp"] and runs["federated_dp"]["dp"] is True
    histories = runs["federated_dp"]["dp_history"]
    assert sorted(histories) == ["hospital_1", "hospital_2", "hospital_3"]
    for hospital, history in histories.items():
        assert history and all(sigma > 0 for sigma, _, _ in history), hospital
    assert not (tmp_path / "fed" / "federated").exists()
