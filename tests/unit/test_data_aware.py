"""Data-aware aggregation: weights by size and trained validation loss, worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict

from privfed.config import ConfigError, config_from_dict
from privfed.federated.data_aware import (
    TRAINED_VAL_FLAG,
    TRAINED_VAL_LOSS,
    DataAwareFedAvg,
    data_aware_weights,
)
from privfed.federated.strategies import make_strategy
from tests.conftest import raw_params


@pytest.fixture(autouse=True)
def _serverapp_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages read the process's task identity, which Flower sets inside a ServerApp."""
    from flwr.supercore.task_identity import TaskIdentity

    for attr, value in {"_run_id": 1, "_node_id": 0, "_task_id": 1}.items():
        monkeypatch.setattr(TaskIdentity, attr, value, raising=False)


def test_weights_worked_out_by_hand() -> None:
    # Prepare: sizes 100 and 300; losses 2.0 and 2.0 + ln 3 at T = 1
    # Execute
    weights = data_aware_weights([100, 300], [2.0, 2.0 + math.log(3.0)], temperature=1.0)
    # Assert: raw weights 100·1 and 300·(1/3) = 100 -> one half each
    assert weights == pytest.approx([0.5, 0.5])
    # equal losses: FedAvg's size weights; a huge temperature: FedAvg too
    assert data_aware_weights([100, 300], [1.0, 1.0], temperature=1.0) == pytest.approx(
        [0.25, 0.75]
    )
    assert data_aware_weights([100, 300], [1.0, 9.0], temperature=1e9) == pytest.approx(
        [0.25, 0.75]
    )
    # a NaN loss (a diverged hospital) gets no weight
    assert data_aware_weights([100, 300], [1.0, math.nan], temperature=1.0) == [1.0, 0.0]


@pytest.mark.parametrize(
    ("sizes", "losses", "temperature", "match"),
    [
        ([1, 2], [1.0, 1.0], 0.0, "temperature"),
        ([1, 2], [1.0], 1.0, "2 sizes but 1 losses"),
        ([1, 2], [math.nan, math.inf], 1.0, "no finite"),
        ([0, 0], [1.0, 1.0], 1.0, "positive weight"),
    ],
)
def test_bad_inputs_name_the_value(sizes, losses, temperature, match) -> None:
    with pytest.raises(ValueError, match=match):
        data_aware_weights(sizes, losses, temperature=temperature)


def _reply(node: int, value: float, n: int, loss: float | None) -> Message:
    request = Message(
        content=RecordDict({"config": ConfigRecord({})}),
        dst_node_id=node,
        message_type=MessageType.TRAIN,
    )
    metrics = {"num-examples": n, "train_loss": 0.0}
    if loss is not None:
        metrics[TRAINED_VAL_LOSS] = loss
    content = RecordDict(
        {
            "arrays": ArrayRecord({"w": torch.tensor([value])}),
            "metrics": MetricRecord(metrics),
        }
    )
    return Message(content=content, reply_to=request)


def test_aggregate_uses_the_data_aware_weights() -> None:
    # Prepare: update 0 from 100 examples at loss 1, update 3 from 100 at loss 1 + ln 3
    strategy = DataAwareFedAvg(temperature=1.0, min_available_nodes=2, min_train_nodes=2)
    replies = [_reply(1, 0.0, 100, 1.0), _reply(2, 3.0, 100, 1.0 + math.log(3.0))]
    # Execute
    arrays, _ = strategy.aggregate_train(1, replies)
    # Assert: weights 3/4 and 1/4 -> 0.75 (FedAvg would give 1.5)
    assert float(arrays["w"].numpy()[0]) == pytest.approx(0.75)


def test_aggregate_refuses_replies_without_the_trained_loss() -> None:
    strategy = DataAwareFedAvg(temperature=1.0, min_available_nodes=2, min_train_nodes=2)
    with pytest.raises(ValueError, match=TRAINED_VAL_LOSS):
        strategy.aggregate_train(1, [_reply(1, 0.0, 10, 1.0), _reply(2, 1.0, 10, None)])


def test_configure_asks_hospitals_for_their_trained_loss() -> None:
    class _Grid:
        def get_node_ids(self) -> list[int]:
            return [1, 2]

    strategy = DataAwareFedAvg(temperature=1.0, min_available_nodes=2, min_train_nodes=2)
    messages = list(
        strategy.configure_train(1, ArrayRecord({"w": torch.zeros(1)}), ConfigRecord({}), _Grid())
    )
    assert len(messages) == 2
    assert all(m.content["config"][TRAINED_VAL_FLAG] for m in messages)


def test_params_select_it_and_refuse_a_bad_temperature() -> None:
    raw = raw_params(train_federated={"strategy": "data_aware", "data_aware_temperature": 0.5})
    strategy = make_strategy(config_from_dict(raw), 3)
    assert isinstance(strategy, DataAwareFedAvg) and strategy.temperature == 0.5
    with pytest.raises(ConfigError, match="data_aware_temperature"):
        config_from_dict(raw_params(train_federated={"data_aware_temperature": 0.0}))


def test_exp_one_minus_loss_weights_worked_out_by_hand() -> None:
    # Prepare: Fed-MedLoRA+'s rule w_i ∝ exp(1 - L_i); sizes and temperature play no part
    losses = [0.5, 1.0, 2.0]
    raw = [math.exp(0.5), math.exp(0.0), math.exp(-1.0)]  # 1.6487, 1.0, 0.3679
    # Execute
    weights = data_aware_weights(
        [10, 1000, 50], losses, temperature=0.01, weighting="exp_one_minus_loss"
    )
    # Assert: 1.6487 / 3.0166 = 0.5466, 1.0 / 3.0166 = 0.3315, 0.3679 / 3.0166 = 0.1220
    assert weights == pytest.approx([r / sum(raw) for r in raw])
    assert weights == pytest.approx([0.5466, 0.3315, 0.1220], abs=1e-4)
    # large losses do not underflow to "no weight" (exp(1 - 900) is 0.0 in floating point)
    assert data_aware_weights(
        [1, 1], [900.0, 900.0 + math.log(3.0)], temperature=1.0, weighting="exp_one_minus_loss"
    ) == pytest.approx([0.75, 0.25])
    with pytest.raises(ValueError, match="'softmax'"):
        data_aware_weights([1, 1], [1.0, 1.0], temperature=1.0, weighting="softmax")


def test_exp_one_minus_loss_through_params_and_aggregation() -> None:
    # Prepare: equal sizes, losses 0 and ln 3: weights e / (e + e/3) = 3/4 and 1/4
    raw = raw_params(
        train_federated={"strategy": "data_aware", "data_aware_weighting": "exp_one_minus_loss"}
    )
    strategy = make_strategy(config_from_dict(raw), 2)
    replies = [_reply(1, 0.0, 100, 0.0), _reply(2, 4.0, 300, math.log(3.0))]
    # Execute
    arrays, _ = strategy.aggregate_train(1, replies)
    # Assert: 0.75 · 0 + 0.25 · 4 = 1.0 (size_loss would weight the larger hospital more)
    assert strategy.weighting == "exp_one_minus_loss"
    assert float(arrays["w"].numpy()[0]) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="data_aware_weighting"):
        config_from_dict(raw_params(train_federated={"data_aware_weighting": "softmax"}))
