"""The strategy registry: one entry per strategy, and the config reads its names and rules."""

from __future__ import annotations

import subprocess
import sys
import typing

import pytest
from flwr.serverapp.strategy import Strategy

from privfed.config import SECAGG_STRATEGIES, ConfigError, PrivFedConfig, config_from_dict
from privfed.config.federation import TrainFederatedSection
from privfed.config.strategy_registry import (
    STRATEGIES,
    StrategySpec,
    get_strategy,
    min_hospitals_for,
    strategy_names,
)
from privfed.federated.strategies import make_strategy
from tests.conftest import raw_params

#: Every registered strategy and the class it builds (Flower's, or ours).
BUILDS = {
    "fedavg": "FedAvg",
    "fedavgm": "FedAvgM",
    "fedprox": "FedProx",
    "fedadam": "FedAdam",
    "fedyogi": "FedYogi",
    "fedadagrad": "FedAdagrad",
    "krum": "Krum",
    "multikrum": "MultiKrum",
    "bulyan": "Bulyan",
    "trimmed_mean": "FedTrimmedAvg",
    "median": "FedMedian",
    "scaffold": "Scaffold",
    "data_aware": "DataAwareFedAvg",
}


def _cfg(strategy: str, **fed: object) -> PrivFedConfig:
    """``strategy`` with ``fed`` in train_federated, without DP (SCAFFOLD refuses it)."""
    return config_from_dict(
        raw_params(
            train_federated={"strategy": strategy, **fed},
            privacy={"enabled": False},
            register_model={"candidate": "federated"},
        )
    )


def test_the_config_allows_exactly_the_registered_names_in_registry_order() -> None:
    # Execute
    allowed = typing.get_args(TrainFederatedSection.model_fields["strategy"].annotation)
    # Assert
    assert allowed == strategy_names() == tuple(BUILDS)
    assert all(name == spec.name for name, spec in STRATEGIES.items())


def test_the_config_refuses_an_unknown_strategy_naming_every_allowed_one() -> None:
    # Execute
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw_params(train_federated={"strategy": "fedsgd"}))
    # Assert
    message = str(err.value)
    assert "train_federated.strategy" in message and "'fedsgd'" in message
    assert all(f"'{name}'" in message for name in strategy_names())


def test_an_unknown_name_is_refused_by_the_registry_too() -> None:
    with pytest.raises(
        ValueError, match="unknown strategy 'fedsgd'; registered: fedavg, fedavgm, fedprox"
    ):
        get_strategy("fedsgd")


@pytest.mark.parametrize(
    ("strategy", "num_malicious", "needed"),
    [
        ("fedavg", 3, 1),  # not robust: any number of replies
        ("scaffold", 0, 1),
        ("krum", 1, 5),  # Blanchard et al.: n > 2f + 2, so 2·1 + 3
        ("multikrum", 2, 7),  # 2·2 + 3
        ("bulyan", 1, 7),  # El Mhamdi et al.: n >= 4f + 3, so 4·1 + 3
        ("bulyan", 2, 11),  # 4·2 + 3
        ("trimmed_mean", 4, 3),  # does not depend on f
        ("median", 0, 3),
    ],
)
def test_minimum_hospitals_per_round(strategy: str, num_malicious: int, needed: int) -> None:
    assert min_hospitals_for(strategy, num_malicious) == needed
    assert get_strategy(strategy).hospitals_needed(num_malicious=num_malicious) == needed


def test_make_strategy_enforces_the_registrys_minimum() -> None:
    # Prepare: krum with f = 2 needs 2·2 + 3 = 7 replies per round
    cfg = _cfg("krum", num_malicious=2)
    # Execute / Assert
    with pytest.raises(ValueError, match="krum with num_malicious=2 needs at least 7"):
        make_strategy(cfg, num_nodes=6)
    assert type(make_strategy(cfg, num_nodes=7)).__name__ == "Krum"


