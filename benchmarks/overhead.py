"""Figure 1: federation overhead against centralized training over the same samples and epochs.

For each local-epoch count E (the workload size) one run trains R rounds × E local epochs at N
hospitals through the real local federation (non-DP), and centralized training runs R × E
epochs over the pooled training data of the same hospitals, right before it (interleaved, same
process, same machine). Federation time is broken down into: process start (SuperLink,
SuperNodes, warm executors), run start (ServerApp launch), per round the slowest hospital's
data load, (de)serialization, validation and training, the server's aggregation, and the rest
(transport and polling). A least-squares fit over the workload sizes of

    federated seconds per round = fixed + factor × centralized seconds per round

gives the fixed per-round latency and the proportional factor. Two federations are compared:
``stock`` (Flower's own SuperNode waits: ``train_federated.supernode_poll_s: null``) and
``fastpoll`` (the product default: those waits capped at ``supernode_poll_s``, see
:mod:`privfed.federated.supernode`).

    python -m benchmarks federation_overhead [--profile default] [--epochs 2 6] [--repeats 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    RESULTS,
    fit_fixed_proportional,
    make_config,
    md_table,
    median_spread,
    prepare_data,
    wait_for_quiet,
    wait_ready,
    write_result,
)
from privfed.config import PrivFedConfig, resolved_config
from privfed.federated.launcher import LocalFederation, RunSpec
from privfed.partitions import hospital_dirs, split_dirs
from privfed.tasks import get_task
from privfed.training import train_with_config

PHASES = ("load_s", "deserialize_s", "validate_s", "train_s", "serialize_s")


def _with_epochs(cfg: PrivFedConfig, epochs: int) -> PrivFedConfig:
    fed = cfg.train_federated.model_copy(update={"local_epochs": epochs})
    return cfg.model_copy(update={"train_federated": fed})


def centralized_seconds(cfg: PrivFedConfig, parts: Path, epochs: int) -> dict[str, float]:
    """Plain centralized script: load the pooled training data, train ``epochs`` epochs.

    Single-threaded, like each hospital's training: with torch's default 2 threads, 8 epochs
    took 138 s instead of 11 s while other sessions kept this shared 2-core machine busy
    (load 9-11; OpenMP's threads wait on each other when one is descheduled), which made the
    reference, not the federation, the thing measured.
    """
    import torch

    task = get_task(cfg.base.task, cfg)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t0 = time.perf_counter()
        data = task.load_dataset(split_dirs(hospital_dirs(parts), "train"))
        t1 = time.perf_counter()
        model = task.build_model()
        train_with_config(task, model, data, cfg, epochs=epochs, seed=cfg.base.seed, label="bench")
        t2 = time.perf_counter()
    finally:
        torch.set_num_threads(threads)
    return {"load_s": t1 - t0, "train_s": t2 - t1, "total_s": t2 - t0, "samples": len(data)}


def round_breakdown(run: dict[str, Any]) -> dict[str, float]:
    """Sum over rounds of the critical path: slowest hospital's phases, aggregation, the rest."""
    out = {k: 0.0 for k in (*PHASES, "aggregate_s", "transport_and_polling_s", "rounds_s")}
    for row in run["rounds"][1:]:
        if "seconds" not in row:
            continue
        hospitals = [h.get("seconds", {}) for h in row["train"].values()]
        slowest = max(hospitals, key=lambda s: sum(s.get(k, 0.0) for k in PHASES))
        client = 0.0
        for key in PHASES:
            value = float(slowest.get(key, 0.0))
            out[key] += value
            client += value
        aggregate = float(row.get("aggregate_seconds", 0.0))
        out["aggregate_s"] += aggregate
        out["transport_and_polling_s"] += row["seconds"] - client - aggregate
        out["rounds_s"] += row["seconds"]
    return out


def _federation(variant: str, cfg: PrivFedConfig, parts: Path, work: Path) -> LocalFederation:
    """``stock``: Flower's SuperNode waits; ``fastpoll``: capped (the product default, 0.2 s)."""
    data = cfg.model_dump(mode="json")
    data["train_federated"]["supernode_poll_s"] = None if variant == "stock" else 0.2
    return LocalFederation(resolved_config(data), hospital_dirs(parts), work)


def _measure(
    variant: str, cfg: PrivFedConfig, parts: Path, work: Path, epochs: list[int], rep: int
) -> list[dict[str, Any]]:
    rows = []
    load = wait_for_quiet()
    t0 = time.monotonic()
    federation = _federation(variant, cfg, parts, work / f"{variant}-{rep}")
    federation.__enter__()
    try:
        wait_ready(federation)
        startup = time.monotonic() - t0
        for e in epochs:
            run_cfg = _with_epochs(cfg, e)
            central = centralized_seconds(run_cfg, parts, cfg.train_federated.rounds * e)
            federation.cfg = run_cfg
            t_run = time.monotonic()
            name = f"{variant}-e{e}-r{rep}"
            run = federation.run(RunSpec(name=name, out_dir=work / name, dp=False))
            wall = time.monotonic() - t_run
            rounds = run["seconds"]["per_round"]
            rows.append(
                {
                    "variant": variant,
                    "repeat": rep,
                    "local_epochs": e,
                    "rounds": len(rounds),
                    "load": load,
                    "process_start_s": startup,
                    "run_wall_s": wall,
                    "run_start_s": wall - run["seconds"]["total"],
                    "server_total_s": run["seconds"]["total"],
                    "per_round_s": rounds,
                    "per_round_median_s": statistics.median(rounds),
                    "breakdown": round_breakdown(run),
                    "centralized": central,
                    "network_bytes": (run["flower"].get("network-traffic") or {}).get(
                        "total-bytes"
                    ),
                }
            )
            print(
                f"  {name}: round median {rows[-1]['per_round_median_s']:.2f} s, "
                f"centralized {central['train_s']:.2f} s",
                flush=True,
            )
    finally:
        t_stop = time.monotonic()
        federation.__exit__(None, None, None)
        stop = time.monotonic() - t_stop
    for row in rows:
        row["process_stop_s"] = stop
    return rows


def profile_run(cfg: PrivFedConfig, parts: Path, work: Path, out_dir: Path) -> None:
    """One extra stock run under py-spy (not timed): SuperLink, hospital 1's SuperNode, and the
    warm template with everything forked from it (executors, their ClientApp tasks, the
    ServerApp executor and its ServerApps)."""
    from benchmarks.profiling import PySpy

    with _federation("stock", cfg, parts, work / "profiled") as federation:
        wait_ready(federation)
        first = federation.hospital_dirs[0].name
        pids = {
            name: proc.pid
            for name, proc in federation.processes.procs
            if name in ("superlink", f"supernode-{first}", "warm-template")
        }
        with PySpy({f"federation_{k}": v for k, v in pids.items()}, out_dir):
            federation.run(RunSpec(name="profiled", out_dir=work / "profiled-out", dp=False))


def summarize(rows: list[dict[str, Any]], default_epochs: int) -> dict[str, Any]:
    """Per variant: the fit over workload sizes and the whole-stage ratio at the profile's E."""
    out: dict[str, Any] = {}
    for variant in sorted({r["variant"] for r in rows}):
        mine = [r for r in rows if r["variant"] == variant]
        sizes = sorted({r["local_epochs"] for r in mine})
        xs, ys, per_size = [], [], {}
        for e in sizes:
            at = [r for r in mine if r["local_epochs"] == e]
            x = statistics.median(r["centralized"]["train_s"] / r["rounds"] for r in at)
            y = statistics.median(r["per_round_median_s"] for r in at)
            xs.append(x)
            ys.append(y)
            ratio = [
                (r["process_start_s"] + r["run_wall_s"] + r["process_stop_s"])
                / r["centralized"]["total_s"]
                for r in at
            ]
            per_size[e] = {
                "centralized_per_round_s": x,
                "federated_per_round_s": median_spread(r["per_round_median_s"] for r in at),
                "whole_ratio": median_spread(ratio),
                "breakdown_median": {
                    k: statistics.median(r["breakdown"][k] for r in at) for k in at[0]["breakdown"]
                },
                "process_start_s": statistics.median(r["process_start_s"] for r in at),
                "run_start_s": statistics.median(r["run_start_s"] for r in at),
                "process_stop_s": statistics.median(r["process_stop_s"] for r in at),
                "run_wall_s": statistics.median(r["run_wall_s"] for r in at),
                "centralized_total_s": statistics.median(r["centralized"]["total_s"] for r in at),
            }
        out[variant] = {
            "fit": fit_fixed_proportional(xs, ys) if len(set(xs)) >= 2 else None,
            "per_epochs": per_size,
            "default_epochs": default_epochs,
            "start": start_summary(mine),
        }
    return out


def start_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Issue 23 target 2: process start (once per federation's processes) and run start.

    A stage runs two federations (non-DP, then DP) on one set of processes, so the start each
    federation pays there is (process start + 2 × run start) / 2; a lone run pays the sum.
    """
    process = statistics.median({r["repeat"]: r["process_start_s"] for r in rows}.values())
    run = median_spread(r["run_start_s"] for r in rows)
    return {
        "process_start_s": process,
        "run_start_s": run,
        "one_federation_s": process + run["median"],
        "per_federation_of_a_stage_s": (process + 2 * run["median"]) / 2,
    }


def _markdown(summary: dict[str, Any], cfg: PrivFedConfig, repeats: int) -> str:
    rows = []
    for variant, s in summary.items():
        for e, p in s["per_epochs"].items():
            fed = p["federated_per_round_s"]
            ratio = p["whole_ratio"]
            rows.append(
                [
                    variant,
                    e,
                    f"{p['centralized_per_round_s']:.2f}",
                    f"{fed['median']:.2f} ({fed['min']:.2f}-{fed['max']:.2f})",
                    f"{ratio['median']:.2f} ({ratio['min']:.2f}-{ratio['max']:.2f})",
                ]
            )
    text = (
        f"Federated vs centralized ({cfg.base.profile} profile, {cfg.base.num_hospitals} "
        f"hospitals, {cfg.train_federated.rounds} rounds, non-DP; median (min-max) of "
        f"{repeats} repeats)\n\n"
        + md_table(
            [
                "SuperNode",
                "local epochs E",
                "centralized s/round",
                "federated s/round",
                "whole ratio fed/central",
            ],
            rows,
        )
    )
    fit_rows = []
    for variant, s in summary.items():
        if s["fit"]:
            f = s["fit"]
            fit_rows.append(
                [
                    variant,
                    f"{f['fixed_s']:.2f}",
                    f"{f['factor']:.2f}",
                    f"{f['r2']:.3f}",
                ]
            )
    text += "\nFit: federated s/round = fixed + factor × centralized s/round\n\n"
    text += md_table(["SuperNode", "fixed latency (s/round)", "factor", "R²"], fit_rows)
    br_rows = []
    for variant, s in summary.items():
        e = s["default_epochs"]
        p = s["per_epochs"].get(e)
        if not p:
            continue
        b = p["breakdown_median"]
        br_rows.append(
            [
                variant,
                f"{p['process_start_s']:.1f}",
                f"{p['run_start_s']:.1f}",
                f"{b['load_s']:.2f}",
                f"{b['deserialize_s'] + b['serialize_s']:.3f}",
                f"{b['validate_s']:.2f}",
                f"{b['train_s']:.2f}",
                f"{b['aggregate_s']:.3f}",
                f"{b['transport_and_polling_s']:.1f}",
                f"{p['process_stop_s']:.1f}",
                f"{p['process_start_s'] + p['run_wall_s'] + p['process_stop_s']:.1f}",
                f"{p['centralized_total_s']:.1f}",
            ]
        )
    text += (
        f"\nWhere the federated time goes at E={summary[next(iter(summary))]['default_epochs']} "
        "(seconds per whole run, summed over rounds on the slowest hospital's critical path)\n\n"
        + md_table(
            [
                "SuperNode",
                "process start",
                "run start",
                "data load",
                "(de)serialize",
                "validate",
                "train",
                "aggregate",
                "transport+polling",
                "process stop",
                "federated total",
                "centralized total",
            ],
            br_rows,
        )
    )
    start_rows = [
        [
            variant,
            f"{st['process_start_s']:.1f}",
            f"{st['run_start_s']['median']:.2f} ({st['run_start_s']['min']:.2f}-"
            f"{st['run_start_s']['max']:.2f})",
            f"{st['one_federation_s']:.1f}",
            f"{st['per_federation_of_a_stage_s']:.1f}",
        ]
        for variant, s in summary.items()
        if (st := s.get("start"))
    ]
    text += (
        "\nFederation start (seconds; process start: median over repeats, until every SuperNode "
        "registered and every executor warmed up; run start: median (min-max) over every run)\n\n"
        + md_table(
            [
                "SuperNode",
                "process start",
                "run start",
                "one federation alone",
                "per federation of a stage (2 share the processes)",
            ],
            start_rows,
        )
    )
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks federation_overhead")
    parser.add_argument("--profile", default="default")
    parser.add_argument("--epochs", type=int, nargs="+", default=[2, 6])
    parser.add_argument("--rounds", type=int, default=None, help="default: the profile's")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=["stock", "fastpoll"])
    parser.add_argument("--no-pyspy", action="store_true", help="skip the profiled extra run")
    args = parser.parse_args(argv)
    overrides: dict[str, dict[str, Any]] = {
        "privacy": {"enabled": False},
        "register_model": {"candidate": "federated"},
    }
    if args.rounds:
        overrides["train_federated"] = {"rounds": args.rounds}
    cfg = make_config(args.profile, overrides)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="privfed-bench-overhead-") as tmp:
        parts = prepare_data(cfg, Path(tmp) / "data")
        for rep in range(args.repeats):
            variants = args.variants if rep % 2 == 0 else args.variants[::-1]  # A B, B A
            for variant in variants:
                rows += _measure(variant, cfg, parts, Path(tmp), args.epochs, rep)
        if not args.no_pyspy:
            profile_run(cfg, parts, Path(tmp), RESULTS / "profiles")
    summary = summarize(rows, cfg.train_federated.local_epochs)
    write_result(
        "federation_overhead",
        {
            "profile": args.profile,
            "hospitals": cfg.base.num_hospitals,
            "rounds": cfg.train_federated.rounds,
            "epochs": args.epochs,
            "repeats": args.repeats,
            "runs": rows,
            "summary": summary,
        },
        _markdown(summary, cfg, args.repeats),
        f"python -m benchmarks federation_overhead --profile {args.profile} --epochs "
        + " ".join(map(str, args.epochs))
        + f" --repeats {args.repeats}",
    )


if __name__ == "__main__":
    main()
