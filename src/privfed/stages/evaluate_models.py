"""Stage ``evaluate_models``: every model on every hospital's test split and on the pooled test set.

Models: centralized, each local-only model, federated, and federated with DP (when it ran).
The global models (and reference models such as ``public_only``) are also scored on the pooled
validation split: that is the number the promotion gate reads by default
(``register_model.gate_split``), so the test split stays for reporting only.
Writes the comparison table (JSON + Markdown), DVC metrics and plots (per-round curve and
per-hospital bars).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from privfed.checkpoints import MODEL_FILE, load_model  # noqa: E402
from privfed.config import PrivFedConfig  # noqa: E402
from privfed.federated import ROUNDS_FILE  # noqa: E402
from privfed.io import atomic_path, read_json, write_json, write_text  # noqa: E402
from privfed.partitions import COHORTS_DIR, hospital_dirs, split_dirs  # noqa: E402
from privfed.privacy.audit import membership_audit  # noqa: E402
from privfed.registry import utility_ratio  # noqa: E402
from privfed.stages.spec import StageSpec  # noqa: E402
from privfed.tasks import get_task  # noqa: E402
from privfed.tasks.base import Task  # noqa: E402

log = logging.getLogger(__name__)

SPEC = StageSpec(
    params=("base", "generate_data.n_genes", "ingest_data", "model", "evaluate_models", "profiles"),
    inputs={
        "partitions": "data/partitions",
        "centralized": "models/centralized",
        "local": "models/local",
        "federated": "models/federated",
        "privacy": "metrics/privacy.json",
    },
    outputs={
        "metrics": "metrics/evaluation.json",
        "report": "reports/evaluation",
        "plots": "plots",
    },
)

POOLED = "pooled"
#: Key of the pooled validation-split metrics (global and reference models; the gate's split).
VAL = "val"
#: Pooled-test confusion matrices of the global models (classification tasks only).
CONFUSION_FILE = "confusion.json"
#: The task's own figures of the federated model (:meth:`Task.report_figures`), in the report.
FIGURES_DIR = "figures"
#: Comparison-table columns per primary metric (classification, regression).
REPORT_COLUMNS = {
    "macro_auroc": ["macro_auroc", "accuracy", "balanced_accuracy", "macro_f1"],
    "r2": ["r2", "mae", "rmse"],
    "perplexity": ["perplexity", "loss", "bleu", "rouge_l"],
    "entity_f1_strict": ["entity_f1_strict", "entity_f1_lenient", "relation_f1"],
}
#: The task's further evaluation settings (:meth:`Task.evaluation_settings`), in the report.
SETTINGS_FILE = "settings.json"


#: Name prefix of the extra centralized seeds' models (``train_centralized.seeds``).
SEED_PREFIX = "centralized:seed"


def _seed_models(inputs: Mapping[str, Path]) -> dict[str, Path]:
    """The extra centralized seeds' models: scored like the others, to measure the baseline's
    spread; not audited and not in the task's own figures."""
    folder = Path(inputs["centralized"])
    found = {
        int(d.name.removeprefix("seed_")): d / MODEL_FILE
        for d in folder.glob("seed_*")
        if (d / MODEL_FILE).is_file()
    }
    return {f"{SEED_PREFIX}{seed}": path for seed, path in sorted(found.items())}


def centralized_spread(results: Mapping[str, Any], split: str, metric: str) -> dict[str, Any]:
    """Every centralized seed's pooled ``metric`` on ``split`` (``pooled`` or ``val``), their
    mean and range: what the gate's ratio is measured against."""
    scores = [float(r[split][metric]) for n, r in results.items() if _is_centralized(n)]
    return {
        "scores": scores,
        "mean": float(np.mean(scores)),
        "min": float(np.min(scores)),
        "max": float(np.max(scores)),
    }


def _is_centralized(name: str) -> bool:
    return name == "centralized" or name.startswith(SEED_PREFIX)


