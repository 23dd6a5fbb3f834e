"""Update screening: each kind of malformed or outsized update is rejected, with its reason."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict

from privfed.config import config_from_dict
from privfed.federated.adversary import corrupt
from privfed.federated.recorded import RecordedStrategy
from privfed.federated.recorder import RoundRecorder
from privfed.federated.screening import screen_updates, update_norm
from privfed.federated.strategies import make_strategy
from tests.conftest import raw_params

GLOBAL = {"w": np.array([1.0, 2.0], dtype=np.float32), "mean": np.array([5.0], dtype=np.float32)}


def _honest(step: float) -> dict[str, np.ndarray]:
    return {"w": GLOBAL["w"] + np.float32(step), "mean": GLOBAL["mean"].copy()}


def _screen(updates, num_examples=None, *, norm_factor=10.0):
    n = num_examples or [10] * len(updates)
    return screen_updates(updates, n, GLOBAL, norm_factor=norm_factor, fixed={"mean"})


def test_honest_updates_pass() -> None:
    result = _screen([_honest(0.1), _honest(-0.2), _honest(0.15)])
    assert result.accepted == [0, 1, 2] and result.rejected == {}


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"w": np.array([np.nan, 2.0], dtype=np.float32), "mean": GLOBAL["mean"]}, "NaN/Inf"),
        ({"w": np.array([np.inf, 2.0], dtype=np.float32), "mean": GLOBAL["mean"]}, "NaN/Inf"),
        ({"w": np.zeros(3, dtype=np.float32), "mean": GLOBAL["mean"]}, "shape (3,)"),
        ({"w": np.zeros(2, dtype=np.float64), "mean": GLOBAL["mean"]}, "dtype float64"),
        ({"w": GLOBAL["w"]}, "missing ['mean']"),
        ({**GLOBAL, "extra": np.zeros(1, dtype=np.float32)}, "unexpected ['extra']"),
        ({"w": GLOBAL["w"], "mean": np.array([6.0], dtype=np.float32)}, "'mean'"),
    ],
    ids=["nan", "inf", "shape", "dtype", "missing", "extra", "fixed-buffer"],
)
def test_malformed_update_is_rejected_with_its_reason(bad, reason) -> None:
    result = _screen([_honest(0.1), bad, _honest(0.2)])
    assert result.accepted == [0, 2]
    assert reason in result.rejected[1]


def test_bad_example_count_is_rejected() -> None:
    result = _screen([_honest(0.1), _honest(0.2)], [10, 0])
    assert result.accepted == [0] and "num-examples is 0" in result.rejected[1]


def test_norm_outlier_is_judged_against_the_others_only() -> None:
    # Prepare: with two hospitals, the bar for each is set by the other one alone
    updates = [_honest(0.1), _honest(5.0)]
    # Execute
    result = _screen(updates)
    # Assert: 5.0*sqrt(2) > 10 x 0.1*sqrt(2): the big one goes, the small one stays
    assert result.accepted == [0]
    assert "more than 10 x the median" in result.rejected[1]
    assert update_norm(updates[1], GLOBAL) == pytest.approx(5.0 * np.sqrt(2), rel=1e-6)
    # and an update just inside the bound passes
    assert _screen([_honest(0.1), _honest(0.99)]).accepted == [0, 1]


@pytest.mark.parametrize("mode", ["scale", "sign_flip", "random", "nan"])
def test_every_attack_mode_is_caught_by_screening(mode: str) -> None:
    # Prepare: four honest hospitals with slightly different steps, one attacker
    honest = [_honest(s) for s in (0.1, 0.12, 0.08, 0.11)]
    attacked = corrupt(_honest(0.1), GLOBAL, mode, seed=3)
    # Execute
    result = _screen([*honest, attacked])
    # Assert
    assert result.accepted == [0, 1, 2, 3]
    assert 4 in result.rejected


def test_attack_modes_compute_what_they_claim() -> None:
    trained = _honest(0.1)
    np.testing.assert_allclose(
        corrupt(trained, GLOBAL, "scale", seed=0)["w"], GLOBAL["w"] + 100 * 0.1, rtol=1e-5
    )
    np.testing.assert_allclose(
        corrupt(trained, GLOBAL, "sign_flip", seed=0)["w"], GLOBAL["w"] - 100 * 0.1, rtol=1e-5
    )
    noisy = corrupt(trained, GLOBAL, "random", seed=0)
    assert np.array_equal(noisy["mean"], GLOBAL["mean"])  # buffers untouched
    assert not np.allclose(noisy["w"], trained["w"])
    with pytest.raises(ValueError, match="attack='poison'"):
        corrupt(trained, GLOBAL, "poison", seed=0)


def _reply(node: int, hospital: str, arrays: dict[str, np.ndarray]) -> Message:
    request = Message(content=RecordDict({}), dst_node_id=node, message_type=MessageType.TRAIN)
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: torch.from_numpy(v) for k, v in arrays.items()}),
            "metrics": MetricRecord({"num-examples": 10, "train_loss": 0.5}),
            "ident": ConfigRecord({"hospital": hospital}),
        }
    )
    return Message(content=content, reply_to=request)


@pytest.fixture(autouse=True)
def _serverapp_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages read the process's task identity, which Flower sets inside a ServerApp."""
    from flwr.supercore.task_identity import TaskIdentity

    for attr, value in {"_run_id": 1, "_node_id": 0, "_task_id": 1}.items():
        monkeypatch.setattr(TaskIdentity, attr, value, raising=False)


