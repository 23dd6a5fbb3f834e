"""Stage ``account_privacy``: ε(δ) per hospital for the whole DP federated run.

Reads each hospital's accountant history (every round's noise multiplier, sample rate and step
count, carried across rounds) and composes it with each accountant in ``privacy.accountants``.
The reported ε of a hospital is that of ``privacy.accountant``, the one that calibrated the
noise (PRV by default: Opacus' PRV accountant returns the upper end of its error bound, so it
is a guarantee, and a tighter one than RDP's); the others are reported beside it. The run's ε
is the largest over hospitals (never an average: the weakest guarantee is the one a patient
gets).

That ε protects one training example. Where a patient contributes several (notes: one example
per note), each hospital's training split is counted for the most examples one patient has
(:meth:`Task.examples_per_unit`, k) and the patient-level guarantee is the group-privacy bound
for k (:func:`privfed.privacy.group_privacy`). The count reads the pipeline's partitions (what
the local launcher's hospitals train on, and what evaluate_models reads), so rounds.json and the
Flower messages stay as they are and an older rounds.json is accounted the same way. On the
Kubernetes launcher the hospitals train on their own volumes: the count is right where those
hold the pipeline's partitions (docs/kubernetes.md's setup), not for data the pipeline never saw.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from privfed.config import PrivFedConfig
from privfed.federated import ROUNDS_FILE
from privfed.io import DataError, read_json, write_json
from privfed.partitions import hospital_dirs
from privfed.privacy import epsilon_from_history, group_privacy, history_steps
from privfed.stages.spec import StageSpec
from privfed.tasks import get_task

log = logging.getLogger(__name__)

SPEC = StageSpec(
    params=("base", "privacy", "profiles"),
    inputs={"federated": "models/federated", "partitions": "data/partitions"},
    outputs={"privacy": "metrics/privacy.json"},
)


class PrivacyBudgetExceeded(RuntimeError):
    """ε of at least one hospital is above ``privacy.epsilon_budget``."""


def examples_per_patient(
    cfg: PrivFedConfig, partitions: Path, hospitals: list[str]
) -> dict[str, int | None]:
    """hospital -> the most training examples one patient has there (None: one per patient).

    Raises:
        DataError: a hospital with a DP history has no partition folder.
    """
    task = get_task(cfg.base.task, cfg)
    found = {h.name: h for h in hospital_dirs(partitions)}
    missing = sorted(set(hospitals) - set(found))
    if missing:
        raise DataError(
            f"{partitions}: no partition folder for hospital(s) {missing} that ran DP-SGD "
            f"(folders: {sorted(found)})"
        )
    return {h: task.examples_per_unit([found[h] / "train"]) for h in hospitals}


def _patient_level(epsilon: float, delta: float, k: int | None) -> dict[str, float]:
    """The guarantee of a patient with ``k`` examples (None: one example, the same guarantee)."""
    eps, dlt = group_privacy(epsilon=epsilon, delta=delta, group_size=k or 1)
    return {"epsilon": eps, "delta": dlt}


def run(
    cfg: PrivFedConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]
) -> dict[str, Any]:
    p = cfg.privacy
    if not p.enabled:
        result = {
            "enabled": False,
            "epsilon": math.inf,
            "delta": None,
            "hospitals": {},
            "budget": None,
            "within_budget": True,
        }
        write_json(result, outputs["privacy"])
        log.info("privacy disabled: no DP run to account for")
        return result
    runs = read_json(Path(inputs["federated"]) / ROUNDS_FILE)
    dp_run = runs.get("federated_dp")
    if not dp_run:
        raise ValueError(f"{inputs['federated']}/{ROUNDS_FILE} has no 'federated_dp' run")
    hospitals: dict[str, Any] = {}
    per_patient = examples_per_patient(
        cfg, Path(inputs["partitions"]), sorted(dp_run["dp_history"])
    )
    for hospital, history in sorted(dp_run["dp_history"].items()):
        eps = {
            name: epsilon_from_history(history, delta=p.delta, accountant=name)
            for name in p.accountants
        }
        hospitals[hospital] = {
            "epsilon": eps[p.accountant],
            "by_accountant": eps,
            "steps": history_steps(history),
            "noise_multiplier": history[-1][0] if history else None,
            "sample_rate": history[-1][1] if history else None,
            "examples_per_patient": per_patient[hospital],
            "patient_level": _patient_level(eps[p.accountant], p.delta, per_patient[hospital]),
        }
        log.info(
            "%s: ε=%.3f at δ=%g (%s); per patient (up to %s examples): ε=%.3f, δ=%.3g",
            hospital,
            hospitals[hospital]["epsilon"],
            p.delta,
            ", ".join(f"{k} {v:.3f}" for k, v in eps.items()),
            per_patient[hospital] or 1,
            hospitals[hospital]["patient_level"]["epsilon"],
            hospitals[hospital]["patient_level"]["delta"],
        )
    epsilon = max(h["epsilon"] for h in hospitals.values())
    counted = [k for k in per_patient.values() if k is not None]
    result = {
        "enabled": True,
        "delta": p.delta,
        "epsilon": epsilon,
        "accountant": p.accountant,
        "budget": p.epsilon_budget,
        "within_budget": epsilon <= p.epsilon_budget,
        "rounds": dp_run.get("rounds_completed"),
        # each bound is the max over hospitals: every hospital's guarantee implies it
        "patient_level": {
            "examples_per_patient": max(counted) if counted else None,
            "epsilon": max(h["patient_level"]["epsilon"] for h in hospitals.values()),
            "delta": max(h["patient_level"]["delta"] for h in hospitals.values()),
        },
        "hospitals": hospitals,
    }
    write_json(result, outputs["privacy"])
    if not result["within_budget"]:
        worst = max(hospitals, key=lambda h: hospitals[h]["epsilon"])
        raise PrivacyBudgetExceeded(
            f"ε={epsilon:.3f} (hospital {worst!r}) exceeds privacy.epsilon_budget="
            f"{p.epsilon_budget}"
        )
    return result
