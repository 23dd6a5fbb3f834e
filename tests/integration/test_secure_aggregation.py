"""SecAgg+ in a real federation: the same model as plain FedAvg, and the server saw only sums."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from privfed.config import config_from_dict
from privfed.federated.launcher import LocalFederation, RunSpec
from privfed.federated.secagg import STAGES
from tests.conftest import raw_params

pytestmark = pytest.mark.integration


def _weights(path: Path) -> dict[str, np.ndarray]:
    state = torch.load(path, weights_only=False)["state_dict"]
    return {k: v.numpy().astype(np.float64) for k, v in state.items()}


def _max_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


def test_secure_aggregation_reaches_the_plain_fedavg_model(
    partitions: Path, tmp_path: Path
) -> None:
    # Prepare: one federation (TLS, enrolled SuperNodes, 3 hospitals), two runs from the same
    # seed and data, without DP (DP-SGD noise comes from OS entropy, so DP runs differ anyway)
    raw = raw_params(
        train_federated={"rounds": 2, "startup_timeout_s": 60, "screen_updates": False},
        privacy={"enabled": False},
        register_model={"candidate": "federated"},
    )
    plain_cfg = config_from_dict(raw)
    raw["train_federated"]["secure_aggregation"] = {"enabled": True}
    secure_cfg = config_from_dict(raw)
    hospitals = sorted(p for p in partitions.iterdir() if p.is_dir())
    # Execute
    with LocalFederation(plain_cfg, hospitals, tmp_path / "fed") as federation:
        plain = federation.run(RunSpec(name="plain", out_dir=tmp_path / "plain", dp=False))
        federation.cfg = secure_cfg
        secure = federation.run(RunSpec(name="secure", out_dir=tmp_path / "secure", dp=False))
    # Assert: both runs completed every round and recorded it the same way
    assert plain["secure_aggregation"] is False and secure["secure_aggregation"] is True
    assert secure["update_screening"] is False
    rounds = secure_cfg.train_federated.rounds
    assert plain["rounds_completed"] == secure["rounds_completed"] == rounds
    names = {h.name for h in hospitals}
    for r in range(1, rounds + 1):
        row = secure["rounds"][r]
        assert set(row["train"]) == names
        assert all(v["secagg_clipped"] == 0 for v in row["train"].values())
        # the server ran all four SecAgg+ stages and no reply carried an array in the clear
        audit = row["secagg"]
        assert set(audit["stages"]) == set(STAGES)
        assert all(s["replies"] == len(names) for s in audit["stages"].values())
        assert audit["plaintext_arrays"] == 0
        assert audit["hospitals_summed"] == len(names)
        assert "secagg" not in plain["rounds"][r]
    # round 1 starts from the same model: the aggregates differ by quantization only, within
    # the bound worked out from the quantization step and the round's example counts
    bound = secure["rounds"][1]["secagg"]["error_bound"]
    float32_slack = 1e-6  # the global model is float32: one rounding of values of order 1
    diff1 = _max_diff(
        _weights(tmp_path / "plain" / "checkpoints" / "round_001.pt"),
        _weights(tmp_path / "secure" / "checkpoints" / "round_001.pt"),
    )
    assert diff1 <= bound + float32_slack, (diff1, bound)
    # the final models: later rounds train from models that differ by that much, so the
    # difference may grow with training, but it stays small against the model's own change
    initial = _weights(tmp_path / "plain" / "checkpoints" / "round_001.pt")
    # (the last round's checkpoints: model.pt is the best-validation round, which the tiny
    # difference may tip to another round in one run than in the other)
    last = f"round_{rounds:03d}.pt"
    final_plain = _weights(tmp_path / "plain" / "checkpoints" / last)
    final_secure = _weights(tmp_path / "secure" / "checkpoints" / last)
    moved = _max_diff(initial, final_plain)
    diff = _max_diff(final_plain, final_secure)
    assert diff <= 0.05 * moved, (diff, moved)
    val_plain = plain["rounds"][rounds]["val"]
    val_secure = secure["rounds"][rounds]["val"]
    for metric, value in val_plain.items():
        assert val_secure[metric] == pytest.approx(value, abs=0.02), metric