def test_rejected_update_is_logged_with_hospital_and_left_out(tmp_path, caplog) -> None:
    # Prepare: the server's recorder in front of FedAvg, the round-0 model known
    cfg = config_from_dict(raw_params())
    recorder = RoundRecorder(
        out_dir=tmp_path,
        task_name="readmission",
        primary_metric="macro_auroc",
        num_rounds=1,
        min_replies=3,
        screen_norm_factor=10.0,
        fixed=frozenset({"mean"}),
    )
    recorder.on_round_end(0, ArrayRecord({k: torch.from_numpy(v) for k, v in GLOBAL.items()}))
    strategy = RecordedStrategy(make_strategy(cfg, num_nodes=3), recorder)
    replies = [
        _reply(1, "hospital_1", _honest(0.1)),
        _reply(2, "hospital_2", _honest(0.3)),
        _reply(3, "hospital_3", corrupt(_honest(0.2), GLOBAL, "nan", seed=0)),
    ]
    # Execute
    with caplog.at_level(logging.WARNING, logger="privfed.federated.recorder"):
        arrays, _ = strategy.aggregate_train(1, replies)
        recorder.on_round_end(1, arrays)
    # Assert: the average of the two honest updates only; the reason is logged and recorded
    np.testing.assert_allclose(arrays["w"].numpy(), GLOBAL["w"] + 0.2, rtol=1e-6)
    assert "hospital_3" in recorder.rounds[1]["rejected"]
    assert "NaN/Inf" in recorder.rounds[1]["rejected"]["hospital_3"]
    assert any("hospital_3" in r.getMessage() and "NaN" in r.getMessage() for r in caplog.records)
    # the attacker still counts as having replied (it is not a dropout), and keeps its row
    assert set(recorder.rounds[1]["train"]) == {"hospital_1", "hospital_2", "hospital_3"}


def test_robust_strategy_refuses_too_few_hospitals() -> None:
    cfg = config_from_dict(raw_params(train_federated={"strategy": "bulyan", "num_malicious": 1}))
    with pytest.raises(ValueError, match="bulyan with num_malicious=1 needs at least 7"):
        make_strategy(cfg, num_nodes=5)
    krum = config_from_dict(raw_params(train_federated={"strategy": "krum", "num_malicious": 1}))
    assert type(make_strategy(krum, num_nodes=5)).__name__ == "Krum"
