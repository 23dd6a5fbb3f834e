"""What SecAgg+ costs: seconds and bytes per round with secure aggregation off and on.

Both variants run in one local federation (TLS, enrolled SuperNodes, warm ClientApps) on the
same data, interleaved (off, on, off, on), for R1 and R2 rounds each:

* seconds per round: the ServerApp's own per-round times (``run.json``), median over every
  round of every run of that variant; for SecAgg+ also the median time of each protocol
  stage (push to last reply, as the server's grid sees it);
* bytes per round per hospital: Flower's per-run network traffic at the SuperLink
  (``flwr ls``), ``(bytes(R2) - bytes(R1)) / (R2 - R1) / hospitals``, which removes the
  per-run constant (app, roll call, final evaluation).

Update screening is off in both (SecAgg+ cannot screen), so only secure aggregation differs.

    python -m benchmarks secure_aggregation [--profile default] [--rounds 2 4] [--repeats 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import (
    make_config,
    md_table,
    median_spread,
    prepare_data,
    wait_for_quiet,
    write_result,
)
from privfed.config import PrivFedConfig
from privfed.federated.launcher import LocalFederation, RunSpec
from privfed.federated.secagg import STAGES
from privfed.logs import setup_logging
from privfed.partitions import hospital_dirs

VARIANTS = ("off", "on")


def _config(profile: str, rounds: int, secure: bool) -> PrivFedConfig:
    return make_config(
        profile,
        {
            "train_federated": {
                "rounds": rounds,
                "screen_updates": False,
                "secure_aggregation": {"enabled": secure},
            },
            "privacy": {"enabled": False},
            "register_model": {"candidate": "federated"},
        },
    )


def summarize(runs: dict[str, list[dict[str, Any]]], hospitals: int) -> dict[str, Any]:
    """Per variant: per-round seconds, bytes per round per hospital, SecAgg+ stage seconds."""
    out: dict[str, Any] = {}
    for variant, rows in runs.items():
        per_round = [s for row in rows for s in row["per_round_s"]]
        by_rounds: dict[int, list[int]] = {}
        for row in rows:
            if row.get("total_bytes") is not None:
                by_rounds.setdefault(row["rounds"], []).append(row["total_bytes"])
        entry: dict[str, Any] = {"per_round_s": median_spread(per_round)}
        if len(by_rounds) >= 2:
            lo, hi = min(by_rounds), max(by_rounds)
            slope = statistics.median(by_rounds[hi]) - statistics.median(by_rounds[lo])
            entry["bytes_per_round_per_hospital"] = slope / (hi - lo) / hospitals
        secure_rounds = [r for row in rows for r in row.get("secagg", [])]
        if secure_rounds:
            entry["stage_s"] = {
                stage: median_spread(r["stages"][stage] for r in secure_rounds) for stage in STAGES
            }
        out[variant] = entry
    off, on = out["off"], out["on"]
    out["seconds_ratio"] = on["per_round_s"]["median"] / off["per_round_s"]["median"]
    if "bytes_per_round_per_hospital" in off and "bytes_per_round_per_hospital" in on:
        out["bytes_ratio"] = (
            on["bytes_per_round_per_hospital"] / off["bytes_per_round_per_hospital"]
        )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks secure_aggregation")
    parser.add_argument("--profile", default="default")
    parser.add_argument("--rounds", type=int, nargs=2, default=[2, 4])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    setup_logging("WARNING")
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    base = _config(args.profile, min(args.rounds), False)
    with tempfile.TemporaryDirectory(prefix="privfed-bench-secagg-") as tmp:
        work = Path(tmp)
        parts = prepare_data(base, work / "data")
        with LocalFederation(base, hospital_dirs(parts), work / "fed") as federation:
            for repeat in range(args.repeats):
                for rounds in args.rounds:
                    for variant in VARIANTS:  # interleaved so drifting load hits both
                        federation.cfg = _config(args.profile, rounds, variant == "on")
                        load = wait_for_quiet()
                        name = f"{variant}-r{rounds}-{repeat}"
                        run = federation.run(RunSpec(name=name, out_dir=work / name, dp=False))
                        traffic = run["flower"].get("network-traffic") or {}
                        row = {
                            "rounds": rounds,
                            "per_round_s": run["seconds"]["per_round"],
                            "wall_s": run["wall_seconds"],
                            "total_bytes": traffic.get("total-bytes"),
                            "traffic": traffic,
                            "secagg": [
                                {
                                    "stages": {
                                        s: v["seconds"] for s, v in r["secagg"]["stages"].items()
                                    },
                                    "plaintext_arrays": r["secagg"]["plaintext_arrays"],
                                    "error_bound": r["secagg"]["error_bound"],
                                }
                                for r in run["rounds"][1:]
                                if "secagg" in r
                            ],
                            "load": load,
                        }
                        runs[variant].append(row)
                        print(name, {k: row[k] for k in ("per_round_s", "total_bytes")})
    hospitals = base.base.num_hospitals
    summary = summarize(runs, hospitals)
    rows = []
    for variant in VARIANTS:
        s = summary[variant]
        per_round = s["per_round_s"]
        kib = s.get("bytes_per_round_per_hospital")
        rows.append(
            [
                variant,
                f"{per_round['median']:.2f}",
                f"{per_round['min']:.2f}-{per_round['max']:.2f}",
                per_round["n"],
                "—" if kib is None else f"{kib / 1024:.1f}",
            ]
        )
    stage_cells = ", ".join(
        f"{stage} {v['median']:.2f}" for stage, v in summary["on"].get("stage_s", {}).items()
    )
    ratio_bytes = summary.get("bytes_ratio")
    markdown = (
        f"SecAgg+ off vs on ({args.profile} profile, {hospitals} hospitals, rounds "
        f"{args.rounds[0]} and {args.rounds[1]}, {args.repeats} repeat(s), screening off in "
        "both)\n\n"
        + md_table(
            [
                "secure aggregation",
                "per-round median (s)",
                "min-max (s)",
                "rounds",
                "KiB per round per hospital (Flower)",
            ],
            rows,
        )
        + f"\nSecAgg+ costs {summary['seconds_ratio']:.2f}x the seconds per round"
        + ("" if ratio_bytes is None else f" and {ratio_bytes:.2f}x the bytes")
        + f". Median seconds per SecAgg+ stage: {stage_cells}.\n"
    )
    write_result(
        "secure_aggregation",
        {
            "profile": args.profile,
            "rounds": args.rounds,
            "repeats": args.repeats,
            "hospitals": hospitals,
            "runs": runs,
            "summary": summary,
        },
        markdown,
        f"python -m benchmarks secure_aggregation --profile {args.profile} --rounds "
        f"{args.rounds[0]} {args.rounds[1]} --repeats {args.repeats}",
    )


if __name__ == "__main__":
    main()
