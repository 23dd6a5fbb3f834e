"""Per-round latency of the local Flower federation: stock per-message ClientApp processes vs
PrivFed's warm (forking) executor, measured side by side on the same data in one run.

    python -m benchmarks federation_latency [--rounds 4] [--repeats 2] [--profile tiny]

Writes benchmarks/results/federation_latency.json and .md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import make_config, prepare_data, wait_for_quiet, write_result
from privfed.config import PrivFedConfig
from privfed.logs import setup_logging
from privfed.stages import train_federated


def _config(profile: str, rounds: int, launcher: str) -> PrivFedConfig:
    return make_config(
        profile,
        {
            "train_federated": {
                "rounds": rounds,
                "clientapp_launcher": launcher,
                # isolate the ClientApp launcher: Flower's own SuperNode waits
                "supernode_poll_s": None,
            },
            "privacy": {"enabled": False},
            "register_model": {"candidate": "federated"},
        },
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks federation_latency")
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    setup_logging("WARNING")
    launchers = ("subprocess", "warm")
    rows: dict[str, list[dict]] = {name: [] for name in launchers}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        parts = prepare_data(_config(args.profile, args.rounds, "warm"), work)
        for repeat in range(args.repeats):
            for launcher in launchers:  # interleaved so drift hits both equally
                cfg = _config(args.profile, args.rounds, launcher)
                load = wait_for_quiet()
                t0 = time.monotonic()
                metrics = train_federated.run(
                    cfg,
                    {"partitions": parts},
                    {"models": work / f"m-{launcher}-{repeat}", "metrics": work / "m.json"},
                )
                run = metrics["runs"]["federated"]
                rows[launcher].append(
                    {
                        "stage_seconds": time.monotonic() - t0,
                        "run_wall_seconds": run["wall_seconds"],
                        "per_round_seconds_median": run["per_round_seconds_median"],
                        "load": load,
                    }
                )
                print(launcher, rows[launcher][-1], flush=True)
    summary = {
        name: {
            "per_round_median_s": statistics.median(r["per_round_seconds_median"] for r in rs),
            "per_round_spread_s": [
                min(r["per_round_seconds_median"] for r in rs),
                max(r["per_round_seconds_median"] for r in rs),
            ],
            "stage_median_s": statistics.median(r["stage_seconds"] for r in rs),
        }
        for name, rs in rows.items()
    }
    ratio = summary["subprocess"]["per_round_median_s"] / summary["warm"]["per_round_median_s"]
    result = {
        "profile": args.profile,
        "rounds": args.rounds,
        "repeats": args.repeats,
        "hospitals": cfg.base.num_hospitals,
        "runs": rows,
        "summary": summary,
        "speedup_per_round": ratio,
    }
    table = [
        "| ClientApp launcher | per-round median (s) | min-max (s) | stage wall median (s) |",
        "|---|---|---|---|",
    ]
    for name, s in summary.items():
        table.append(
            f"| {name} | {s['per_round_median_s']:.2f} | "
            f"{s['per_round_spread_s'][0]:.2f}-{s['per_round_spread_s'][1]:.2f} | "
            f"{s['stage_median_s']:.1f} |"
        )
    write_result(
        "federation_latency",
        result,
        "\n".join(table) + f"\n\nwarm is {ratio:.2f}x faster per round "
        f"({args.profile} profile, {args.rounds} rounds, {args.repeats} repeats)\n",
        f"python -m benchmarks federation_latency --profile {args.profile} --rounds "
        f"{args.rounds} --repeats {args.repeats}",
    )


if __name__ == "__main__":
    main()
