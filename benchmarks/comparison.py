"""The comparison tables, fairly: every model trained to its best on validation, over seeds.

For each task, on that task's profile data (generated once with ``base.seed``):

* ``public_only``: the model ``model.init`` starts from (where the task has one);
* ``centralized``, ``local:<hospital>`` (and their mean), ``federated`` and ``federated_dp``
  (the profile's ε), one run of each per seed.

Every run keeps the epoch or round with the best validation primary metric (``train.selection:
best_val``, the pipeline's default): centralized and local-only through their stages' own code,
federated through the in-process driver (:mod:`privfed.federated.inprocess`: the real ClientApp
and strategy code, round for round, without Flower's transport, which changes no number here but
the wall time). Seeds change initialisation (where the task starts from scratch), data order,
augmentation and, for DP, nothing: DP-SGD's sampling and noise come from OS entropy. Scores are
the pooled test split's primary metric; the tables give mean ± sd and min–max over seeds, and
the federated / centralized ratio per seed. The first seed's centralized run is repeated to
measure whether training is bitwise repeatable.

    python -m benchmarks comparison [--tasks readmission tabular breast-cancer segmentation
        notes] [--profile default] [--seeds 3]

``breast-cancer`` is README's bring-your-own-data example (task ``tabular`` on the bundled
Wisconsin table dealt to three sites).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import RESULTS, make_config, md_table, prepare_data, write_result
from benchmarks.privacy_utility import DATASETS, spread
from privfed.checkpoints import MODEL_FILE, load_model, load_state
from privfed.config import PrivFedConfig
from privfed.federated.inprocess import run_rounds
from privfed.partitions import hospital_dirs, split_dirs
from privfed.privacy import epsilon_from_history
from privfed.registry import utility_ratio
from privfed.stages import train_centralized, train_local
from privfed.tasks import get_task

__all__ = ["main", "ratios"]

NAME = "comparison"
#: torch's intra-op threads at start: the in-process federation's ClientApp code sets one thread
#: (as each SuperNode's does), and float sums depend on the thread count, so the baselines are
#: trained with this count every time (the repeatability check compares like with like).
THREADS = torch.get_num_threads()


def _seeded(cfg: PrivFedConfig, seed: int) -> PrivFedConfig:
    """``cfg`` with ``base.seed = seed`` and one centralized seed (the study makes the spread)."""
    return cfg.model_copy(
        update={
            "base": cfg.base.model_copy(update={"seed": seed}),
            "train_centralized": cfg.train_centralized.model_copy(update={"seeds": 1}),
        }
    )


def _centralized(cfg: PrivFedConfig, parts: Path, out: Path) -> dict[str, Any]:
    torch.set_num_threads(THREADS)
    metrics = train_centralized.run(
        cfg, {"partitions": parts}, {"model": out, "metrics": out.with_suffix(".json")}
    )
    return {"model": load_model(out / MODEL_FILE, cfg), "kept": metrics["selection"]["epoch"]}


def _local(cfg: PrivFedConfig, parts: Path, out: Path) -> dict[str, dict[str, Any]]:
    torch.set_num_threads(THREADS)
    metrics = train_local.run(
        cfg, {"partitions": parts}, {"models": out, "metrics": out.with_suffix(".json")}
    )
    return {
        f"local:{h}": {
            "model": load_model(out / h / MODEL_FILE, cfg),
            "kept": m["selection"]["epoch"],
        }
        for h, m in metrics.items()
    }


def _federated(cfg: PrivFedConfig, parts: Path, out: Path, *, dp: bool) -> dict[str, Any]:
    hospitals = {d.name: d for d in hospital_dirs(parts)}
    model, recorder = run_rounds(cfg, hospitals, out, dp=dp)
    spent = math.inf
    if dp:
        p = cfg.privacy
        spent = max(
            epsilon_from_history(h, delta=p.delta, accountant=p.accountant)
            for h in recorder.full_dp_history().values()
        )
    return {"model": model, "kept": recorder.selected, "epsilon": spent}


def ratios(
    rows: dict[str, dict[str, Any]], name: str, *, higher_is_better: bool
) -> dict[str, float]:
    """``name`` / centralized, seed by seed (same seed, same data): their mean and range."""
    per_seed = [
        utility_ratio(a, c, higher_is_better=higher_is_better)
        for a, c in zip(rows[name]["scores"], rows["centralized"]["scores"], strict=True)
    ]
    return spread(per_seed)


def _repeatability(cfg: PrivFedConfig, parts: Path, work: Path, first: Path) -> dict[str, float]:
    """The first seed's centralized model trained again: the largest weight difference."""
    again = work / "central-repeat"
    torch.set_num_threads(THREADS)
    train_centralized.run(
        cfg, {"partitions": parts}, {"model": again, "metrics": again.with_suffix(".json")}
    )
    a, b = (load_state(p / MODEL_FILE)["state_dict"] for p in (first, again))
    diff = max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].numel())
    return {
        "max_abs_weight_difference": diff,
        "bitwise_identical": float(diff == 0.0),
        "threads": THREADS,
    }


