"""SCAFFOLD: a hospital's corrected step and the server's update, against numbers by hand.

The model is ``f(x) = w·x`` (two weights, no bias) with squared error; hospital 1 holds
``x = (1, 2), y = 0`` and hospital 2 ``x = (0, 1), y = 1``. At ``w = (1, 0)`` their gradients
``2 (w·x - y) x`` are ``g_1 = (2, 4)`` and ``g_2 = (0, -2)``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from torch import nn
from torch.utils.data import TensorDataset

from privfed.config import ConfigError, config_from_dict
from privfed.federated.recorded import RecordedStrategy
from privfed.federated.recorder import RoundRecorder
from privfed.federated.scaffold import (
    CONTROL_KEY,
    DELTA_KEY,
    Scaffold,
    control_variate,
    scaffold_update,
)
from privfed.federated.strategies import make_strategy
from privfed.training import train_local_pass
from tests.conftest import raw_params

HOSPITALS = {
    1: TensorDataset(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0]])),
    2: TensorDataset(torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0]])),
}


class _Squared:
    """The slice of the Task interface that training and ``control_variate`` use."""

    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        x, y = batch
        return ((model(x) - y) ** 2).mean()


def _linear(w: tuple[float, float] = (1.0, 0.0)) -> nn.Module:
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([w]))
    return model


class _Grid:
    def __init__(self, nodes: list[int]) -> None:
        self.nodes = nodes

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)


@pytest.fixture(autouse=True)
def _serverapp_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages read the process's task identity, which Flower sets inside a ServerApp."""
    from flwr.supercore.task_identity import TaskIdentity

    for attr, value in {"_run_id": 1, "_node_id": 0, "_task_id": 1}.items():
        monkeypatch.setattr(TaskIdentity, attr, value, raising=False)


def _hospital_round(node: int, request: Message, c_i: np.ndarray) -> Message:
    """What the ClientApp does: corrected Adam step from the received x, reply y and Δc_i."""
    x = request.content["arrays"].to_torch_state_dict()
    c = request.content[CONTROL_KEY].to_torch_state_dict()["weight"]
    model = _linear()
    model.load_state_dict(x)
    fresh = control_variate(
        _Squared(), model, HOSPITALS[node], batch_size=1, device=torch.device("cpu")
    )[0]
    train_local_pass(
        _Squared(),
        model,
        HOSPITALS[node],
        epochs=1,
        batch_size=1,
        lr=0.1,
        grad_correction=[c - torch.from_numpy(c_i)],
    )
    content = RecordDict(
        {
            "arrays": ArrayRecord(model.state_dict()),
            "metrics": MetricRecord({"num-examples": 1, "train_loss": 0.0}),
            "ident": ConfigRecord({"hospital": f"hospital_{node}"}),
            DELTA_KEY: ArrayRecord({"weight": fresh - torch.from_numpy(c_i)}),
        }
    )
    return Message(content=content, reply_to=request)


def test_control_variate_is_the_mean_gradient_at_the_global_model() -> None:
    # Prepare
    both = TensorDataset(
        torch.cat([HOSPITALS[1].tensors[0], HOSPITALS[2].tensors[0]]),
        torch.cat([HOSPITALS[1].tensors[1], HOSPITALS[2].tensors[1]]),
    )
    model = _linear()
    # Execute
    g1 = control_variate(_Squared(), model, HOSPITALS[1], batch_size=1, device=torch.device("cpu"))
    g = control_variate(_Squared(), model, both, batch_size=1, device=torch.device("cpu"))
    # Assert: g_1 = 2·(1·1 + 0·2 - 0)·(1, 2); the pooled mean is ((2, 4) + (0, -2)) / 2
    np.testing.assert_allclose(g1[0].numpy(), [[2.0, 4.0]])
    np.testing.assert_allclose(g[0].numpy(), [[1.0, 1.0]])
    assert model.weight.grad is None
    np.testing.assert_allclose(model.weight.detach().numpy(), [[1.0, 0.0]])


def test_correction_changes_the_local_step_as_worked_out() -> None:
    # Prepare: one Adam step moves each weight by -lr·sign(gradient) (m̂/√v̂ = g/|g|)
    plain, corrected = _linear(), _linear()
    # Execute
    train_local_pass(_Squared(), plain, HOSPITALS[1], epochs=1, batch_size=1, lr=0.1)
    train_local_pass(
        _Squared(),
        corrected,
        HOSPITALS[1],
        epochs=1,
        batch_size=1,
        lr=0.1,
        grad_correction=[torch.tensor([[-3.0, 1.0]])],  # c - c_i
    )
    # Assert: g_1 = (2, 4) -> step (-0.1, -0.1); g_1 + (-3, 1) = (-1, 5) -> step (+0.1, -0.1)
    np.testing.assert_allclose(plain.weight.detach().numpy(), [[0.9, -0.1]], atol=1e-6)
    np.testing.assert_allclose(corrected.weight.detach().numpy(), [[1.1, -0.1]], atol=1e-6)


