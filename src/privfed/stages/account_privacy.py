"""Stage ``account_privacy``: ε(δ) per hospital for the whole DP federated run.

Reads each hospital's accountant history (every round's noise multiplier, sample rate and step
count, carried across rounds) and composes it with each accountant in ``privacy.accountants``.
The reported ε of a hospital is that of ``privacy.accountant``, the one that calibrated the
noise (PRV by default: Opacus' PRV accountant returns the upper end of its error bound, so it
is a guarantee, and a tighter one than RDP's); the others are reported beside it. The run's ε
is the largest over hospitals (never an average: the weakest guarantee is the one a patient
gets).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from privfed.config import PrivFedConfig
from privfed.federated import ROUNDS_FILE
from privfed.io import read_json, write_json
from privfed.privacy import epsilon_from_history, history_steps
from privfed.stages.spec import StageSpec

log = logging.getLogger(__name__)

SPEC = StageSpec(
    params=("base.profile", "privacy", "profiles"),
    inputs={"federated": "models/federated"},
    outputs={"privacy": "metrics/privacy.json"},
)


class PrivacyBudgetExceeded(RuntimeError):
    """ε of at least one hospital is above ``privacy.epsilon_budget``."""


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
        }
        log.info(
            "%s: ε=%.3f at δ=%g (%s)",
            hospital,
            hospitals[hospital]["epsilon"],
            p.delta,
            ", ".join(f"{k} {v:.3f}" for k, v in eps.items()),
        )
    epsilon = max(h["epsilon"] for h in hospitals.values())
    result = {
        "enabled": True,
        "delta": p.delta,
        "epsilon": epsilon,
        "accountant": p.accountant,
        "budget": p.epsilon_budget,
        "within_budget": epsilon <= p.epsilon_budget,
        "rounds": dp_run.get("rounds_completed"),
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
