"""Figure 4: 3 to 20 hospitals on one machine: time per round and memory of the federation.

For each hospital count N, one local federation (SuperLink, N SuperNodes, N warm executors and
their forked ClientApp children, the ServerApp and ``flwr run``) trains R rounds (non-DP).
A sampler thread sums the resident memory (RSS) of the whole federation process tree (every
descendant of this benchmark process) every ``--interval`` seconds and keeps the peak, plus
the peak per hospital (SuperNode + executor + its children). Summed RSS counts pages that
forked children share with their executor once per process, so it overstates the real use;
PSS (shared pages split among their sharers) and the drop in the machine's available
memory over the same run are reported beside it.

    python -m benchmarks scale [--profile tiny] [--hospitals 3 5 10 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import threading
import time
from pathlib import Path

import psutil

from benchmarks.common import (
    fit_fixed_proportional,
    make_config,
    md_table,
    prepare_data,
    wait_for_quiet,
    wait_ready,
    write_result,
)
from privfed.federated.launcher import LocalFederation, RunSpec
from privfed.partitions import hospital_dirs


class MemorySampler(threading.Thread):
    """Peak summed RSS of this process's descendants, per hospital and in total."""

    def __init__(self, federation: LocalFederation, interval: float) -> None:
        super().__init__(daemon=True)
        self.federation = federation
        self.interval = interval
        self.stop_event = threading.Event()
        self.peak_total = 0
        self.peak_total_pss = 0
        self.peak_per_hospital_pss: dict[str, int] = {}
        self.peak_per_hospital: dict[str, int] = {}
        self.peak_by_kind: dict[str, int] = {}
        self.baseline_available = psutil.virtual_memory().available
        self.min_available = self.baseline_available
        self.samples = 0

    @staticmethod
    def _mem(proc: psutil.Process) -> tuple[int, int]:
        """RSS and PSS (shared pages split among their sharers) of one process."""
        info = proc.memory_full_info()
        return info.rss, getattr(info, "pss", info.rss)

    def _tree(self, proc: psutil.Process) -> tuple[int, int]:
        rss = pss = 0
        for p in [proc, *proc.children(recursive=True)]:
            try:
                r, q = self._mem(p)
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue
            rss, pss = rss + r, pss + q
        return rss, pss

    def sample(self) -> None:
        me = psutil.Process()
        rss = pss = 0
        for child in me.children(recursive=True):
            try:
                r, q = self._mem(child)
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue
            rss, pss = rss + r, pss + q
        self.peak_total = max(self.peak_total, rss)
        self.peak_total_pss = max(self.peak_total_pss, pss)
        kinds: dict[str, int] = {}
        per: dict[str, int] = {}
        per_pss: dict[str, int] = {}
        hospitals = [d.name for d in self.federation.hospital_dirs]
        for name, popen in list(self.federation.processes.procs):
            try:
                r, q = self._tree(psutil.Process(popen.pid))
            except psutil.NoSuchProcess:
                continue
            kind, _, hospital = name.partition("-")
            if name == "warm-template":
                # every executor (and its tasks) is forked from the one template, beside the
                # ServerApp executor: its tree's memory is shared out evenly per hospital
                kinds[kind] = kinds.get(kind, 0) + r
                for h in hospitals:
                    per[h] = per.get(h, 0) + r // len(hospitals)
                    per_pss[h] = per_pss.get(h, 0) + q // len(hospitals)
                continue
            kinds[kind] = kinds.get(kind, 0) + r
            if hospital:
                per[hospital] = per.get(hospital, 0) + r
                per_pss[hospital] = per_pss.get(hospital, 0) + q
        for k, v in kinds.items():
            self.peak_by_kind[k] = max(self.peak_by_kind.get(k, 0), v)
        for h, v in per.items():
            self.peak_per_hospital[h] = max(self.peak_per_hospital.get(h, 0), v)
        for h, v in per_pss.items():
            self.peak_per_hospital_pss[h] = max(self.peak_per_hospital_pss.get(h, 0), v)
        self.min_available = min(self.min_available, psutil.virtual_memory().available)
        self.samples += 1

    def run(self) -> None:
        while not self.stop_event.is_set():
            with contextlib.suppress(psutil.Error):
                self.sample()
            self.stop_event.wait(self.interval)


def idle_cpu_cores(seconds: float) -> float:
    """CPU cores the started federation burns while no run is active (polling loops)."""
    procs = psutil.Process().children(recursive=True)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.cpu_percent(None)
    time.sleep(seconds)
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.cpu_percent(None)
    return total / 100.0