def _study(
    task_name: str, profile: str, seeds: int, tmp: Path, publish: Callable[[dict], None]
) -> None:
    """Every model over ``seeds`` seeds; ``publish`` gets the study after each seed (so a
    study stopped midway leaves the seeds it finished) and once more with repeatability."""
    work = tmp / task_name
    overrides = (
        DATASETS[task_name](work) if task_name in DATASETS else {"base": {"task": task_name}}
    )
    cfg = make_config(profile, {**overrides, "privacy": {"enabled": True}})
    parts = prepare_data(cfg, work)
    task = get_task(cfg.base.task, cfg)
    metric = task.primary_metric
    pooled = task.load_dataset(split_dirs(hospital_dirs(parts), "test"))
    rows: dict[str, dict[str, Any]] = {}

    def add(name: str, model: torch.nn.Module, kept: Any = None, epsilon: float = math.inf):
        row = rows.setdefault(name, {"scores": [], "kept": [], "epsilon": []})
        row["scores"].append(float(task.evaluate(model, pooled)[metric]))
        row["kept"].append(kept)
        row["epsilon"].append(epsilon)

    for name, model in task.reference_models().items():
        add(name, model, epsilon=0.0)
    run_seeds = [cfg.base.seed + i for i in range(seeds)]
    walls: list[float] = []
    study: dict[str, Any] = {
        "task": task_name,
        "metric": metric,
        "higher_is_better": task.higher_is_better,
        "pooled_test_n": len(pooled),
        "seeds_planned": run_seeds,
        "budget": _budget(cfg),
        "rows": rows,
        "repeatability": None,
    }
    for seed in run_seeds:
        seed_cfg, t0 = _seeded(cfg, seed), time.monotonic()
        central = _centralized(seed_cfg, parts, work / f"central-{seed}")
        add("centralized", central["model"], central["kept"])
        local = _local(seed_cfg, parts, work / f"local-{seed}")
        for name, run in local.items():
            add(name, run["model"], run["kept"])
        rows.setdefault("local (mean)", {"scores": [], "kept": [], "epsilon": []})
        rows["local (mean)"]["scores"].append(
            sum(rows[n]["scores"][-1] for n in local) / len(local)
        )
        for dp in (False, True):
            name = "federated_dp" if dp else "federated"
            fed = _federated(seed_cfg, parts, work / f"{name}-{seed}", dp=dp)
            add(name, fed["model"], fed["kept"], fed["epsilon"])
        walls.append(time.monotonic() - t0)
        print(f"{task_name} seed {seed}: {walls[-1]:.0f} s", flush=True)
        publish(_summarized(study, run_seeds[: len(walls)], walls))
    study["repeatability"] = _repeatability(
        _seeded(cfg, run_seeds[0]), parts, work, work / f"central-{run_seeds[0]}"
    )
    publish(_summarized(study, run_seeds, walls))


