"""Figure 2: DP-SGD step time and peak memory against plain SGD, on the readmission model.

Modes: ``nondp`` (plain Adam step), ``hooks`` (Opacus' standard per-sample gradients, what
``training.py`` uses), ``ghost`` (Opacus 1.6 fast gradient clipping: ghost norms for Linear
layers, per-sample norms for the rest, then a second backward pass on the reweighted loss) and
``functorch`` (Opacus' ``torch.func`` per-sample gradients: ``vmap`` of each layer's gradient,
issue 23's "torch.func" lever).
Each (mode, repeat) runs in a fresh subprocess so its peak resident memory (``ru_maxrss``) is
its own; on CUDA the peak is ``torch.cuda.max_memory_allocated``. Modes are interleaved
(A B C, A B C, ...). A correctness check confirms that ghost clipping yields the same clipped,
summed gradient as the hooks mode on the same batch (noise off).

    python -m benchmarks privacy_overhead [--profile default] [--steps 60] [--repeats 3]
        [--batch N]

``--batch`` times every mode at N examples per step instead of ``train.batch_size`` (e.g. the
DP-SGD batch ``model.dp_batch_size``, 192, at which DP runs train); results then go to
``results/privacy_overhead_batch<N>.*``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.common import RESULTS, ROOT, make_config, md_table, median_spread, wait_for_quiet
from benchmarks.common import write_result as _write
from privfed.config import PrivFedConfig
from privfed.tasks import get_task
from privfed.training import resolve_device

MODES = ("nondp", "hooks", "ghost", "functorch")


def synthetic_batch(cfg: PrivFedConfig, n: int, seed: int = 0) -> TensorDataset:
    """Random tensors shaped like the task's features (timing does not depend on values)."""
    task = get_task(cfg.base.task, cfg)
    from privfed.tasks.readmission import schema

    g = torch.Generator().manual_seed(seed)
    n_static = 2 + len(schema.COMORBIDITIES) + len(schema.MEDICATIONS)
    assert task.name == "readmission", "figure 2 covers the readmission model"
    return TensorDataset(
        torch.randn(n, len(schema.VITALS), cfg.model.seq_days, generator=g),
        torch.randn(n, len(schema.LABS), cfg.model.seq_weeks, generator=g),
        torch.randn(n, n_static, generator=g),
        torch.randn(n, cfg.generate_data.n_genes, generator=g),
        torch.randint(0, len(schema.LABELS), (n,), generator=g),
    )


def make_private(
    mode: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader,
    *,
    noise_multiplier: float,
    max_grad_norm: float,
    poisson: bool,
) -> tuple[nn.Module, torch.optim.Optimizer, Any, DataLoader]:
    """Opacus-wrap ``model`` for ``mode``; returns (module, optimizer, criterion, loader)."""
    criterion: Any = nn.CrossEntropyLoss()
    if mode == "nondp":
        return model, optimizer, criterion, loader
    from opacus import PrivacyEngine

    engine = PrivacyEngine(accountant="rdp")
    kwargs: dict[str, Any] = dict(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        poisson_sampling=poisson,
    )
    if mode == "ghost":
        module, optimizer, criterion, loader = engine.make_private(
            **kwargs, criterion=criterion, grad_sample_mode="ghost"
        )
    else:
        module, optimizer, loader = engine.make_private(**kwargs, grad_sample_mode=mode)
    return module, optimizer, criterion, loader


