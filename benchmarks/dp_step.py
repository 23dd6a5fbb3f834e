"""DP-SGD step against plain step for every task's model, through the code a hospital runs.

    python -m benchmarks dp_step [--profile default] [--tasks readmission tabular ...]
        [--epochs 1] [--repeats 3] [--torch-profile]

For each task: its data (generated, validated, partitioned as the pipeline does), the first
hospital's training split, the task's initial model, then :meth:`Task.fit` (what the ClientApp
calls) for ``--epochs`` epochs at the task's training batch size, once plain and once with
DP-SGD (Opacus, Poisson sampling, the task's clipping bound and DP-trained modules, noise
multiplier 1), interleaved over ``--repeats``, after one untimed warm-up pass of each. A step's
time is the pass's wall time over its steps (plain: batches; DP: the steps the accountant
recorded), so Opacus' per-pass set-up is in it, as it is in every round. One torch thread, as
each hospital trains in local runs. ``retina`` (a GAN: each step is a discriminator and a
generator update) is left out.
Writes benchmarks/results/dp_step.json and .md.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import (
    RESULTS,
    make_config,
    md_table,
    prepare_data,
    wait_for_quiet,
    write_result,
)
from privfed.logs import setup_logging
from privfed.partitions import hospital_dirs
from privfed.tasks import get_task
from privfed.training import DPSettings, FitPlan, dp_max_grad_norm, dp_trainable

TASKS = ("readmission", "tabular", "segmentation", "notes", "extraction")
MODES = ("plain", "dp")


def time_pass(
    task: Any, dataset: Any, cfg: Any, stats: Any, *, dp: bool, epochs: int
) -> dict[str, float]:
    """One :meth:`Task.fit` pass from the task's initial model: seconds, steps, and the size of
    what training updates (a LoRA task's frozen base is not counted)."""
    torch.manual_seed(0)
    model = task.initial_model(stats)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    batch = task.train_batch_size()
    settings = (
        DPSettings(
            noise_multiplier=1.0,
            max_grad_norm=dp_max_grad_norm(task, cfg),
            trainable=dp_trainable(task, cfg),
            dropout=cfg.privacy.dropout,
        )
        if dp
        else None
    )
    plan = FitPlan(epochs=epochs, batch_size=batch, lr=task.train_lr(), seed=0, dp=settings)
    t0 = time.perf_counter()
    result = task.fit(model, dataset, plan)
    seconds = time.perf_counter() - t0
    steps = result.dp_steps() if dp else epochs * math.ceil(len(dataset) / batch)
    return {
        "seconds": seconds,
        "steps": steps,
        "step_s": seconds / max(steps, 1),
        "trainable_parameters": trainable,
    }


def write_profile(
    task: Any, dataset: Any, cfg: Any, stats: Any, name: str, mode: str, epochs: int
) -> Path:
    """torch.profiler's top operators (self CPU time) of one pass: where a DP step's time goes."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        time_pass(task, dataset, cfg, stats, dp=mode == "dp", epochs=epochs)
    out = RESULTS / "profiles" / f"dp_step_{name}_{mode}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20)
    out.write_text(f"{name}, {mode}, one pass of {epochs} epoch(s)\n{table}\n")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks dp_step")
    parser.add_argument("--profile", default="default")
    parser.add_argument("--tasks", nargs="*", choices=TASKS, default=list(TASKS))
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--torch-profile",
        action="store_true",
        help="also write torch.profiler tables of one pass per mode to results/profiles/",
    )
    args = parser.parse_args(argv)
    setup_logging("WARNING")
    torch.set_num_threads(1)
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="privfed-dp-step-") as tmp:
        for name in args.tasks:
            cfg = make_config(args.profile, {"base": {"task": name}})
            task = get_task(name, cfg)
            parts = prepare_data(cfg, Path(tmp) / name)
            train = [hospital_dirs(parts)[0] / "train"]
            dataset = task.load_dataset(train)
            stats = task.local_statistics(train) if task.uses_statistics else None
            # warm-up: first calls pay for lazy imports and caches
            warm = {m: time_pass(task, dataset, cfg, stats, dp=m == "dp", epochs=1) for m in MODES}
            runs: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
            for repeat in range(args.repeats):
                order = MODES if repeat % 2 == 0 else MODES[::-1]
                for mode in order:
                    load = wait_for_quiet()
                    run = time_pass(task, dataset, cfg, stats, dp=mode == "dp", epochs=args.epochs)
                    runs[mode].append({**run, "load": load})
                    print(name, mode, run, flush=True)
            if args.torch_profile:
                for mode in MODES:
                    write_profile(task, dataset, cfg, stats, name, mode, args.epochs)
            plain = statistics.median(r["step_s"] for r in runs["plain"])
            dp = statistics.median(r["step_s"] for r in runs["dp"])
            rows[name] = {
                "examples": len(dataset),
                "batch_size": task.train_batch_size(),
                "trainable_parameters": warm["plain"]["trainable_parameters"],
                "dp_trainable": dp_trainable(task, cfg),
                "plain_step_s": plain,
                "dp_step_s": dp,
                "ratio": dp / plain,
                "runs": runs,
            }
    table = md_table(
        [
            "task",
            "trainable parameters",
            "DP trains",
            "examples",
            "batch",
            "plain step (ms)",
            "DP step (ms)",
            "DP / plain",
        ],
        [
            (
                name,
                r["trainable_parameters"],
                ", ".join(r["dp_trainable"]) if r["dp_trainable"] else "all",
                r["examples"],
                r["batch_size"],
                1000 * r["plain_step_s"],
                1000 * r["dp_step_s"],
                r["ratio"],
            )
            for name, r in rows.items()
        ],
    )
    note = (
        f"\nProfile {args.profile}, first hospital's training split, {args.epochs} epochs per "
        f"pass, medians of {args.repeats} interleaved passes; one torch thread. DP: Opacus "
        "hooks (what training.py uses), Poisson sampling at the same expected batch, the "
        "task's clipping bound and DP-trained modules; Opacus' set-up is inside the pass.\n"
    )
    command = f"python -m benchmarks dp_step --profile {args.profile} --epochs {args.epochs} "
    command += f"--repeats {args.repeats}"
    if args.torch_profile:
        command += " --torch-profile"
    if set(args.tasks) != set(TASKS):
        command += " --tasks " + " ".join(args.tasks)
    write_result("dp_step", {"tasks": rows}, table + note, command)


if __name__ == "__main__":
    main()