def _summarized(study: dict[str, Any], done: list[int], walls: list[float]) -> dict[str, Any]:
    """``study`` with the seeds done so far, each row's spread and the ratios per seed."""
    rows = study["rows"]
    for row in rows.values():
        row["spread"] = spread(row["scores"])
    return {
        **study,
        "seeds": done,
        "ratios_to_centralized": {
            name: ratios(rows, name, higher_is_better=study["higher_is_better"])
            for name in ("federated", "federated_dp", "local (mean)")
        },
        "seconds_per_seed": spread(walls),
    }


def _budget(cfg: PrivFedConfig) -> str:
    """The training budget every run had, as a reader needs it beside the numbers."""
    task = get_task(cfg.base.task, cfg)
    fed = cfg.train_federated
    return (
        f"centralized and local-only {task.baseline_epochs(cfg.train_centralized.epochs)} "
        f"epochs; federated {fed.rounds} rounds x {fed.local_epochs} local epoch(s); "
        f"selection {cfg.train.selection}"
    )


def _cell(s: dict[str, float]) -> str:
    return f"{s['mean']:.3f} ± {s['sd']:.3f} ({s['min']:.3f}–{s['max']:.3f})"


def _markdown(studies: list[dict[str, Any]], profile: str) -> str:
    parts = []
    for study in studies:
        rows = [
            [
                name,
                _cell(row["spread"]),
                " ".join("—" if k is None else str(k) for k in row["kept"]) or "—",
                "—"
                if not row["epsilon"]
                else " ".join("∞" if math.isinf(e) else f"{e:.3g}" for e in row["epsilon"]),
            ]
            for name, row in study["rows"].items()
        ]
        ratio_lines = [
            f"- {name} / centralized, seed by seed: {_cell(r)}"
            for name, r in study["ratios_to_centralized"].items()
        ]
        rep = study["repeatability"]
        repeat = (
            f"\n- centralized retrained with seed {study['seeds'][0]}: largest weight "
            f"difference {rep['max_abs_weight_difference']:.3g} "
            f"({rep['threads']} threads both times)"
            + (" (bitwise identical)" if rep["bitwise_identical"] else "")
            if rep
            else ""
        )
        done = len(study["seeds"])
        partial = (
            f" — {done} of {len(study['seeds_planned'])} seeds done"
            if done < len(study["seeds_planned"])
            else ""
        )
        parts.append(
            f"Task `{study['task']}` ({profile} profile; pooled test n={study['pooled_test_n']}; "
            f"seeds {', '.join(map(str, study['seeds']))}{partial}; {study['budget']})\n\n"
            + md_table(
                [
                    "model",
                    f"pooled test {study['metric']}: mean ± sd (min–max)",
                    "kept epoch / round per seed",
                    "ε per seed",
                ],
                rows,
            )
            + "\n"
            + "\n".join(ratio_lines)
            + repeat
            + f"\n- seconds per seed: {_cell(study['seconds_per_seed'])}\n"
        )
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks {NAME}")
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=["readmission", "tabular", "breast-cancer", "segmentation", "notes"],
    )
    parser.add_argument("--profile", default="default")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    if args.seeds < 2:
        parser.error(f"--seeds must be at least 2 to measure a spread, got {args.seeds}")
    with tempfile.TemporaryDirectory(prefix="privfed-comparison-") as tmp:
        for task_name in args.tasks:  # one result file per task, rewritten after each seed

            def publish(study: dict[str, Any], task_name: str = task_name) -> None:
                write_result(
                    f"{NAME}_{task_name}",
                    {"profile": args.profile, "study": study},
                    _markdown([study], args.profile),
                    f"python -m benchmarks {NAME} --tasks {task_name} "
                    f"--profile {args.profile} --seeds {args.seeds}",
                )

            _study(task_name, args.profile, args.seeds, Path(tmp), publish)
    print(f"wrote {RESULTS}/{NAME}_<task>.json and .md")