def _models(inputs: Mapping[str, Path]) -> dict[str, Path]:
    models = {"centralized": Path(inputs["centralized"]) / MODEL_FILE}
    for d in sorted(p for p in Path(inputs["local"]).iterdir() if p.is_dir()):
        models[f"local:{d.name}"] = d / MODEL_FILE
    for kind in ("federated", "federated_dp"):
        path = Path(inputs["federated"]) / kind / MODEL_FILE
        if path.is_file():
            models[kind] = path
    return models


#: Membership-inference audit: per-model figures, and the report table's file name.
AUDIT_FILE = "membership_audit.json"
AUDIT_ATTACKS = ("loss_threshold", "lira_offline")


def audit_models(
    task: Task,
    cfg: PrivFedConfig,
    hospitals: list[Path],
    models: Mapping[str, Any],
    test_sets: Mapping[str, Any],
    reference: Any,
) -> dict[str, Any]:
    """Both membership-inference attacks on every model; see :mod:`privfed.privacy.audit`.

    Members are what a model trained on: a local-only model its own hospital's training split,
    every other model all hospitals'. Non-members are the matching test set the evaluation
    already loaded (``test_sets``: per hospital and pooled). The ``reference`` is the pooled
    validation split, which no model trained on: a small hospital's own split (a handful of
    imaging cases) would be too few to fit LiRA's non-member distribution. Each split is
    loaded once, however many models use it.
    """
    train_sets: dict[str, Any] = {}
    audits: dict[str, Any] = {}
    for name, model in models.items():
        owner = name.removeprefix("local:") if name.startswith("local:") else POOLED
        if owner not in train_sets:
            own = [h for h in hospitals if h.name == owner] or hospitals
            train_sets[owner] = task.load_dataset(split_dirs(own, "train"))
        members, nonmembers = train_sets[owner], test_sets[owner]
        audits[name] = membership_audit(
            task,
            model,
            members,
            nonmembers,
            reference,
            max_examples=cfg.evaluate_models.audit_max_examples,
            seed=cfg.base.seed,
        )
        log.info(
            "%s membership audit: loss-threshold AUROC %.3f, LiRA AUROC %.3f, "
            "LiRA TPR at 1%% FPR %.3f (%d members vs %d non-members)",
            name,
            audits[name]["loss_threshold"]["auroc"],
            audits[name]["lira_offline"]["auroc"],
            audits[name]["lira_offline"]["tpr_at_1pct_fpr"],
            audits[name]["members"],
            audits[name]["nonmembers"],
        )
    return audits