def test_correction_is_refused_with_dp() -> None:
    from privfed.training import DPSettings

    with pytest.raises(ValueError, match="SCAFFOLD"):
        train_local_pass(
            _Squared(),
            _linear(),
            HOSPITALS[1],
            epochs=1,
            batch_size=1,
            lr=0.1,
            dp=DPSettings(noise_multiplier=1.0, max_grad_norm=1.0),
            grad_correction=[torch.zeros(1, 2)],
        )


def test_server_update_hand_computed() -> None:
    # Prepare: x = (1, 2), c = (0, 0); two of three hospitals reply
    x = {"w": np.array([1.0, 2.0]), "steps": np.array(4, dtype=np.int64)}
    c = {"w": np.zeros(2)}
    delta_y = [
        {"w": np.array([-0.5, 0.5]), "steps": np.array(2.0)},
        {"w": np.array([0.5, -1.0]), "steps": np.array(2.0)},
    ]
    delta_c = [{"w": np.array([0.2, -0.4])}, {"w": np.array([0.4, 0.0])}]
    # Execute
    new_x, new_c = scaffold_update(x, c, delta_y, delta_c, server_lr=0.5, num_hospitals=3)
    # Assert: x + 0.5·(0, -0.25) = (1, 1.875); c + (2/3)·(0.3, -0.2) = (0.2, -0.1333…)
    np.testing.assert_allclose(new_x["w"], [1.0, 1.875])
    assert new_x["steps"] == 5 and new_x["steps"].dtype == np.int64
    np.testing.assert_allclose(new_c["w"], [0.2, -2.0 / 15.0])


def test_one_round_of_two_hospitals_through_the_strategy(tmp_path) -> None:
    # Prepare: the strategy as run_server builds it, wrapped by screening
    cfg = config_from_dict(
        raw_params(
            train_federated={"strategy": "scaffold", "scaffold_server_lr": 1.0},
            privacy={"enabled": False},
            register_model={"candidate": "federated"},
        )
    )
    strategy = make_strategy(cfg, num_nodes=2, parameter_names=["weight"])
    assert isinstance(strategy, Scaffold)
    recorder = RoundRecorder(
        out_dir=tmp_path,
        task_name="readmission",
        primary_metric="macro_auroc",
        num_rounds=1,
        min_replies=2,
        screen_norm_factor=10.0,
    )
    recorded = RecordedStrategy(strategy, recorder)
    initial = ArrayRecord(_linear().state_dict())
    recorded.end_round(0, initial)  # the screening template
    # Execute
    requests = list(recorded.configure_train(1, initial, ConfigRecord({}), _Grid([1, 2])))
    replies = [_hospital_round(m.metadata.dst_node_id, m, np.zeros((1, 2))) for m in requests]
    arrays, _ = recorded.aggregate_train(1, replies)
    # Assert: c = 0 went out; hospital 1 steps (-0.1, -0.1) (g_1 = (2, 4)); hospital 2's g_2 =
    # (0, -2) moves only w_2, by +0.1. x + mean Δy = (1 - 0.05, 0 + 0) = (0.95, 0);
    # c + (2/2)·mean(g_1, g_2) = (1, 1)
    assert all(CONTROL_KEY in m.content for m in requests)
    np.testing.assert_allclose(requests[0].content[CONTROL_KEY]["weight"].numpy(), [[0.0, 0.0]])
    np.testing.assert_allclose(arrays["weight"].numpy(), [[0.95, 0.0]], atol=1e-6)
    np.testing.assert_allclose(strategy.control["weight"], [[1.0, 1.0]])
    assert recorder._rejected == {}
    # and the next round sends the new c
    again = list(strategy.configure_train(2, arrays, ConfigRecord({}), _Grid([1, 2])))
    np.testing.assert_allclose(again[0].content[CONTROL_KEY]["weight"].numpy(), [[1.0, 1.0]])


def test_scaffold_refuses_dp_and_secure_aggregation() -> None:
    with pytest.raises(ConfigError, match="strategy=scaffold cannot run with privacy.enabled"):
        config_from_dict(raw_params(train_federated={"strategy": "scaffold"}))
    with pytest.raises(ConfigError, match="strategy=scaffold cannot run with secure_agg"):
        config_from_dict(
            raw_params(
                train_federated={
                    "strategy": "scaffold",
                    "screen_updates": False,
                    "secure_aggregation": {"enabled": True},
                },
                privacy={"enabled": False},
                register_model={"candidate": "federated"},
            )
        )


def test_strategy_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="server_lr must be > 0, got 0"):
        Scaffold(num_hospitals=2, server_lr=0.0)
    with pytest.raises(ValueError, match="num_hospitals must be >= 1, got 0"):
        Scaffold(num_hospitals=0)
