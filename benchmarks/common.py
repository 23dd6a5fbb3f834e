"""Shared pieces of the benchmark harness: configs, data, load gating, statistics, results.

Every benchmark measures ratios side by side within one run on one machine, so the helpers here
are about making those runs comparable (same data, same config overlay, a quiet machine) and
about writing results the same way (``benchmarks/results/<name>.json`` + ``.md``).
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import psutil
import yaml

from privfed.config import PrivFedConfig, config_from_dict, deep_merge
from privfed.io import write_json, write_text

__all__ = [
    "ROOT",
    "RESULTS",
    "make_config",
    "prepare_data",
    "wait_for_quiet",
    "other_cpu_cores",
    "median_spread",
    "fit_fixed_proportional",
    "machine_info",
    "write_result",
    "md_table",
    "tree_rss_bytes",
]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def make_config(profile: str, overrides: dict[str, dict[str, Any]] | None = None) -> PrivFedConfig:
    """params.yaml with ``profile`` selected and ``overrides`` laid over that profile's overlay.

    Overrides go into the profile overlay (not the sections) because a key the profile sets wins
    over its section: this way an override always takes effect. They merge deeply, so
    ``{"model": {"notes": {"mode": "full"}}}`` keeps the profile's other ``model.notes`` keys.
    """
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    overrides = dict(overrides or {})
    raw["base"] = deep_merge(raw["base"], {**overrides.pop("base", {}), "profile": profile})
    profiles = raw.setdefault("profiles", {})
    profiles[profile] = deep_merge(profiles.get(profile) or {}, overrides)
    return config_from_dict(raw)


def prepare_data(cfg: PrivFedConfig, work: Path) -> Path:
    """Generate, ingest, validate and partition the task's data; return the partitions."""
    from privfed.stages import run_data_stages

    return run_data_stages(cfg, work)


def _own_tree() -> set[int]:
    me = psutil.Process()
    pids = {me.pid}
    for child in me.children(recursive=True):
        pids.add(child.pid)
    return pids


def other_cpu_cores(interval: float = 1.0) -> float:
    """CPU cores in use by processes outside this benchmark's process tree (sampled)."""
    own = _own_tree()
    procs = []
    for proc in psutil.process_iter():
        if proc.pid in own:
            continue
        try:
            proc.cpu_percent(None)
            procs.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    time.sleep(interval)
    total = 0.0
    for proc in procs:
        try:
            total += proc.cpu_percent(None)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total / 100.0


def wait_for_quiet(
    *, max_load: float = 1.5, max_other_cores: float = 0.5, max_wait_s: float | None = None
) -> dict[str, float]:
    """Wait (bounded) while other processes load the machine; return the load seen at start.

    The 1-minute load average also counts this benchmark's own, just-finished work, so the gate
    is: load average above ``max_load`` *and* other processes using more than
    ``max_other_cores`` right now. The returned record goes into the results either way.
    ``PRIVFED_BENCH_MAX_WAIT_S`` bounds the wait (default 300 s; 0 for smoke runs).
    """
    if max_wait_s is None:
        max_wait_s = float(os.environ.get("PRIVFED_BENCH_MAX_WAIT_S", "300"))
    t0 = time.monotonic()
    while True:
        load1 = os.getloadavg()[0]
        other = other_cpu_cores()
        waited = time.monotonic() - t0
        if (load1 <= max_load or other <= max_other_cores) or waited >= max_wait_s:
            return {"load1": round(load1, 2), "other_cores": round(other, 2), "waited_s": waited}
        print(f"  machine busy (load {load1:.2f}, others {other:.2f} cores): waiting", flush=True)
        time.sleep(10)


def median_spread(values: Iterable[float]) -> dict[str, float]:
    """Median, min, max and count: what each table cell reports."""
    xs = sorted(float(v) for v in values)
    if not xs:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    return {"median": statistics.median(xs), "min": xs[0], "max": xs[-1], "n": len(xs)}


def fit_fixed_proportional(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Least-squares ``y = fixed + factor * x`` over two or more workload sizes.

    ``x`` is the centralized compute time of one round's workload and ``y`` the federated
    round time: ``fixed`` is the per-round latency federation adds regardless of work and
    ``factor`` how much slower each unit of work runs federated.
    """
    if len(x) != len(y) or len(set(x)) < 2:
        raise ValueError(f"need two or more distinct workload sizes, got x={list(x)}")
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxx = sum((a - mx) ** 2 for a in x)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    factor = sxy / sxx
    fixed = my - factor * mx
    ss_res = sum((b - (fixed + factor * a)) ** 2 for a, b in zip(x, y, strict=True))
    ss_tot = sum((b - my) ** 2 for b in y)
    return {"fixed_s": fixed, "factor": factor, "r2": 1.0 - ss_res / ss_tot if ss_tot else 1.0}


def tree_rss_bytes(pids: Iterable[int]) -> tuple[int, dict[str, int]]:
    """Summed RSS of these processes and all their descendants, and RSS per process name."""
    seen: dict[int, psutil.Process] = {}
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            seen[proc.pid] = proc
            for child in proc.children(recursive=True):
                seen[child.pid] = child
        except psutil.NoSuchProcess:
            continue
    total, per = 0, {}
    for pid, proc in seen.items():
        try:
            rss = proc.memory_info().rss
            name = " ".join(proc.cmdline()[:3])[-60:]
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        total += rss
        per[f"{pid}:{name}"] = rss
    return total, per


def _cpu_model() -> str:
    """``model name`` of /proc/cpuinfo, or the platform's processor string elsewhere."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def machine_info() -> dict[str, Any]:
    import torch

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        # the CPU and the kernels torch picks for it: a GAN's figures differ between CPUs
        "cpu_model": _cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "git_commit": commit,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_result(name: str, result: dict[str, Any], markdown: str, command: str) -> Path:
    """``benchmarks/results/<name>.json`` (with machine info) and ``<name>.md`` (the table)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": name, "command": command, "machine": machine_info(), **result}
    write_json(result, RESULTS / f"{name}.json")
    write_text(f"{markdown.rstrip()}\n\nReproduce: `{command}`\n", RESULTS / f"{name}.md")
    print(markdown, flush=True)
    return RESULTS / f"{name}.json"


def wait_ready(federation: Any, timeout: float = 600.0) -> float:
    """Block until every SuperNode has registered and every warm executor has warmed up.

    ``LocalFederation.start`` returns once the processes exist; their start-up (imports,
    registration, warm-up) otherwise hides inside the first run. Reads the process logs.
    Returns the seconds waited.
    """
    t0 = time.monotonic()
    names = [d.name for d in federation.hospital_dirs]
    warm = federation.cfg.train_federated.clientapp_launcher == "warm"
    while time.monotonic() - t0 < timeout:
        done = True
        for name in names:
            node = federation.log_dir / f"supernode-{name}.log"
            if not node.is_file() or "SuperNode ID" not in node.read_text(errors="replace"):
                done = False
                break
            if warm:
                ex = federation.log_dir / f"executor-{name}.log"
                if not ex.is_file() or "executor ready" not in ex.read_text(errors="replace"):
                    done = False
                    break
        if done:
            return time.monotonic() - t0
        time.sleep(0.2)
    raise TimeoutError(f"federation not ready after {timeout:.0f} s")