def measure(profile: str, hospitals: int, rounds: int, tmp: Path, interval: float) -> dict:
    cfg = make_config(
        profile,
        {
            "base": {"num_hospitals": hospitals},
            "privacy": {"enabled": False},
            "register_model": {"candidate": "federated"},
            # measured with Flower's own SuperNode waits (before the 0.2 s cap became the
            # default); the cap adds idle pulls, which matter most at 20 hospitals
            "train_federated": {"rounds": rounds, "supernode_poll_s": None},
        },
    )
    work = tmp / f"h{hospitals}"
    parts = prepare_data(cfg, work / "data")
    load = wait_for_quiet()
    federation = LocalFederation(cfg, hospital_dirs(parts), work / "fed")
    sampler = MemorySampler(federation, interval)
    t0 = time.monotonic()
    sampler.start()
    try:
        with federation:
            startup = wait_ready(federation)
            idle_cores = idle_cpu_cores(seconds=5.0)
            t_run = time.monotonic()
            run = federation.run(RunSpec(name="scale", out_dir=work / "run", dp=False))
            wall = time.monotonic() - t_run
    finally:
        sampler.stop_event.set()
        sampler.join()
    per_round = run["seconds"]["per_round"]
    samples = sum(
        v["num_examples"] for v in run["rounds"][1]["train"].values()
    )  # training samples per round
    per_h = list(sampler.peak_per_hospital.values())
    per_h_pss = list(sampler.peak_per_hospital_pss.values())
    row = {
        "hospitals": hospitals,
        "load": load,
        "train_samples_per_round": samples,
        "startup_s": startup,
        "idle_cpu_cores": idle_cores,
        "run_wall_s": wall,
        "total_s": time.monotonic() - t0,
        "per_round_s": per_round,
        "per_round_median_s": statistics.median(per_round),
        "peak_tree_rss_bytes": sampler.peak_total,
        "peak_tree_pss_bytes": sampler.peak_total_pss,
        "per_hospital_peak_pss_bytes": {
            "median": statistics.median(per_h_pss) if per_h_pss else None,
            "max": max(per_h_pss) if per_h_pss else None,
        },
        "peak_rss_by_kind_bytes": sampler.peak_by_kind,
        "per_hospital_peak_rss_bytes": {
            "median": statistics.median(per_h) if per_h else None,
            "max": max(per_h) if per_h else None,
        },
        "available_memory_drop_bytes": sampler.baseline_available - sampler.min_available,
        "memory_samples": sampler.samples,
    }
    print(
        f"  N={hospitals}: round {row['per_round_median_s']:.2f} s, tree RSS "
        f"{sampler.peak_total / 2**30:.2f} GiB, startup {startup:.1f} s",
        flush=True,
    )
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks scale")
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--hospitals", type=int, nargs="+", default=[3, 5, 10, 20])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="privfed-bench-scale-") as tmp:
        for n in args.hospitals:
            rows.append(measure(args.profile, n, args.rounds, Path(tmp), args.interval))
    base = rows[0]
    for row in rows:
        # growth of round time relative to growth of total samples (≤ 1: no worse than linear)
        row["time_growth"] = row["per_round_median_s"] / base["per_round_median_s"]
        row["sample_growth"] = row["train_samples_per_round"] / base["train_samples_per_round"]
    fit = (
        fit_fixed_proportional(
            [r["train_samples_per_round"] for r in rows], [r["per_round_median_s"] for r in rows]
        )
        if len(rows) >= 2
        else None
    )
    gib = 2**30
    table = md_table(
        [
            "hospitals",
            "train samples/round",
            "s/round (median)",
            "round-time growth",
            "sample growth",
            "start-up s",
            "idle CPU (cores)",
            "peak federation RSS sum (GiB)",
            "peak federation PSS sum (GiB)",
            "available-memory drop (GiB)",
            "per-hospital RSS median / max (MiB)",
            "per-hospital PSS median / max (MiB)",
        ],
        [
            [
                r["hospitals"],
                r["train_samples_per_round"],
                f"{r['per_round_median_s']:.2f}",
                f"{r['time_growth']:.2f}×",
                f"{r['sample_growth']:.2f}×",
                f"{r['startup_s']:.1f}",
                f"{r['idle_cpu_cores']:.2f}",
                f"{r['peak_tree_rss_bytes'] / gib:.2f}",
                f"{r['peak_tree_pss_bytes'] / gib:.2f}",
                f"{r['available_memory_drop_bytes'] / gib:.2f}",
                f"{r['per_hospital_peak_rss_bytes']['median'] / 2**20:.0f} / "
                f"{r['per_hospital_peak_rss_bytes']['max'] / 2**20:.0f}",
                f"{r['per_hospital_peak_pss_bytes']['median'] / 2**20:.0f} / "
                f"{r['per_hospital_peak_pss_bytes']['max'] / 2**20:.0f}",
            ]
            for r in rows
        ],
    )
    if fit:
        table += (
            f"\nLinear fit: s/round = {fit['fixed_s']:.2f} + "
            f"{fit['factor'] * 1000:.2f} ms × samples (R² {fit['r2']:.2f})\n"
        )
    write_result(
        "scale",
        {"profile": args.profile, "rounds": args.rounds, "rows": rows, "fit": fit},
        f"Scale ({args.profile} profile, {args.rounds} rounds, non-DP, 1 machine with "
        f"{psutil.cpu_count()} cores and {psutil.virtual_memory().total / gib:.0f} GiB)\n\n"
        + table,
        f"python -m benchmarks scale --profile {args.profile} --hospitals "
        + " ".join(map(str, args.hospitals))
        + f" --rounds {args.rounds}",
    )


if __name__ == "__main__":
    main()
