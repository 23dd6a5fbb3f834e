from __future__ import annotations

import json

import pytest

from privfed.config import config_from_dict
from privfed.io import DataError
from privfed.privacy import epsilon_from_history
from privfed.stages import account_privacy
from privfed.stages.account_privacy import PrivacyBudgetExceeded
from tests.conftest import raw_params


def _rounds(tmp_path, histories: dict) -> dict:
    """The stage's inputs: rounds.json with these DP histories, and (empty) partitions."""
    fed = tmp_path / "federated"
    fed.mkdir()
    (fed / "rounds.json").write_text(
        json.dumps({"federated_dp": {"dp_history": histories, "rounds_completed": 3}})
    )
    for hospital in histories:
        for split in ("train", "val", "test"):
            (tmp_path / "partitions" / hospital / split).mkdir(parents=True, exist_ok=True)
    return {"federated": fed, "partitions": tmp_path / "partitions"}


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
    # readmission: one example per patient, nothing counted, the same guarantee per patient
    one = result["hospitals"]["hospital_2"]
    assert one["examples_per_patient"] is None
    assert one["patient_level"] == {"epsilon": one["epsilon"], "delta": cfg.privacy.delta}
    assert result["patient_level"]["examples_per_patient"] is None


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


def test_notes_report_the_per_patient_guarantee_by_group_privacy(tmp_path) -> None:
    """hospital_1's patient p1 wrote 3 training notes: the patient gets (3ε, 3·e^{2ε}·δ)."""
    import math

    from privfed.tasks.notes.layout import write_notes

    # Prepare
    cfg = config_from_dict(raw_params(base={"task": "notes"}, privacy={"epsilon_budget": 50.0}))
    histories = {"hospital_1": [[1.0, 0.1, 30]], "hospital_2": [[1.0, 0.1, 30]]}
    inputs = _rounds(tmp_path, histories)
    notes = {"hospital_1": ["p1", "p1", "p2", "p1"], "hospital_2": ["p3", "p4"]}
    for hospital, patients in notes.items():
        write_notes(
            [
                {"note_id": f"{hospital}-{i}", "patient_id": p, "hospital": hospital, "text": "a"}
                for i, p in enumerate(patients)
            ],
            tmp_path / "partitions" / hospital / "train" / "notes.jsonl",
        )
    # Execute
    result = account_privacy.run(cfg, inputs, {"privacy": tmp_path / "p.json"})
    # Assert
    delta = cfg.privacy.delta
    h1, h2 = result["hospitals"]["hospital_1"], result["hospitals"]["hospital_2"]
    assert h1["examples_per_patient"] == 3 and h2["examples_per_patient"] == 1
    assert h1["patient_level"]["epsilon"] == pytest.approx(3 * h1["epsilon"])
    assert h1["patient_level"]["delta"] == pytest.approx(3 * math.exp(2 * h1["epsilon"]) * delta)
    assert h2["patient_level"] == {"epsilon": h2["epsilon"], "delta": delta}
    assert result["patient_level"] == {
        "examples_per_patient": 3,
        "epsilon": h1["patient_level"]["epsilon"],
        "delta": h1["patient_level"]["delta"],
    }
    assert result["epsilon"] == pytest.approx(h1["epsilon"])  # the budget still reads per note
    written = json.loads((tmp_path / "p.json").read_text())
    assert written["hospitals"]["hospital_1"]["patient_level"] == h1["patient_level"]


def test_a_hospital_without_a_partition_is_named(tmp_path) -> None:
    cfg = config_from_dict(raw_params(base={"task": "notes"}, privacy={"epsilon_budget": 50.0}))
    inputs = _rounds(tmp_path, {"hospital_1": [[1.0, 0.1, 30]]})
    (tmp_path / "federated" / "rounds.json").write_text(
        json.dumps({"federated_dp": {"dp_history": {"hospital_9": [[1.0, 0.1, 30]]}}})
    )
    with pytest.raises(DataError, match=r"no partition folder for hospital\(s\) \['hospital_9'\]"):
        account_privacy.run(cfg, inputs, {"privacy": tmp_path / "p.json"})
