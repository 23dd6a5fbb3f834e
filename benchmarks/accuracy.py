"""Figure 6: accuracy studies (figures, not speed) on the real federation.

* privacy-utility: federated without DP (ε = ∞) and with DP-SGD at ε ∈ {8, 3, 1, 0.5}
  (``privacy.target_epsilon = epsilon_budget = ε``), 3 hospitals;
* federation size: 3, 5, 7, 10 hospitals, each with centralized, local-only (mean over
  hospitals), federated and federated DP at the profile's ε.

Scores are pooled-test macro-AUROC and accuracy, as ``evaluate_models`` computes them. One
federation (SuperLink + SuperNodes) serves all runs on the same hospitals; each run is a new
Flower run with its own config, so DP accountant state never leaks between runs.

    python -m benchmarks accuracy [--profile default] [--epsilons 8 3 1 0.5]
        [--hospitals 3 5 7 10]
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
from privfed.federated.launcher import LocalFederation, RunSpec  # noqa: E402
from privfed.partitions import hospital_dirs, split_dirs  # noqa: E402
from privfed.privacy import epsilon_from_history  # noqa: E402
from privfed.stages import train_centralized, train_local  # noqa: E402
from privfed.tasks import get_task  # noqa: E402

METRICS = ("macro_auroc", "accuracy")


def _scores(cfg: PrivFedConfig, model_path: Path, pooled_test: Any) -> dict[str, float]:
    task = get_task(cfg.base.task, cfg)
    result = task.evaluate(load_model(model_path, cfg), pooled_test)
    return {m: float(result[m]) for m in METRICS}


def _epsilon(cfg: PrivFedConfig, dp_history: dict[str, list]) -> float:
    """The run's ε: max over hospitals and accountants, as ``account_privacy`` reports it."""
    return max(
        epsilon_from_history(h, delta=cfg.privacy.delta, accountant=a)
        for h in dp_history.values()
        for a in cfg.privacy.accountants
    )


def _baselines(cfg: PrivFedConfig, parts: Path, work: Path, pooled: Any) -> dict[str, Any]:
    train_centralized.run(
        cfg, {"partitions": parts}, {"model": work / "central", "metrics": work / "c.json"}
    )
    train_local.run(
        cfg, {"partitions": parts}, {"models": work / "local", "metrics": work / "l.json"}
    )
    local = [
        _scores(cfg, d / MODEL_FILE, pooled)
        for d in sorted((work / "local").iterdir())
        if d.is_dir()
    ]
    return {
        "centralized": _scores(cfg, work / "central" / MODEL_FILE, pooled),
        "local_mean": {m: float(np.mean([s[m] for s in local])) for m in METRICS},
    }


def _fed_runs(
    cfg: PrivFedConfig, parts: Path, work: Path, pooled: Any, epsilons: list[float | None]
) -> dict[str, Any]:
    """One federation; a run per ε (None = no DP). Returns scores, spent ε and wall time."""
    out: dict[str, Any] = {}
    with LocalFederation(cfg, hospital_dirs(parts), work / "federation") as federation:
        for eps in epsilons:
            name = "federated" if eps is None else f"federated_dp_eps{eps:g}"
            run_cfg = cfg
            if eps is not None:
                run_cfg = cfg.model_copy(
                    update={
                        "privacy": cfg.privacy.model_copy(
                            update={"target_epsilon": eps, "epsilon_budget": eps}
                        )
                    }
                )
            federation.cfg = run_cfg  # one federation, one Flower run per config
            t0 = time.monotonic()
            result = federation.run(RunSpec(name=name, out_dir=work / name, dp=eps is not None))
            scores = _scores(cfg, work / name / MODEL_FILE, pooled)
            row = {
                **scores,
                "target_epsilon": math.inf if eps is None else eps,
                "spent_epsilon": _epsilon(run_cfg, result["dp_history"]) if eps else math.inf,
                "wall_s": time.monotonic() - t0,
            }
            out[name] = row
            print(f"  {name}: {row}", flush=True)
    return out


def _study(profile: str, hospitals: int, epsilons: list[float | None], tmp: Path) -> dict:
    cfg = make_config(
        profile,
        {"base": {"num_hospitals": hospitals}, "privacy": {"enabled": True}},
    )
    work = tmp / f"h{hospitals}"
    parts = prepare_data(cfg, work)
    task = get_task(cfg.base.task, cfg)
    pooled = task.load_dataset(split_dirs(hospital_dirs(parts), "test"))
    t0 = time.monotonic()
    result = {
        "hospitals": hospitals,
        "pooled_test_n": len(pooled),
        **_baselines(cfg, parts, work, pooled),
        "runs": _fed_runs(cfg, parts, work, pooled, epsilons),
        "profile_epsilon": cfg.privacy.target_epsilon,
    }
    result["wall_s"] = time.monotonic() - t0
    print(f"hospitals={hospitals}: centralized {result['centralized']}", flush=True)
    return result


