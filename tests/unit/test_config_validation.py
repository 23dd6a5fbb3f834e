"""A careless params.yaml fails before any stage runs, naming the key and value at fault."""

from __future__ import annotations

from pathlib import Path

import pytest

from privfed.config import ConfigError, config_from_dict, load_config
from privfed.privacy import check_delta
from tests.conftest import PARAMS, raw_params


def _default(**overrides: dict) -> dict:
    """params.yaml with overrides, on the default profile (the tiny overlay would mask them)."""
    raw = raw_params(**overrides)
    raw["base"]["profile"] = "default"
    return raw


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        ("train_federated", {"rounds": True}, "rounds=True: expected a number, not a boolean"),
        ("privacy", {"target_epsilon": False}, "target_epsilon=False: expected a number"),
        ("train_federated", {"min_train_nodes": True}, "min_train_nodes=True"),
        ("privacy", {"accountants": []}, "privacy.accountants: Tuple should have at least 1"),
        (
            "validate_data",
            {"min_patients_per_hospital": 500, "max_patients_per_hospital": 100},
            "min_patients_per_hospital=500 is larger than max_patients_per_hospital=100",
        ),
    ],
)
def test_bad_values_are_refused_by_name(section: str, values: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict(_default(**{section: values}))
    assert section in str(err.value) and message in str(err.value)


def test_booleans_stay_valid_where_a_boolean_belongs() -> None:
    cfg = config_from_dict(_default(privacy={"enabled": True, "dropout": True}))
    assert cfg.privacy.dropout is True


def test_a_key_written_twice_is_refused_naming_both_lines(tmp_path: Path) -> None:
    # Prepare: the project's params.yaml with train_federated.rounds written a second time
    text = PARAMS.read_text()
    path = tmp_path / "params.yaml"
    path.write_text(text.replace("train_federated:\n", "train_federated:\n  rounds: 99\n", 1))

    # Execute / Assert
    with pytest.raises(ConfigError, match=r"key 'rounds' appears twice .*lines \d+ and \d+"):
        load_config(path)


def test_an_empty_params_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match="is empty"):
        load_config(path)


def test_delta_must_be_below_one_over_the_smallest_hospitals_n() -> None:
    # 1/200 = 0.005: the smallest hospital decides
    with pytest.raises(ValueError, match=r"privacy.delta=0.9 .* hospital_2 \(n = 200"):
        check_delta(0.9, {"hospital_1": 400, "hospital_2": 200})
    with pytest.raises(ValueError, match="privacy.delta=0.005"):
        check_delta(0.005, {"hospital_1": 400, "hospital_2": 200})
    warning = check_delta(1e-3, {"hospital_1": 400, "hospital_2": 200})  # > 1/(10·200)
    assert warning is not None and "loose" in warning
    assert check_delta(1e-5, {"hospital_1": 400, "hospital_2": 200}) is None


def test_train_federated_refuses_delta_above_one_over_n_before_any_round(tmp_path: Path) -> None:
    # Prepare: the tiny data partitioned (36-40 training patients per hospital)
    from privfed.stages import run_data_stages
    from privfed.stages.train_federated import check_privacy_delta, run
    from privfed.tasks import get_task

    cfg = config_from_dict(raw_params(privacy={"delta": 0.9}))
    parts = run_data_stages(cfg, tmp_path / "work")

    # Execute / Assert: the check alone, then the stage (which must stop before any launcher)
    with pytest.raises(ConfigError, match=r"privacy.delta=0.9 is not below 1/n .* hospital_"):
        check_privacy_delta(cfg, get_task("readmission", cfg), parts)
    with pytest.raises(ConfigError, match="privacy.delta=0.9"):
        run(cfg, {"partitions": parts}, {"models": tmp_path / "m", "metrics": tmp_path / "m.json"})
    assert not (tmp_path / "m").exists()


def test_the_non_dp_run_is_the_operators_choice_and_the_card_says_which() -> None:
    from privfed.stages.train_federated import planned_runs

    both = config_from_dict(raw_params())
    assert planned_runs(both) == [("federated", False), ("federated_dp", True)]
    dp_only = config_from_dict(raw_params(privacy={"non_dp_run": False}))
    assert planned_runs(dp_only) == [("federated_dp", True)]  # the server sees no plain update
    off = config_from_dict(
        raw_params(privacy={"enabled": False}, register_model={"candidate": "federated"})
    )
    assert planned_runs(off) == [("federated", False)]
    with pytest.raises(ConfigError, match="candidate='federated' needs the non-DP run"):
        config_from_dict(
            raw_params(privacy={"non_dp_run": False}, register_model={"candidate": "federated"})
        )