def audit_table(audits: Mapping[str, Any], epsilons: Mapping[str, float]) -> str:
    """Markdown: attack AUROC (0.5 = cannot tell) and TPR at 1 % FPR, per model, with its ε."""
    header = ["model", "ε", "members"]
    for attack in AUDIT_ATTACKS:
        header += [f"{attack} AUROC", f"{attack} TPR@1%FPR"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, audit in audits.items():
        row = [name, _fmt(epsilons.get(name, math.inf)), str(audit["members"])]
        for attack in AUDIT_ATTACKS:
            row += [_fmt(audit[attack]["auroc"]), _fmt(audit[attack]["tpr_at_1pct_fpr"])]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _spread_line(spread: Mapping[str, Mapping[str, Any]], metric: str) -> str:
    """Markdown: the centralized baseline over its seeds (what the gate compares with)."""
    test, val = spread[POOLED], spread[VAL]
    n = len(test["scores"])
    if n == 1:
        return "\nCentralized: one seed (train_centralized.seeds: 1), so no spread.\n"
    return (
        f"\nCentralized over {n} seeds (`centralized` and `{SEED_PREFIX}N`): pooled test "
        f"{metric} mean {_fmt(test['mean'])} ({_fmt(test['min'])}–{_fmt(test['max'])}), "
        f"pooled val mean {_fmt(val['mean'])} ({_fmt(val['min'])}–{_fmt(val['max'])}). "
        "The summary's `centralized` and the gate use these means.\n"
    )


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else ("∞" if math.isinf(value) else f"{value:.3f}")
    return str(value)


#: Why a hospital's metric can be undefined (NaN) on its own small test split.
UNDEFINED_BECAUSE = {
    "macro_auroc": "one class in its test split",
    "r2": "constant targets in its test split",
}


def mean_per_hospital_cell(per: Mapping[str, Mapping[str, float]], metric: str) -> str:
    """The mean of ``metric`` over hospitals, naming each hospital it leaves out and why.

    ``nanmean`` silently drops a hospital whose metric is undefined (AUROC on a test split
    holding one class): a bare number would claim an average over every hospital.
    """
    undefined = [h for h, m in per.items() if math.isnan(m[metric])]
    defined = [float(m[metric]) for h, m in per.items() if h not in undefined]
    mean = _fmt(float(np.mean(defined))) if defined else "n/a"
    if not undefined:
        return mean
    why = UNDEFINED_BECAUSE.get(metric, "no value")
    return (
        f"{mean} ({len(defined)} of {len(per)} hospitals; "
        f"{', '.join(undefined)}: {metric} undefined, {why})"
    )


def comparison_table(results: Mapping[str, Any], metric_names: list[str]) -> str:
    """Markdown: one row per model, pooled metrics, mean over hospitals (of the first, the
    primary metric) and ε."""
    header = ["model", *[f"pooled {m}" for m in metric_names], "mean per-hospital", "ε"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, res in results.items():
        row = [
            name,
            *[_fmt(res[POOLED][m]) for m in metric_names],
            mean_per_hospital_cell(res["per_hospital"], metric_names[0]),
            _fmt(res["epsilon"]),
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def per_hospital_tables(results: Mapping[str, Any], hospitals: list[str], metric: str) -> str:
    """Markdown: each model on each hospital's own test split, for ``metric`` and accuracy.

    The JSON holds every metric; these are the ones a reader compares hospitals by.
    """
    first = next(iter(results.values()))["per_hospital"]
    shown = [metric] + (
        ["accuracy"] if metric != "accuracy" and "accuracy" in first[hospitals[0]] else []
    )
    sizes = [f"{h} (n={first[h]['n']})" if "n" in first[h] else h for h in hospitals]
    out = []
    for name in shown:
        lines = [
            f"### {name}\n",
            "| model | " + " | ".join(sizes) + " |",
            "|" + "---|" * (len(hospitals) + 1),
        ]
        lines += [
            f"| {model} | " + " | ".join(_fmt(r["per_hospital"][h][name]) for h in hospitals) + " |"
            for model, r in results.items()
        ]
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


def val_table(results: Mapping[str, Any], metric: str) -> str:
    """Markdown: each global and reference model's pooled validation-split ``metric``."""
    lines = [f"| model | pooled val {metric} |", "|---|---|"]
    lines += [f"| {n} | {_fmt(r[VAL][metric])} |" for n, r in results.items() if VAL in r]
    return "\n".join(lines) + "\n"


def _plot_rounds(rounds_file: Path, metric: str, out: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if not rounds_file.is_file():
        return rows
    runs = read_json(rounds_file)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for run_name, run in runs.items():
        xs = [r["round"] for r in run["rounds"]]
        ys = [r["val"].get(metric, math.nan) for r in run["rounds"]]
        ax.plot(xs, ys, marker="o", label=run_name)
        rows += [{"run": run_name, "round": x, metric: y} for x, y in zip(xs, ys, strict=True)]
    ax.set_xlabel("round")
    ax.set_ylabel(f"val {metric}, mean of hospitals")
    ax.set_title("global model after each round")
    ax.legend()
    fig.tight_layout()
    with atomic_path(out / "federated_rounds.png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return rows


def _plot_per_hospital(
    results: Mapping[str, Any], hospitals: list[str], metric: str, out: Path
) -> None:
    names = [n for n in results if not n.startswith(("local:", SEED_PREFIX))] + [
        "local (own hospital)"
    ]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    width = 0.8 / len(names)
    x = np.arange(len(hospitals))
    for i, name in enumerate(names):
        if name == "local (own hospital)":
            ys = [results[f"local:{h}"]["per_hospital"][h][metric] for h in hospitals]
        else:
            ys = [results[name]["per_hospital"][h][metric] for h in hospitals]
        ax.bar(x + i * width, ys, width, label=name)
    ax.set_xticks(x + 0.4 - width / 2, hospitals)
    ax.set_ylabel(f"test {metric}")
    ax.set_ylim(bottom=0.0)  # top free: perplexity, HD95 and errors are not bounded by 1
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(out / "per_hospital.png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _epsilon(name: str, dp_eps: float | None) -> float:
    """The federated DP model's spent epsilon; every other trained model has no DP bound."""
    return float(dp_eps) if name == "federated_dp" else math.inf


def _audit_summary(result: Mapping[str, Any]) -> dict[str, float]:
    """The audit's headline figures, flat (DVC metrics, MLflow, the model card)."""
    audit = result["membership_audit"]
    return {
        f"{attack}_{key}": float(audit[attack][key])
        for attack in AUDIT_ATTACKS
        for key in ("auroc", "tpr_at_1pct_fpr")
    }


def run(
    cfg: PrivFedConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]
) -> dict[str, Any]:
    task = get_task(cfg.base.task, cfg)
    metric = task.primary_metric
    hospitals_paths = hospital_dirs(Path(inputs["partitions"]))
    hospitals = [h.name for h in hospitals_paths]
    test_sets = {h.name: task.load_dataset([h / "test"]) for h in hospitals_paths}
    test_sets[POOLED] = task.load_dataset(split_dirs(hospitals_paths, "test"))
    val_set = task.load_dataset(split_dirs(hospitals_paths, "val"))
    privacy = read_json(inputs["privacy"])
    dp_eps = privacy.get("epsilon")
    results: dict[str, Any] = {}
    confusion: dict[str, Any] = {}
    references = task.reference_models()  # no hospital data: no audit, epsilon 0
    loaded = {name: load_model(path, cfg) for name, path in _models(inputs).items()}
    repeats = {name: load_model(path, cfg) for name, path in _seed_models(inputs).items()}
    for name, model in {**references, **loaded, **repeats}.items():
        if not name.startswith(("local:", SEED_PREFIX)):
            confusion[name] = task.confusion_matrix(model, test_sets[POOLED])
        per = {h: task.evaluate(model, ds) for h, ds in test_sets.items() if h != POOLED}
        results[name] = {
            POOLED: task.evaluate(model, test_sets[POOLED]),
            "per_hospital": per,
            "mean_per_hospital": float(np.nanmean([m[metric] for m in per.values()])),
            "epsilon": 0.0 if name in references else _epsilon(name, dp_eps),
        }
        if not name.startswith("local:"):  # what the gate may read; local models never gate
            results[name][VAL] = task.evaluate(model, val_set)
        log.info("%s: pooled %s=%.4f", name, metric, results[name][POOLED][metric])
    local_pooled = [r[POOLED][metric] for n, r in results.items() if n.startswith("local:")]
    spread = {split: centralized_spread(results, split, metric) for split in (POOLED, VAL)}
    # the centralized baseline is the mean over its seeds; each seed's score stays beside it
    summary = {
        "primary_metric": metric,
        "centralized": spread[POOLED]["mean"],
        "centralized_seeds": {"test": spread[POOLED], VAL: spread[VAL]},
        "local_mean": float(np.mean(local_pooled)),
        "federated": results.get("federated", {}).get(POOLED, {}).get(metric),
        "federated_dp": results.get("federated_dp", {}).get(POOLED, {}).get(metric),
        "epsilon": dp_eps,
        VAL: {
            **{
                n: r[VAL][metric]
                for n, r in results.items()
                if VAL in r and not n.startswith(SEED_PREFIX)
            },
            "centralized": spread[VAL]["mean"],
        },
    }
    for name in ("federated", "federated_dp"):
        if summary[name] is not None:
            summary[f"{name}_to_central"] = utility_ratio(
                summary[name], summary["centralized"], higher_is_better=task.higher_is_better
            )
    table = comparison_table(results, REPORT_COLUMNS.get(metric, [metric])) + _spread_line(
        spread, metric
    )
    audits = (
        audit_models(task, cfg, hospitals_paths, loaded, test_sets, val_set)
        if cfg.evaluate_models.membership_audit
        else {}
    )
    for name, audit in audits.items():
        results[name]["membership_audit"] = audit
    report_dir, plots = Path(outputs["report"]), Path(outputs["plots"])
    audit_text = (
        "\n## Membership-inference audit\n\nCan an attacker who sees only a model's loss on a "
        "patient tell a training patient from an unseen one? Members: the training split the "
        "model was fitted on; non-members: the test split; the offline LiRA attack is "
        "calibrated on the validation split. AUROC 0.5 means it cannot tell (coin flip).\n\n"
        + audit_table(audits, {n: r["epsilon"] for n, r in results.items()})
        if audits
        else ""
    )
    write_text(
        f"# Model comparison ({task.name})\n\nPooled test set over {len(hospitals)} hospitals; "
        f"'mean per-hospital' is the mean of {metric} over each hospital's own test split; a "
        "hospital where it is undefined is left out of that mean, and the cell names it.\n\n"
        + table
        + "\n## Per hospital\n\nEach model on each hospital's own test split (n: its rows or "
        "cases); n/a: undefined there. comparison.json holds every metric.\n\n"
        + per_hospital_tables(results, hospitals, metric)
        + "\n## Validation split\n\nPooled validation split over the same hospitals: no model "
        "was fitted on it (training only monitors it; the data-aware strategy also weights "
        "hospitals by it), and it is what the promotion gate reads by default "
        "(register_model.gate_split), so the test numbers above stay for reporting.\n\n"
        + val_table(results, metric)
        + audit_text,
        report_dir / "comparison.md",
    )
    if audits:
        write_json(audits, report_dir / AUDIT_FILE)
    write_json(results, report_dir / "comparison.json")
    if any(c is not None for c in confusion.values()):  # pooled test set, global models
        write_json(confusion, report_dir / CONFUSION_FILE)
    figures = (
        task.report_figures(
            loaded["federated"], test_sets[POOLED], report_dir / FIGURES_DIR, label="federated"
        )
        if "federated" in loaded
        else []
    )
    if figures:
        log.info("wrote %d report figure(s) of the federated model", len(figures))
        with (report_dir / "comparison.md").open("a") as md:
            md.write(
                "\n## Federated model on test cases\n\n"
                + "".join(f"![{p.stem}]({p.relative_to(report_dir).as_posix()})\n" for p in figures)
            )
    extra = task.report_section({**references, **loaded}, test_sets[POOLED])
    if extra:
        with (report_dir / "comparison.md").open("a") as md:
            md.write("\n" + extra)
    settings = task.evaluation_settings(
        {**references, **loaded}, Path(inputs["partitions"]) / COHORTS_DIR, results
    )
    if settings is not None:
        markdown = settings.pop("markdown", "")
        headline = settings.pop("summary", None)
        write_json(settings, report_dir / SETTINGS_FILE)
        if headline:
            summary["settings"] = headline
        if markdown:
            with (report_dir / "comparison.md").open("a") as md:
                md.write("\n" + markdown)
    round_rows = _plot_rounds(Path(inputs["federated"]) / ROUNDS_FILE, metric, plots)
    write_json(round_rows, plots / "federated_rounds.json")
    _plot_per_hospital(results, hospitals, metric, plots)
    write_json(
        {
            "summary": summary,
            "models": {
                n: {
                    POOLED: r[POOLED],
                    **({VAL: r[VAL]} if VAL in r else {}),
                    "mean_per_hospital": r["mean_per_hospital"],
                    **({"membership_audit": _audit_summary(r)} if "membership_audit" in r else {}),
                }
                for n, r in results.items()
                # the extra centralized seeds are in summary.centralized_seeds (and the report)
                if not n.startswith(SEED_PREFIX)
            },
        },
        outputs["metrics"],
    )
    return {"summary": summary, "results": results, "table": table}
