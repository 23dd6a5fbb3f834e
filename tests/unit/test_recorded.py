"""RecordedStrategy: records and screens around the strategy it holds, which aggregates."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg, Strategy

from privfed.config import config_from_dict
from privfed.federated.client import LOSS_PREFIX
from privfed.federated.recorded import RecordedStrategy
from privfed.federated.recorder import RoundRecorder
from privfed.federated.strategies import make_strategy
from tests.conftest import raw_params

GLOBAL = {"w": np.zeros(2, dtype=np.float32)}


@pytest.fixture(autouse=True)
def _serverapp_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages read the process's task identity, which Flower sets inside a ServerApp."""
    from flwr.supercore.task_identity import TaskIdentity

    for attr, value in {"_run_id": 1, "_node_id": 0, "_task_id": 1}.items():
        monkeypatch.setattr(TaskIdentity, attr, value, raising=False)


def _recorder(tmp_path, *, screen: float | None = 10.0, rounds: int = 1) -> RoundRecorder:
    return RoundRecorder(
        out_dir=tmp_path,
        task_name="readmission",
        primary_metric="macro_auroc",
        num_rounds=rounds,
        min_replies=2,
        screen_norm_factor=screen,
    )


def _reply(
    request: Message,
    hospital: str,
    w: list[float],
    n: int,
    loss: float,
    parts: dict[str, float] | None = None,
) -> Message:
    content = RecordDict(
        {
            "arrays": ArrayRecord({"w": torch.tensor(w, dtype=torch.float32)}),
            "metrics": MetricRecord(
                {
                    "num-examples": n,
                    "train_loss": loss,
                    "val_macro_auroc": 0.5,
                    **{f"{LOSS_PREFIX}{k}": v for k, v in (parts or {}).items()},
                }
            ),
            "ident": ConfigRecord({"hospital": hospital}),
        }
    )
    return Message(content=content, reply_to=request)


def _request(node: int) -> Message:
    return Message(content=RecordDict({}), dst_node_id=node, message_type=MessageType.TRAIN)


class _Spy(FedAvg):
    """Flower's FedAvg, noting the round and the hospitals it was handed."""

    def __init__(self) -> None:
        super().__init__(fraction_evaluate=0.0, min_train_nodes=2, min_available_nodes=2)
        self.handed: list[tuple[int, list[str]]] = []

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        self.handed.append((server_round, [str(r.content["ident"]["hospital"]) for r in replies]))
        return super().aggregate_train(server_round, replies)


def test_it_is_a_flower_strategy_holding_the_one_built_from_params(tmp_path) -> None:
    cfg = config_from_dict(raw_params(train_federated={"strategy": "fedprox"}))
    inner = make_strategy(cfg, num_nodes=3)
    wrapped = RecordedStrategy(inner, _recorder(tmp_path))
    assert isinstance(wrapped, Strategy) and wrapped.strategy is inner
    assert type(wrapped).aggregate_train is RecordedStrategy.aggregate_train  # nothing assigned
    assert "aggregate_train" not in vars(inner) and "configure_train" not in vars(inner)


def test_screened_update_is_recorded_and_only_the_others_reach_the_inner_strategy(
    tmp_path,
) -> None:
    # Prepare: round 0's model is [0, 0]; hospital_3 sends an update of norm 100·√2 ≈ 141.42
    inner = _Spy()
    recorder = _recorder(tmp_path)
    strategy = RecordedStrategy(inner, recorder)
    strategy.end_round(0, ArrayRecord({"w": torch.zeros(2)}))
    replies = [  # in arrival order, not hospital order
        _reply(_request(3), "hospital_3", [100.0, 100.0], n=60, loss=9.0),
        _reply(_request(2), "hospital_2", [0.0, 1.0], n=30, loss=0.5),
        _reply(_request(1), "hospital_1", [1.0, 0.0], n=10, loss=1.0),
    ]
    # Execute
    arrays, metrics = strategy.aggregate_train(1, replies)
    strategy.end_round(1, arrays)
    # Assert: hospital_3's norm 141.42 > 10 x median(1, 1) = 10: rejected. The others' norms
    # (1 each) are within 10 x median(1, 141.42) = 712.1. FedAvg of the two in hospital order:
    # (10·[1, 0] + 30·[0, 1]) / 40 = [0.25, 0.75]; loss (10·1.0 + 30·0.5) / 40 = 0.625
    assert inner.handed == [(1, ["hospital_1", "hospital_2"])]
    np.testing.assert_allclose(arrays["w"].numpy(), [0.25, 0.75])
    assert metrics["train_loss"] == pytest.approx(0.625)
    row = recorder.rounds[1]
    assert list(row["rejected"]) == ["hospital_3"]
    assert "update norm 141.4 is more than 10 x the median" in row["rejected"]["hospital_3"]
    # every hospital that replied keeps its row; the round's loss is over all three:
    # (10·1.0 + 30·0.5 + 60·9.0) / 100 = 5.65
    assert sorted(row["train"]) == ["hospital_1", "hospital_2", "hospital_3"]
    assert row["train_loss"] == pytest.approx(5.65)
    assert (tmp_path / "checkpoints" / "round_001.pt").is_file()


