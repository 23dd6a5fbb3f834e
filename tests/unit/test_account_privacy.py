from __future__ import annotations

import json

import pytest

from privfed.config import config_from_dict
from privfed.privacy import epsilon_from_history
from privfed.stages import account_privacy
from privfed.stages.account_privacy import PrivacyBudgetExceeded
from tests.conftest import raw_params


def _rounds(tmp_path, histories: dict) -> dict:
    fed = tmp_path / "federated"
    fed.mkdir()
    (fed / "rounds.json").write_text(
        json.dumps({"federated_dp": {"dp_history": histories, "rounds_completed": 3}})
    )
    return {"federated": fed}


def test_reports_each_hospital_and_the_max(tmp_path) -> None:
    cfg = config_from_dict(raw_params(privacy={"epsilon_budget": 50.0}))
    histories = {"hospital_1": [[1.0, 0.1, 30]], "hospital_2": [[1.0, 0.1, 30], [1.0, 0.1, 30]]}
    result = account_privacy.run(
        cfg, _rounds(tmp_path, histories), {"privacy": tmp_path / "p.json"}
    )
    eps_2 = epsilon_from_history([(1.0, 0.1, 60)], delta=cfg.privacy.delta, accountant="rdp")
    assert result["hospitals"]["hospital_2"]["by_accountant"]["rdp"] == pytest.approx(eps_2)
    assert result["hospitals"]["hospital_2"]["steps"] == 60
    assert result["epsilon"] == max(h["epsilon"] for h in result["hospitals"].values())
    assert (
        result["hospitals"]["hospital_1"]["epsilon"] < result["hospitals"]["hospital_2"]["epsilon"]
    )
    assert json.loads((tmp_path / "p.json").read_text())["within_budget"] is True


def test_fails_when_a_hospital_exceeds_the_budget(tmp_path) -> None:
    cfg = config_from_dict(raw_params(privacy={"epsilon_budget": 1.0}))
    histories = {"hospital_1": [[0.8, 0.2, 500]], "hospital_2": [[5.0, 0.01, 10]]}
    with pytest.raises(PrivacyBudgetExceeded, match="hospital 'hospital_1'"):
        account_privacy.run(cfg, _rounds(tmp_path, histories), {"privacy": tmp_path / "p.json"})
    assert json.loads((tmp_path / "p.json").read_text())["within_budget"] is False


def test_reported_epsilon_is_the_calibrating_accountants_not_the_max(tmp_path) -> None:
    # Prepare: RDP is looser than PRV for these steps; PRV calibrated the noise
    cfg = config_from_dict(raw_params(privacy={"epsilon_budget": 50.0, "accountant": "prv"}))
    histories = {"hospital_1": [[1.0, 0.1, 60]]}
    # Execute
    result = account_privacy.run(
        cfg, _rounds(tmp_path, histories), {"privacy": tmp_path / "p.json"}
    )
    # Assert: both are reported, and ε is PRV's (a guarantee: its error bound's upper end)
    by = result["hospitals"]["hospital_1"]["by_accountant"]
    assert by["prv"] < by["rdp"]
    assert result["epsilon"] == pytest.approx(by["prv"])
    assert result["accountant"] == "prv"


def test_the_calibrating_accountant_must_be_reported() -> None:
    with pytest.raises(ValueError, match=r"privacy.accountant='prv' must be one of"):
        config_from_dict(raw_params(privacy={"accountants": ["rdp"], "accountant": "prv"}))
