"""Privacy against utility, per task: ε ∈ {0.5, 1, 3, 8, ∞}, each the mean and spread of runs.

For each task, on that task's profile data (generated once, seed ``base.seed``):

* ``public_only``: the model ``model.init`` starts from, before any hospital's data (absent
  where the task has no public model);
* ``centralized``: the pooled-data baseline, one run per seed;
* ``federated`` (ε = ∞) and ``federated_dp`` at each ε (``privacy.target_epsilon =
  epsilon_budget = ε``), one run per seed.

Runs differ in ``base.seed`` (initialisation and data order; the data stays the same) and, for
DP, in their sampling and noise, which come from OS entropy. Federated runs use the in-process
driver (:mod:`privfed.federated.inprocess`): the real ClientApp and strategy code, round for
round, without Flower's transport, which changes no number here but the wall time. ε spent is
what ``account_privacy`` would report: the calibrating accountant's, max over hospitals.

``breast-cancer`` is README's bring-your-own-data example (task ``tabular`` on the bundled
Wisconsin table dealt to three sites), scored by accuracy.

    python -m benchmarks privacy_utility [--tasks readmission breast-cancer] [--profile default]
        [--epsilons 0.5 1 3 8] [--seeds 3]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import RESULTS, make_config, md_table, prepare_data, write_result  # noqa: E402
from privfed.checkpoints import MODEL_FILE, load_model  # noqa: E402
from privfed.config import PrivFedConfig  # noqa: E402
from privfed.federated.inprocess import run_rounds  # noqa: E402
from privfed.partitions import hospital_dirs, split_dirs  # noqa: E402
from privfed.privacy import epsilon_from_history  # noqa: E402
from privfed.stages import train_centralized  # noqa: E402
from privfed.tasks import get_task  # noqa: E402

__all__ = ["main", "spread", "gap_closed"]


def spread(values: list[float]) -> dict[str, float]:
    """Mean, sample standard deviation, min and max of one configuration's runs (numpy's, which
    give inf or NaN where a run's score is one; ``statistics`` raises on an infinite ratio)."""
    return {
        "mean": float(np.mean(values)),
        "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def gap_closed(*, public: float, dp: float, federated: float) -> float:
    """Share of the public-only → federated (no DP) gain that the DP model recovers."""
    return (dp - public) / (federated - public) if federated != public else math.nan


def _with(cfg: PrivFedConfig, **sections: dict[str, Any]) -> PrivFedConfig:
    return cfg.model_copy(
        update={
            name: getattr(cfg, name).model_copy(update=values) for name, values in sections.items()
        }
    )


def _score(cfg: PrivFedConfig, model: Any, pooled: Any) -> float:
    return float(get_task(cfg.base.task, cfg).evaluate(model, pooled)[_metric(cfg)])


def _metric(cfg: PrivFedConfig) -> str:
    """What the study reports: accuracy for tables (the issue's breast-cancer target is
    DP accuracy ≥ 0.95 × non-DP), else the task's primary metric."""
    if cfg.base.task == "tabular":
        return "accuracy"
    return get_task(cfg.base.task, cfg).primary_metric


def _centralized(cfg: PrivFedConfig, parts: Path, work: Path, pooled: Any) -> float:
    out = work / f"central-{cfg.base.seed}"
    train_centralized.run(
        cfg, {"partitions": parts}, {"model": out, "metrics": work / "central.json"}
    )
    return _score(cfg, load_model(out / MODEL_FILE, cfg), pooled)


def _federated(
    cfg: PrivFedConfig, parts: Path, work: Path, pooled: Any, eps: float | None
) -> tuple[float, float]:
    """One federated run (DP at ``eps``, or none); its pooled score and the ε it spent."""
    hospitals = {d.name: d for d in hospital_dirs(parts)}
    run_cfg = cfg
    if eps is not None:
        run_cfg = _with(cfg, privacy={"target_epsilon": eps, "epsilon_budget": eps})
    out = work / f"fed-{eps}-{cfg.base.seed}"
    model, recorder = run_rounds(run_cfg, hospitals, out, dp=eps is not None)
    spent = math.inf
    if eps is not None:
        p = run_cfg.privacy
        spent = max(
            epsilon_from_history(h, delta=p.delta, accountant=p.accountant)
            for h in recorder.full_dp_history().values()
        )
    return _score(cfg, model, pooled), spent


def _breast_cancer(work: Path) -> dict[str, dict[str, Any]]:
    """README's bring-your-own-data walkthrough: the example table and its drafted schema."""
    from privfed.examples import write_breast_cancer_sites
    from privfed.tasks.tabular.schema import infer_schema, write_schema

    folder = work / "external"
    frame = write_breast_cancer_sites(folder / "breast_cancer.csv")
    schema = infer_schema(frame.drop(columns=["site"]), target="diagnosis")
    write_schema(schema, folder / "schema.yaml")
    return {
        "base": {"task": "tabular", "data_source": "directory"},
        "ingest_data": {"path": str(folder), "schema": str(folder / "schema.yaml")},
    }


#: Study name -> how to make its config: a task on its generated data, or a named dataset.
DATASETS = {"breast-cancer": _breast_cancer}


def _study(name: str, profile: str, epsilons: list[float], seeds: int, tmp: Path) -> dict:
    work = tmp / name
    overrides = DATASETS[name](work) if name in DATASETS else {"base": {"task": name}}
    cfg = make_config(profile, {**overrides, "privacy": {"enabled": True}})
    task_name = cfg.base.task
    parts = prepare_data(cfg, work)
    task = get_task(task_name, cfg)
    pooled = task.load_dataset(split_dirs(hospital_dirs(parts), "test"))
    rows: dict[str, dict[str, Any]] = {}
    references = task.reference_models()
    for reference, model in references.items():
        rows[reference] = {"epsilon": 0.0, "scores": [_score(cfg, model, pooled)]}
    run_seeds = [cfg.base.seed + i for i in range(seeds)]
    rows["centralized"] = {"epsilon": math.inf, "scores": []}
    for eps in [None, *epsilons]:
        rows["federated" if eps is None else f"federated_dp ε={eps:g}"] = {
            "epsilon": math.inf if eps is None else eps,
            "scores": [],
            "spent": [],
        }
    for seed in run_seeds:
        seed_cfg = _with(cfg, base={"seed": seed})
        t0 = time.monotonic()
        rows["centralized"]["scores"].append(_centralized(seed_cfg, parts, work, pooled))
        for eps in [None, *epsilons]:
            row = rows["federated" if eps is None else f"federated_dp ε={eps:g}"]
            score, spent = _federated(seed_cfg, parts, work, pooled, eps)
            row["scores"].append(score)
            row["spent"].append(spent)
        print(f"{name} seed {seed}: {time.monotonic() - t0:.0f} s", flush=True)
    for row in rows.values():
        row["spread"] = spread(row["scores"])
    return {
        "task": name,
        "metric": _metric(cfg),
        "higher_is_better": task.higher_is_better,
        "pooled_test_n": len(pooled),
        "seeds": run_seeds,
        "rows": rows,
    }


def _summary(study: dict) -> dict[str, float]:
    """The issue's targets for this task: DP / no-DP at ε=1 and the public gap it closes."""
    rows = study["rows"]
    fed = rows["federated"]["spread"]["mean"]
    out: dict[str, float] = {}
    dp1 = rows.get("federated_dp ε=1")
    if dp1:
        out["dp_eps1_over_federated"] = dp1["spread"]["mean"] / fed
        public = next((r for n, r in rows.items() if r["epsilon"] == 0.0), None)
        if public:
            out["public_only"] = public["spread"]["mean"]
            out["public_gap_to_federated"] = fed - public["spread"]["mean"]
            out["gap_closed_eps1"] = gap_closed(
                public=public["spread"]["mean"], dp=dp1["spread"]["mean"], federated=fed
            )
    return out


def _markdown(studies: list[dict], profile: str) -> str:
    parts = []
    for study in studies:
        rows = []
        for name, row in study["rows"].items():
            s = row["spread"]
            spent = row.get("spent") or []
            rows.append(
                [
                    name,
                    "0 (public data)" if row["epsilon"] == 0.0 else f"{row['epsilon']:g}",
                    f"{max(spent):.3f}" if spent and math.isfinite(max(spent)) else "—",
                    f"{s['mean']:.3f}",
                    f"{s['sd']:.3f}",
                    f"{s['min']:.3f}–{s['max']:.3f}",
                    s["n"],
                ]
            )
        summary = "; ".join(f"{k} {v:.3f}" for k, v in study["summary"].items())
        parts.append(
            f"Task `{study['task']}` ({profile} profile, pooled test n={study['pooled_test_n']}, "
            f"{study['metric']}, seeds {study['seeds']})\n\n"
            + md_table(["model", "target ε", "max spent ε", "mean", "sd", "min–max", "runs"], rows)
            + f"\nSummary: {summary}\n"
        )
    return "\n".join(parts)


def _plot(studies: list[dict]) -> str:
    fig, axes = plt.subplots(1, len(studies), figsize=(4.8 * len(studies), 3.6), squeeze=False)
    for ax, study in zip(axes[0], studies, strict=True):
        rows = study["rows"]
        dp = [r for r in rows.values() if 0 < r["epsilon"] < math.inf]
        eps = [r["epsilon"] for r in dp]
        ax.errorbar(
            eps,
            [r["spread"]["mean"] for r in dp],
            yerr=[r["spread"]["sd"] for r in dp],
            marker="o",
            capsize=3,
            label="federated DP (mean ± sd)",
        )
        styles = {"federated": ("C1", "--"), "centralized": ("C2", ":")}
        for name, row in rows.items():
            if row["epsilon"] == 0.0:
                ax.axhline(row["spread"]["mean"], color="C3", ls="-.", label=f"{name}")
            elif name in styles:
                color, ls = styles[name]
                ax.axhline(row["spread"]["mean"], color=color, ls=ls, label=f"{name} (ε=∞)")
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(eps, [f"{e:g}" for e in eps])
        ax.set_xlabel("ε per hospital, whole run (δ=1e-5)")
        ax.set_ylabel(f"pooled test {study['metric']}")
        ax.set_title(study["task"])
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = RESULTS / "privacy_utility.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks privacy_utility")
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=["readmission", "breast-cancer"],
        help="task names (their generated data) or a named dataset: " + ", ".join(DATASETS),
    )
    parser.add_argument("--profile", default="default")
    parser.add_argument("--epsilons", type=float, nargs="+", default=[0.5, 1.0, 3.0, 8.0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    studies = []
    with tempfile.TemporaryDirectory(prefix="privfed-bench-pu-") as tmp:
        for task_name in args.tasks:
            started = time.monotonic()
            study = _study(task_name, args.profile, args.epsilons, args.seeds, Path(tmp))
            study["summary"] = _summary(study)
            study["wall_s"] = time.monotonic() - started
            studies.append(study)
    fresh = list(studies)
    RESULTS.mkdir(parents=True, exist_ok=True)
    studies = _kept_studies(args.profile, [s["task"] for s in studies]) + studies
    plot = _plot(studies)
    markdown = _markdown(studies, args.profile) + f"\nPlot: `benchmarks/results/{plot}`\n"
    cmd = " ; ".join(
        f"python -m benchmarks privacy_utility --tasks {s['task']} --profile {args.profile} "
        f"--seeds {len(s['seeds'])}"
        for s in studies
    )
    write_result(
        "privacy_utility",
        {
            "profile": args.profile,
            "studies": studies,
            "plot": plot,
            "wall_s": {**_kept_walls(args.profile), **{s["task"]: s["wall_s"] for s in fresh}},
        },
        markdown,
        cmd,
    )


def _previous(profile: str) -> dict[str, Any]:
    """The results file of an earlier run on the same profile (empty if none)."""
    path = RESULTS / "privacy_utility.json"
    if not path.is_file():
        return {}
    previous = json.loads(path.read_text())
    return previous if previous.get("profile") == profile else {}


def _kept_studies(profile: str, rerun: list[str]) -> list[dict]:
    """Studies of tasks this run did not repeat: one task's study takes tens of minutes, so a
    run of one task keeps the others' measured rows (each records its own seeds and wall time).
    """
    return [_numbers(s) for s in _previous(profile).get("studies", []) if s["task"] not in rerun]


def _numbers(study: dict) -> dict:
    """A study read back from JSON, where ε = ∞ is stored as the string "inf"."""
    for row in study["rows"].values():
        row["epsilon"] = float(row["epsilon"])
        if row.get("spent") is not None:
            row["spent"] = [float(v) for v in row["spent"]]
    return study


def _kept_walls(profile: str) -> dict[str, float]:
    walls = _previous(profile).get("wall_s")
    return walls if isinstance(walls, dict) else {}


if __name__ == "__main__":
    main()