def test_without_screening_every_update_is_aggregated(tmp_path) -> None:
    # Prepare
    inner = _Spy()
    strategy = RecordedStrategy(inner, _recorder(tmp_path, screen=None))
    replies = [
        _reply(_request(2), "hospital_2", [0.0, 1.0], n=30, loss=0.5),
        _reply(_request(1), "hospital_1", [1.0, 0.0], n=10, loss=1.0),
    ]
    # Execute
    arrays, _ = strategy.aggregate_train(1, replies)
    # Assert: (10·[1, 0] + 30·[0, 1]) / 40
    np.testing.assert_allclose(arrays["w"].numpy(), [0.25, 0.75])
    assert inner.handed == [(1, ["hospital_1", "hospital_2"])]


def test_named_loss_parts_are_kept_per_hospital_and_example_weighted_per_round(tmp_path) -> None:
    # Prepare: a GAN's two losses travel as reply metrics
    recorder = _recorder(tmp_path, screen=None)
    strategy = RecordedStrategy(_Spy(), recorder)
    replies = [
        _reply(_request(1), "hospital_1", [1.0, 0.0], 10, 1.0, {"generator_loss": 2.0}),
        _reply(_request(2), "hospital_2", [0.0, 1.0], 30, 1.0, {"generator_loss": 4.0}),
    ]
    # Execute
    arrays, _ = strategy.aggregate_train(1, replies)
    recorder.on_round_end(1, arrays)
    # Assert: each hospital's value, and (10·2 + 30·4) / 40 for the round
    row = recorder.rounds[1]
    assert row["train"]["hospital_1"]["losses"] == {"generator_loss": 2.0}
    assert row["losses"] == {"generator_loss": 3.5}


class _Grid:
    """Two hospitals answering train messages with fixed weights (no transport)."""

    def __init__(self) -> None:
        self.answers = {1: ("hospital_1", [2.0, 0.0], 10), 2: ("hospital_2", [0.0, 4.0], 30)}

    def get_node_ids(self) -> list[int]:
        return list(self.answers)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float) -> list[Message]:
        replies = []
        for m in messages:
            hospital, w, n = self.answers[m.metadata.dst_node_id]
            replies.append(_reply(m, hospital, w, n=n, loss=1.0))
        return replies


def test_start_runs_flowers_loop_with_recording_and_checkpoints(tmp_path) -> None:
    # Prepare
    cfg = config_from_dict(raw_params(train_federated={"screen_updates": False}))
    recorder = _recorder(tmp_path, screen=None, rounds=2)
    strategy = RecordedStrategy(make_strategy(cfg, num_nodes=2), recorder)
    seen: list[int] = []

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        seen.append(server_round)
        return None

    # Execute
    result = strategy.start(
        grid=_Grid(),  # type: ignore[arg-type]
        initial_arrays=ArrayRecord({"w": torch.zeros(2)}),
        num_rounds=2,
        train_config=ConfigRecord({}),
        evaluate_fn=evaluate_fn,
    )
    # Assert: both rounds average (10·[2, 0] + 30·[0, 4]) / 40 = [0.5, 3.0]; each round's row
    # and checkpoint were written before the caller's evaluate_fn saw it
    np.testing.assert_allclose(result.arrays["w"].numpy(), [0.5, 3.0])
    assert seen == [0, 1, 2]
    assert [sorted(recorder.rounds[r]["train"]) for r in (1, 2)] == [
        ["hospital_1", "hospital_2"]
    ] * 2
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "round_001.pt",
        "round_002.pt",
    ]
