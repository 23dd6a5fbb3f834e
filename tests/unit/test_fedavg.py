"""The strategy we build aggregates exactly as a hand-computed weighted average."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict

from privfed.config import config_from_dict
from privfed.federated.recorded import RecordedStrategy
from privfed.federated.recorder import RoundRecorder
from privfed.federated.strategies import make_strategy
from tests.conftest import raw_params


def _recorder(tmp_path, *, num_rounds: int, min_replies: int) -> RoundRecorder:
    return RoundRecorder(
        out_dir=tmp_path,
        task_name="readmission",
        primary_metric="macro_auroc",
        num_rounds=num_rounds,
        min_replies=min_replies,
    )


def _reply(node: int, hospital: str, weights: list[np.ndarray], n: int, loss: float) -> Message:
    request = Message(content=RecordDict({}), dst_node_id=node, message_type=MessageType.TRAIN)
    content = RecordDict(
        {
            "arrays": ArrayRecord(weights),
            "metrics": MetricRecord(
                {"num-examples": n, "train_loss": loss, "val_macro_auroc": 0.5}
            ),
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


def test_fedavg_equals_hand_computed_weighted_average(tmp_path) -> None:
    # Prepare
    cfg = config_from_dict(raw_params())
    recorder = _recorder(tmp_path, num_rounds=1, min_replies=3)
    strategy = RecordedStrategy(make_strategy(cfg, num_nodes=3), recorder)
    replies = [
        _reply(1, "hospital_1", [np.array([1.0, 2.0]), np.array([[0.0]])], n=10, loss=1.0),
        _reply(2, "hospital_2", [np.array([3.0, 6.0]), np.array([[3.0]])], n=30, loss=0.5),
        _reply(3, "hospital_3", [np.array([5.0, 4.0]), np.array([[6.0]])], n=60, loss=0.2),
    ]
    # Execute
    arrays, metrics = strategy.aggregate_train(1, replies)
    # Assert: (10*[1,2] + 30*[3,6] + 60*[5,4]) / 100 = [4.0, 4.4]; (30*3 + 60*6)/100 = 4.5
    first, second = arrays.to_numpy_ndarrays()
    np.testing.assert_allclose(first, [4.0, 4.4])
    np.testing.assert_allclose(second, [[4.5]])
    assert abs(metrics["train_loss"] - (10 * 1.0 + 30 * 0.5 + 60 * 0.2) / 100) < 1e-12
    # and the recorder kept each hospital's own row
    assert [h for h, _ in recorder._pending] == ["hospital_1", "hospital_2", "hospital_3"]


def test_fedprox_is_selected_with_mu_from_params(tmp_path) -> None:
    cfg = config_from_dict(raw_params(train_federated={"strategy": "fedprox", "proximal_mu": 0.3}))
    strategy = make_strategy(cfg, num_nodes=3)
    assert type(strategy).__name__ == "FedProx"
    assert strategy.proximal_mu == 0.3


def test_round_end_checkpoints_and_fails_on_missing_updates(tmp_path) -> None:
    recorder = _recorder(tmp_path, num_rounds=2, min_replies=2)
    recorder.on_round_end(0, ArrayRecord([np.zeros(2)]))
    with pytest.raises(RuntimeError, match="only 0 hospital update"):
        recorder.on_round_end(1, ArrayRecord([np.zeros(2)]))


def test_aggregate_does_not_depend_on_reply_arrival_order(tmp_path) -> None:
    """Replies are averaged in hospital order, so two runs agree bit for bit.

    Float addition is not associative: averaging the same updates in the order they happened
    to arrive made two identical runs drift apart after a few rounds.
    """
    cfg = config_from_dict(raw_params())
    rng = np.random.default_rng(0)
    updates = {
        f"hospital_{i}": [rng.normal(size=512).astype(np.float32) for _ in range(2)]
        for i in (1, 2, 3)
    }
    sizes = {"hospital_1": 17, "hospital_2": 31, "hospital_3": 53}

    def aggregate(order: list[str]) -> list[np.ndarray]:
        recorder = _recorder(tmp_path, num_rounds=1, min_replies=3)
        strategy = RecordedStrategy(make_strategy(cfg, num_nodes=3), recorder)
        replies = [_reply(int(h[-1]), h, updates[h], n=sizes[h], loss=1.0) for h in order]
        arrays, _ = strategy.aggregate_train(1, replies)
        return arrays.to_numpy_ndarrays()

    first = aggregate(["hospital_1", "hospital_2", "hospital_3"])
    for order in (
        ["hospital_3", "hospital_1", "hospital_2"],
        ["hospital_2", "hospital_3", "hospital_1"],
    ):
        for a, b in zip(first, aggregate(order), strict=True):
            assert np.array_equal(a, b), order


def test_server_momentum_steps_by_hand() -> None:
    # Prepare: FedAvgM with momentum 0.5 from w = 1
    cfg = config_from_dict(
        raw_params(train_federated={"strategy": "fedavgm", "server_momentum": 0.5})
    )
    strategy = make_strategy(cfg, num_nodes=3)
    strategy.current_arrays = ArrayRecord([np.array([1.0], dtype=np.float32)])

    def round_of(mean: float) -> list[Message]:
        return [_reply(n, f"hospital_{n}", [np.array([mean], np.float32)], 10, 0.1) for n in (1, 2)]

    # Execute: the hospitals' mean model is 0.8, then 0.6 (from the server's 0.8)
    first, _ = strategy.aggregate_train(1, round_of(0.8))
    second, _ = strategy.aggregate_train(2, round_of(0.6))
    # Assert: d1 = 0.2 -> w = 0.8; d2 = 0.2 + 0.5 x 0.2 = 0.3 -> w = 0.5 (FedAvg: 0.6)
    assert first.to_numpy_ndarrays()[0][0] == pytest.approx(0.8)
    assert second.to_numpy_ndarrays()[0][0] == pytest.approx(0.5)