def _plot(pu: dict, sizes: list[dict], profile_eps: float) -> list[str]:
    files = []
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    runs = pu["runs"]
    eps = [r["target_epsilon"] for r in runs.values() if math.isfinite(r["target_epsilon"])]
    for ax, metric in zip(axes, METRICS, strict=True):
        ys = [r[metric] for r in runs.values() if math.isfinite(r["target_epsilon"])]
        ax.plot(eps, ys, marker="o", label="federated DP")
        ax.axhline(runs["federated"][metric], color="C1", ls="--", label="federated ε=∞")
        ax.axhline(pu["centralized"][metric], color="C2", ls=":", label="centralized")
        ax.axhline(pu["local_mean"][metric], color="C3", ls="-.", label="local (mean)")
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(eps, [f"{e:g}" for e in eps])
        ax.set_xlabel("ε (per hospital, whole run)")
        ax.set_ylabel(f"pooled test {metric}")
        ax.legend(fontsize=7)
    fig.suptitle("privacy-utility (readmission)")
    fig.tight_layout()
    path = RESULTS / "accuracy_privacy_utility.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    files.append(path.name)
    if sizes:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
        ns = [s["hospitals"] for s in sizes]
        for ax, metric in zip(axes, METRICS, strict=True):
            ax.plot(ns, [s["centralized"][metric] for s in sizes], marker="o", label="centralized")
            ax.plot(ns, [s["local_mean"][metric] for s in sizes], marker="o", label="local (mean)")
            ax.plot(ns, [s["runs"]["federated"][metric] for s in sizes], marker="o", label="fed")
            dp = [v for s in sizes for k, v in s["runs"].items() if k.startswith("federated_dp")]
            ax.plot(ns, [d[metric] for d in dp], marker="o", label=f"fed DP ε={profile_eps:g}")
            ax.set_xlabel("hospitals")
            ax.set_ylabel(f"pooled test {metric}")
            ax.legend(fontsize=7)
        fig.suptitle("federation size (readmission)")
        fig.tight_layout()
        path = RESULTS / "accuracy_federation_size.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(path.name)
    return files


def _markdown(pu: dict, sizes: list[dict], profile: str) -> str:
    rows = [
        ["centralized", "—", "—", pu["centralized"]["macro_auroc"], pu["centralized"]["accuracy"]],
        ["local (mean)", "—", "—", pu["local_mean"]["macro_auroc"], pu["local_mean"]["accuracy"]],
    ]
    for name, r in pu["runs"].items():
        rows.append(
            [
                name,
                f"{r['target_epsilon']:g}",
                f"{r['spent_epsilon']:.3g}",
                r["macro_auroc"],
                r["accuracy"],
            ]
        )
    text = (
        f"Privacy-utility ({profile} profile, {pu['hospitals']} hospitals, pooled test "
        f"n={pu['pooled_test_n']})\n\n"
        + md_table(["model", "target ε", "spent ε", "macro-AUROC", "accuracy"], rows)
    )
    if sizes:
        size_rows = []
        for s in sizes:
            dp = next(v for k, v in s["runs"].items() if k.startswith("federated_dp"))
            fed = s["runs"]["federated"]
            size_rows.append(
                [
                    s["hospitals"],
                    s["pooled_test_n"],
                    f"{s['centralized']['macro_auroc']:.3f} / {s['centralized']['accuracy']:.3f}",
                    f"{s['local_mean']['macro_auroc']:.3f} / {s['local_mean']['accuracy']:.3f}",
                    f"{fed['macro_auroc']:.3f} / {fed['accuracy']:.3f}",
                    f"{dp['macro_auroc']:.3f} / {dp['accuracy']:.3f}",
                ]
            )
        text += (
            f"\nFederation size ({profile} profile; cells: macro-AUROC / accuracy; "
            f"DP at ε={sizes[0]['profile_epsilon']:g})\n\n"
            + md_table(
                ["hospitals", "test n", "centralized", "local (mean)", "federated", "fed DP"],
                size_rows,
            )
        )
    return text


def _numbers(value: Any) -> Any:
    """Undo ``privfed.io.jsonable``: 'inf'/'nan' strings back to floats."""
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if value in ("inf", "-inf", "nan"):
        return float(value)
    return value


def replot() -> list[str]:
    """Redraw the PNGs from the last ``accuracy.json`` (no training)."""
    data = _numbers(json.loads((RESULTS / "accuracy.json").read_text()))
    sizes = data["federation_size"]
    eps = sizes[0]["profile_epsilon"] if sizes else 1.0
    return _plot(data["privacy_utility"], sizes, float(eps))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks accuracy")
    parser.add_argument("--profile", default="default")
    parser.add_argument("--epsilons", type=float, nargs="+", default=[8.0, 3.0, 1.0, 0.5])
    parser.add_argument("--hospitals", type=int, nargs="*", default=[3, 5, 7, 10])
    parser.add_argument("--replot", action="store_true", help="redraw PNGs from the JSON only")
    args = parser.parse_args(argv)
    if args.replot:
        print(replot())
        return
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="privfed-bench-acc-") as tmp:
        base_n = args.hospitals[0] if args.hospitals else 3
        pu = _study(args.profile, base_n, [None, *args.epsilons], Path(tmp))
        profile_eps = float(make_config(args.profile).privacy.target_epsilon or 1.0)
        sizes = []
        for n in args.hospitals:
            if n == base_n:  # reuse: same data, ε=∞ and the profile's ε already ran
                dp_key = f"federated_dp_eps{profile_eps:g}"
                runs = {k: v for k, v in pu["runs"].items() if k in ("federated", dp_key)}
                if dp_key in runs:
                    sizes.append({**pu, "runs": runs})
                    continue
            sizes.append(_study(args.profile, n, [None, profile_eps], Path(tmp)))
    RESULTS.mkdir(parents=True, exist_ok=True)
    plots = _plot(pu, sizes, profile_eps)
    markdown = _markdown(pu, sizes, args.profile)
    markdown += "\nPlots: " + ", ".join(f"`benchmarks/results/{p}`" for p in plots) + "\n"
    cmd = "python -m benchmarks accuracy --profile " + args.profile
    write_result(
        "accuracy",
        {
            "profile": args.profile,
            "privacy_utility": pu,
            "federation_size": sizes,
            "plots": plots,
            "wall_s": time.monotonic() - t0,
        },
        markdown,
        cmd,
    )


if __name__ == "__main__":
    main()
