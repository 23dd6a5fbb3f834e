"""Secure aggregation: config validation and the weighted-update arithmetic around SecAgg+."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common.secure_aggregation.ndarrays_arithmetic import (
    factor_combine,
    factor_extract,
    parameters_addition,
    parameters_mod,
)
from flwr.common.secure_aggregation.quantization import dequantize, quantize

from privfed.config import SECAGG_MODULUS, ConfigError, SecureAggregationSection, config_from_dict
from privfed.federated.inprocess import _serverapp_identity
from privfed.federated.secagg.hospital import (
    is_secure_fit,
    secure_aggregation_mod,
    weighted_update,
)
from privfed.federated.secagg.server import apply_mean_update
from tests.conftest import raw_params


def _cfg(base: dict | None = None, **fed: object):
    secagg = {"enabled": True, **fed.pop("secure_aggregation", {})}  # type: ignore[dict-item]
    return config_from_dict(
        raw_params(
            base=base or {},
            train_federated={"screen_updates": False, **fed, "secure_aggregation": secagg},
        )
    )


# -- config -----------------------------------------------------------------------------------
def test_secure_aggregation_is_off_by_default_and_fedavg_fedprox_may_use_it() -> None:
    assert config_from_dict(raw_params()).train_federated.secure_aggregation.enabled is False
    assert _cfg(strategy="fedavg").train_federated.secure_aggregation.enabled
    assert _cfg(strategy="fedprox").train_federated.strategy == "fedprox"


@pytest.mark.parametrize("strategy", ["krum", "multikrum", "bulyan", "trimmed_mean", "median"])
def test_robust_strategies_are_refused_naming_the_strategy(strategy: str) -> None:
    with pytest.raises(ConfigError) as err:
        _cfg(strategy=strategy)
    message = str(err.value)
    assert f"train_federated.strategy={strategy}" in message
    assert "each hospital's update" in message


def test_adaptive_strategies_are_refused_as_not_implemented() -> None:
    with pytest.raises(ConfigError, match="strategy=fedadam .*not implemented on the secure"):
        _cfg(strategy="fedadam")


def test_update_screening_is_refused_with_the_key_to_change() -> None:
    with pytest.raises(ConfigError) as err:
        _cfg(screen_updates=True)
    assert "train_federated.screen_updates=true" in str(err.value)
    assert "screen_updates: false" in str(err.value)


def test_a_sum_that_cannot_fit_the_modulus_is_refused_naming_the_values() -> None:
    # Prepare: 64 hospitals x 2**26 levels = 2**32, one past the largest sum SecAgg+ can hold
    base = {"num_hospitals": 64}
    # Execute / Assert
    with pytest.raises(ConfigError) as err:
        _cfg(base, secure_aggregation={"quantization_range": 2**26})
    message = str(err.value)
    assert "quantization_range=67108864" in message
    assert "base.num_hospitals=64" in message
    assert f"below {2**32 // 64}" in message
    ok = _cfg(base, secure_aggregation={"quantization_range": 2**26 - 1})
    assert 64 * ok.train_federated.secure_aggregation.quantization_range < SECAGG_MODULUS


def test_bad_secure_aggregation_values_are_named() -> None:
    with pytest.raises(ConfigError, match="secure_aggregation.reconstruction_threshold"):
        _cfg(secure_aggregation={"reconstruction_threshold": 1.5})
    with pytest.raises(ConfigError, match="secure_aggregation.clipping_range"):
        _cfg(secure_aggregation={"clipping_range": 0})
    with pytest.raises(ConfigError, match="secure_aggregation.quantization_range"):
        _cfg(secure_aggregation={"quantization_range": 2**31})


def test_error_bound_by_hand() -> None:
    # step 2 x 1 / 2**22; three hospitals; total weight 120 / 1000
    secagg = SecureAggregationSection(clipping_range=1.0, quantization_range=2**22, max_weight=1000)
    assert secagg.quantization_step() == pytest.approx(2 / 2**22)
    assert secagg.error_bound([40, 40, 40]) == pytest.approx(3 * (2 / 2**22) * 1000 / 120)
    with pytest.raises(ValueError, match="positive"):
        secagg.error_bound([0, 0])


# -- arithmetic -------------------------------------------------------------------------------
def test_weighted_update_by_hand() -> None:
    # Prepare: a hospital with 250 of max_weight 1000 rows moved w from [1, 2] to [3, 1]
    trained = [np.array([3.0, 1.0], dtype=np.float32)]
    received = [np.array([1.0, 2.0], dtype=np.float32)]
    # Execute
    update = weighted_update(trained, received, num_examples=250, max_weight=1000)
    # Assert: 0.25 x [2, -1]
    np.testing.assert_array_equal(update[0], [0.5, -0.25])
    assert update[0].dtype == np.float64


def test_weighted_update_refuses_more_rows_than_max_weight() -> None:
    with pytest.raises(ValueError, match="max_weight=100"):
        weighted_update([np.zeros(1)], [np.zeros(1)], num_examples=101, max_weight=100)


def test_unweighting_the_mean_update_is_fedavg() -> None:
    # Prepare: global [0, 10]; hospitals with 10, 30, 60 rows trained to [1, 10], [2, 14], [4, 9]
    current = [np.array([0.0, 10.0], dtype=np.float32)]
    trained = [[1.0, 10.0], [2.0, 14.0], [4.0, 9.0]]
    counts = [10, 30, 60]
    updates = [
        weighted_update([np.array(t)], current, num_examples=n, max_weight=100)[0]
        for t, n in zip(trained, counts, strict=True)
    ]
    # SecAgg+ returns the sum divided by the number of hospitals (their factor is 1 each)
    unmasked = [sum(updates) / 3]
    # Execute
    new = apply_mean_update(current, unmasked, num_examples=counts, max_weight=100)
    # Assert: FedAvg by hand: (10 x 1 + 30 x 2 + 60 x 4) / 100 = 3.1;
    # (10 x 10 + 30 x 14 + 60 x 9) / 100 = 10.6
    np.testing.assert_allclose(new[0], [3.1, 10.6], rtol=1e-6)
    assert new[0].dtype == np.float32


def test_integer_tensors_are_rounded_back() -> None:
    current = [np.array([5, 7], dtype=np.int64)]
    new = apply_mean_update(current, [np.array([0.6, -0.2])], num_examples=[1], max_weight=1)
    np.testing.assert_array_equal(new[0], [6, 7])
    assert new[0].dtype == np.int64


def test_flowers_secagg_arithmetic_with_masks_stays_within_the_error_bound() -> None:
    """The hospitals' and server's SecAgg+ steps as flwr 1.41 does them, masks included."""
    # Prepare: three hospitals' updates of a 1000-value tensor around a global model
    rng = np.random.default_rng(0)
    secagg = SecureAggregationSection(clipping_range=0.5, quantization_range=2**22, max_weight=500)
    counts = [37, 120, 410]
    current = [rng.normal(size=1000).astype(np.float32)]
    trained = [[current[0] + rng.normal(scale=0.05, size=1000)] for _ in counts]
    q, m = secagg.quantization_range, SECAGG_MODULUS
    masks = [rng.integers(0, m, size=1000) for _ in counts]  # pairwise: i adds, i+1 subtracts
    # Execute: what secaggplus_mod sends (Flower's factor num_examples / max_weight is 1) ...
    sent = []
    for i, (t, n) in enumerate(zip(trained, counts, strict=True)):
        update = weighted_update(t, current, num_examples=n, max_weight=secagg.max_weight)
        vec = factor_combine(q, quantize(update, secagg.clipping_range, q))
        vec = [vec[0], vec[1] + masks[i] - masks[(i + 1) % len(counts)]]
        sent.append(parameters_mod(vec, m))
    # ... and what SecAggPlusWorkflow's unmask stage does with their sum
    total = sent[0]
    for vec in sent[1:]:
        total = parameters_addition(total, vec)
    factor, summed = factor_extract(parameters_mod(total, m))
    mean = dequantize(summed, secagg.clipping_range, q)
    mean = [(v - (len(counts) - 1) * secagg.clipping_range) * (q / factor) for v in mean]
    new = apply_mean_update(current, mean, num_examples=counts, max_weight=secagg.max_weight)
    # Assert: FedAvg's mean within the bound (plus one float32 rounding of values of order 1)
    fedavg = sum(n * t[0].astype(np.float64) for t, n in zip(trained, counts, strict=True))
    fedavg /= sum(counts)
    error = float(np.abs(new[0] - fedavg).max())
    assert 0 < error <= secagg.error_bound(counts) + 1e-6


# -- the hospital-side seam -------------------------------------------------------------------
def test_only_secagg_messages_reach_flowers_mod(monkeypatch: pytest.MonkeyPatch) -> None:
    import flwr.client.mod as mods

    seen: list[str] = []
    monkeypatch.setattr(mods, "secaggplus_mod", lambda msg, ctxt, nxt: seen.append("secagg"))

    def handler(msg, ctxt):
        seen.append("handler")

    with _serverapp_identity():
        plain = Message(
            RecordDict({"config": ConfigRecord({})}), dst_node_id=1, message_type="train"
        )
        protocol = Message(
            RecordDict({"secaggplus_configs": ConfigRecord({"stage": "setup"})}),
            dst_node_id=1,
            message_type="train",
        )
    secure_aggregation_mod(plain, None, handler)  # type: ignore[arg-type]
    secure_aggregation_mod(protocol, None, handler)  # type: ignore[arg-type]
    assert seen == ["handler", "secagg"]
    assert not is_secure_fit(plain.content)
    assert is_secure_fit(RecordDict({"fitins.config": ConfigRecord({})}))


def test_a_hospital_trains_as_on_the_message_api_path_and_sends_its_weighted_update(
    tmp_path,
) -> None:
    """The secure path's hospital step is train_reply's, only the reply is the weighted update."""
    import json

    import torch
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.common.typing import FitIns
    from flwr.compat.common import recorddict_compat as compat

    from privfed.federated.client import CONFIG_KEY, train_reply
    from privfed.federated.secagg.hospital import secure_train_reply
    from privfed.partitions import hospital_dirs
    from privfed.stages import run_data_stages
    from privfed.tasks import get_task

    # Prepare: the tiny data; one hospital; the same global model and config on both paths
    cfg = _cfg()
    hospital = hospital_dirs(run_data_stages(cfg, tmp_path))[0]
    node = {"hospital": hospital.name, "data-path": str(hospital)}
    torch.manual_seed(0)
    model = get_task(cfg.base.task, cfg).build_model()
    config = {CONFIG_KEY: json.dumps(cfg.model_dump(mode="json")), "dp": False, "server-round": 1}
    received = [t.numpy() for t in model.state_dict().values()]
    # Execute
    plain = train_reply(
        RecordDict({"arrays": ArrayRecord(model.state_dict()), "config": ConfigRecord(config)}),
        node,
        RecordDict(),
    )
    fitins = FitIns(parameters=ndarrays_to_parameters(received), config=config)
    secure = compat.recorddict_to_fitres(
        secure_train_reply(compat.fitins_to_recorddict(fitins, True), node, RecordDict()), False
    )
    # Assert: update x max_weight / n + global is the Message API path's trained model
    secagg = cfg.train_federated.secure_aggregation
    n = int(plain["metrics"]["num-examples"])
    assert secure.num_examples == secagg.max_weight  # Flower's own weight factor: exactly 1
    assert secure.metrics["num-examples"] == n
    assert secure.metrics["hospital"] == hospital.name
    assert secure.metrics["secagg-clipped"] == 0
    trained = [t.numpy() for t in plain["arrays"].to_torch_state_dict().values()]
    update = parameters_to_ndarrays(secure.parameters)
    for t, u, r in zip(trained, update, received, strict=True):
        np.testing.assert_allclose(r + u * secagg.max_weight / n, t, rtol=0, atol=1e-6)