def worker(
    mode: str, profile: str, steps: int, warmup: int, threads: int, batch: int | None = None
) -> dict[str, Any]:
    """One mode in this (fresh) process: median step time and peak memory."""
    torch.set_num_threads(threads)
    cfg = make_config(profile)
    device = resolve_device(cfg.base.device)
    task = get_task(cfg.base.task, cfg)
    batch = batch or cfg.train.batch_size
    data = synthetic_batch(cfg, batch * (steps + warmup))
    torch.manual_seed(0)
    model = task.build_model().to(device)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    loader = DataLoader(data, batch_size=batch, shuffle=False)
    module, optimizer, criterion, loader = make_private(
        mode, model, optimizer, loader, noise_multiplier=1.0, max_grad_norm=1.0, poisson=False
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i, (*inputs, y) in enumerate(loader):
        inputs, y = [t.to(device) for t in inputs], y.to(device)
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(module(*inputs), y)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "mode": mode,
        "device": str(device),
        "threads": threads,
        "batch_size": batch,
        "steps": len(times),
        "step_s_median": statistics.median(times),
        "peak_rss_bytes": peak,
        "rss_before_training_bytes": rss_before,
        "cuda_peak_bytes": torch.cuda.max_memory_allocated() if device.type == "cuda" else None,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def ghost_matches_hooks(profile: str, max_grad_norm: float = 0.05) -> dict[str, float]:
    """Same weights, same batch, noise off, SGD lr=1: both modes must take the same step.

    A small ``max_grad_norm`` makes every sample's gradient clipped, so the check exercises
    the clipping itself, not just the unclipped sum.
    """
    cfg = make_config(profile, {"model": {"dropout": 0.0}})
    task = get_task(cfg.base.task, cfg)
    data = synthetic_batch(cfg, cfg.train.batch_size, seed=1)
    steps = {}
    norms = {}
    for mode in ("hooks", "ghost"):
        torch.manual_seed(0)
        model = task.build_model()
        before = [p.detach().clone() for p in model.parameters()]
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        loader = DataLoader(data, batch_size=len(data))
        module, optimizer, criterion, loader = make_private(
            mode,
            model,
            optimizer,
            loader,
            noise_multiplier=0.0,
            max_grad_norm=max_grad_norm,
            poisson=False,
        )
        for *inputs, y in loader:
            optimizer.zero_grad(set_to_none=True)
            criterion(module(*inputs), y).backward()
            optimizer.step()
        steps[mode] = torch.cat(
            [(b - p.detach()).flatten() for b, p in zip(before, model.parameters(), strict=True)]
        )
        norms[mode] = float(steps[mode].norm())
    diff = float((steps["hooks"] - steps["ghost"]).abs().max())
    # every per-sample gradient clipped to C, averaged: the step's norm is at most C
    return {
        "max_abs_diff": diff,
        "step_norm_hooks": norms["hooks"],
        "step_norm_ghost": norms["ghost"],
        "max_grad_norm": max_grad_norm,
        "equal": diff <= 1e-5 * max(1.0, norms["hooks"]),
    }


def torch_profile(mode: str, profile: str, steps: int = 20, threads: int = 1) -> str:
    """torch.profiler table (top ops by self CPU time) of ``steps`` steps in ``mode``."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    torch.set_num_threads(threads)
    cfg = make_config(profile)
    task = get_task(cfg.base.task, cfg)
    data = synthetic_batch(cfg, cfg.train.batch_size * (steps + 3))
    torch.manual_seed(0)
    model = task.build_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    loader = DataLoader(data, batch_size=cfg.train.batch_size)
    module, optimizer, criterion, loader = make_private(
        mode, model, optimizer, loader, noise_multiplier=1.0, max_grad_norm=1.0, poisson=False
    )
    batches = list(loader)
    for *inputs, y in batches[:3]:  # warm up outside the profile
        optimizer.zero_grad(set_to_none=True)
        criterion(module(*inputs), y).backward()
        optimizer.step()
    with tprofile(activities=[ProfilerActivity.CPU]) as prof:
        for *inputs, y in batches[3:]:
            optimizer.zero_grad(set_to_none=True)
            criterion(module(*inputs), y).backward()
            optimizer.step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)


def _spawn(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.privacy",
        "--worker",
        mode,
        "--profile",
        args.profile,
        "--steps",
        str(args.steps),
        "--threads",
        str(args.threads),
        *(["--batch", str(args.batch)] if args.batch else []),
    ]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks privacy_overhead")
    parser.add_argument("--profile", default="default")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="1 = as each hospital trains")
    parser.add_argument("--batch", type=int, default=None, help="default: train.batch_size")
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        row = worker(args.worker, args.profile, args.steps, args.warmup, args.threads, args.batch)
        print(json.dumps(row))
        return
    check = ghost_matches_hooks(args.profile)
    print("ghost vs hooks:", check, flush=True)
    runs: list[dict[str, Any]] = []
    for rep in range(args.repeats):
        load = wait_for_quiet()
        for mode in MODES:
            row = _spawn(mode, args)
            row.update(repeat=rep, load=load)
            runs.append(row)
            print(f"  {mode}: {row['step_s_median'] * 1e3:.2f} ms/step", flush=True)
    profiles = RESULTS / "profiles"
    profiles.mkdir(parents=True, exist_ok=True)
    for mode in MODES:  # where a step's time goes, per mode (torch.profiler, self CPU time)
        (profiles / f"privacy_{mode}.txt").write_text(torch_profile(mode, args.profile) + "\n")
    by_mode = {m: [r for r in runs if r["mode"] == m] for m in MODES}
    # ratio per repeat (side by side), then median over repeats
    ratios = {
        m: median_spread(
            r["step_s_median"] / base["step_s_median"]
            for r, base in zip(by_mode[m], by_mode["nondp"], strict=True)
        )
        for m in MODES
    }
    summary = {
        m: {
            "step_ms": median_spread(r["step_s_median"] * 1e3 for r in by_mode[m]),
            "ratio_to_nondp": ratios[m],
            "peak_rss_mib": statistics.median(r["peak_rss_bytes"] for r in by_mode[m]) / 2**20,
            "training_rss_growth_mib": statistics.median(
                (r["peak_rss_bytes"] - r["rss_before_training_bytes"]) for r in by_mode[m]
            )
            / 2**20,
            "cuda_peak_mib": (by_mode[m][0]["cuda_peak_bytes"] or 0) / 2**20 or None,
        }
        for m in MODES
    }
    faster = min(MODES[1:], key=lambda m: summary[m]["ratio_to_nondp"]["median"])
    cfg = make_config(args.profile)
    rows = [
        [
            m,
            f"{s['step_ms']['median']:.2f} ({s['step_ms']['min']:.2f}-{s['step_ms']['max']:.2f})",
            f"{s['ratio_to_nondp']['median']:.2f}",
            f"{s['peak_rss_mib']:.0f}",
            f"{s['training_rss_growth_mib']:.1f}",
        ]
        for m, s in summary.items()
    ]
    markdown = (
        f"DP-SGD step vs plain step (readmission model, {args.profile} profile: batch "
        f"{runs[0]['batch_size']}, hidden {cfg.model.hidden}, {runs[0]['parameters']:,} "
        f"parameters; {runs[0]['device']}, {args.threads} thread(s); median of {args.repeats} "
        f"fresh processes × {args.steps} steps)\n\n"
        + md_table(
            [
                "mode",
                "ms/step (min-max)",
                "ratio to non-DP",
                "peak RSS (MiB)",
                "RSS growth while training (MiB)",
            ],
            rows,
        )
        + f"\nFaster DP mode: {faster} ({summary[faster]['ratio_to_nondp']['median']:.2f}× "
        f"non-DP). Ghost clipping equals hooks on a clipped batch: {check['equal']} (max |Δ| "
        f"{check['max_abs_diff']:.2e}).\n"
    )
    _write(
        "privacy_overhead" + (f"_batch{args.batch}" if args.batch else ""),
        {
            "profile": args.profile,
            "threads": args.threads,
            "steps": args.steps,
            "repeats": args.repeats,
            "batch_size": runs[0]["batch_size"],
            "ghost_check": check,
            "runs": runs,
            "summary": summary,
            "faster_mode": faster,
        },
        markdown,
        f"python -m benchmarks privacy_overhead --profile {args.profile} --repeats "
        f"{args.repeats} --threads {args.threads}"
        + (f" --batch {args.batch}" if args.batch else ""),
    )


if __name__ == "__main__":
    main()