def test_secure_aggregation_serves_exactly_the_registrys_sum_strategies() -> None:
    # Assert: the config's list is the registry's, and only sum-based strategies are on it
    secure = strategy_names(where=lambda spec: spec.secure_aggregation)
    assert SECAGG_STRATEGIES == secure == ("fedavg", "fedprox")
    assert not any(STRATEGIES[name].robust for name in secure)


@pytest.mark.parametrize("strategy", list(BUILDS))
def test_the_config_checks_secure_aggregation_against_the_registry(strategy: str) -> None:
    secagg = {"screen_updates": False, "secure_aggregation": {"enabled": True}}
    if get_strategy(strategy).secure_aggregation:
        cfg = _cfg(strategy, **secagg)
        assert cfg.train_federated.secure_aggregation.enabled
    else:
        with pytest.raises(ConfigError, match=f"strategy={strategy} cannot run with secure_agg"):
            _cfg(strategy, **secagg)


@pytest.mark.parametrize("strategy", list(BUILDS))
def test_the_config_checks_dp_against_the_registry(strategy: str) -> None:
    with_dp = {"train_federated": {"strategy": strategy}, "privacy": {"enabled": True}}
    reason = get_strategy(strategy).hospital.refuses_dp
    if reason is None:
        assert config_from_dict(raw_params(**with_dp)).privacy.enabled
    else:
        with pytest.raises(ConfigError) as err:
            config_from_dict(raw_params(**with_dp))
        assert f"strategy={strategy} cannot run with privacy.enabled=true" in str(err.value)
        assert reason in str(err.value)
    # only SCAFFOLD sends what DP-SGD does not cover (its control variates)
    assert (reason is not None) == (strategy == "scaffold")


def test_hospital_duties() -> None:
    duties = {
        name: [duty for duty, on in vars(spec.hospital).items() if on and duty != "refuses_dp"]
        for name, spec in STRATEGIES.items()
    }
    assert duties["fedprox"] == ["proximal_term"]
    assert duties["scaffold"] == ["control_variates"]
    assert duties["data_aware"] == ["trained_val_loss"]
    assert sum(map(len, duties.values())) == 3


@pytest.mark.parametrize(("strategy", "cls"), list(BUILDS.items()))
def test_every_entry_builds_its_strategy(strategy: str, cls: str) -> None:
    # Prepare: 7 hospitals, enough for bulyan with f = 1
    cfg = _cfg(strategy)
    # Execute
    built = make_strategy(cfg, num_nodes=7)
    # Assert
    assert isinstance(built, Strategy) and type(built).__name__ == cls
    assert built.min_available_nodes == built.min_train_nodes  # bounded waits for every one


def test_a_spec_rejects_bad_values_naming_them() -> None:
    with pytest.raises(ValueError, match="factory must be 'module:attr', got 'nowhere'"):
        StrategySpec("odd", "nowhere")
    with pytest.raises(ValueError, match="min_hospitals >= 1, got 0 and 0"):
        StrategySpec("odd", "m:f", min_hospitals=0)


def test_the_registry_imports_neither_flower_nor_torch() -> None:
    # Execute: a fresh interpreter imports the registry and validates a config
    code = (
        "import sys, privfed.config.strategy_registry, privfed.config\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'flwr', 'torch'})\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    # Assert
    assert out.strip() == ""


@pytest.mark.parametrize(
    ("overrides", "num_nodes", "expected"),
    [
        ({}, 3, 2),  # the default: every sampled hospital but one
        ({}, 2, 2),  # ... but never fewer than two
        ({"fraction_train": 0.5}, 10, 4),  # 5 sampled, one may drop
        ({"strategy": "krum", "num_malicious": 1}, 5, 5),  # Krum needs 2f + 3 = 5
        ({"min_train_nodes": 3}, 3, 3),  # what the operator set
    ],
)
def test_min_train_nodes_tolerates_one_dropout_by_default(
    overrides: dict, num_nodes: int, expected: int
) -> None:
    from privfed.federated.strategies import min_train_nodes

    raw = raw_params(base={"num_hospitals": num_nodes}, train_federated=overrides)
    raw["base"]["profile"] = "default"
    assert min_train_nodes(config_from_dict(raw), num_nodes) == expected
