"""Task ``extraction``: Fed-MedLoRA vs Fed-MedLoRA+ vs centralized and single-site models.

On the task's data (``--profile``; three hospitals, the external-validation cohort and the new
site), side by side in one run, no DP, LoRA as ``model.extraction`` sets it (FFA-LoRA: A frozen):

* ``centralized``: LoRA on the pooled training notes for ``model.extraction.baseline_epochs``;
* ``centralized_plain_lora``: the same with A trained too (plain LoRA, ``lora_lr`` 0.006), the
  stronger centralized model here, so the federated ratios are also read against it;
* ``local:<hospital>``: LoRA on one hospital's notes alone, the same epochs;
* ``federated`` (Fed-MedLoRA): FedAvg of adapters and heads, ``train_federated.rounds`` x
  ``local_epochs`` (in process: :func:`privfed.federated.inprocess.run_rounds`, the deployed
  client and strategy code without the transport);
* ``federated_momentum``: the same with ``strategy: fedavgm`` (server momentum
  ``train_federated.server_momentum``);
* ``federated_plus`` (Fed-MedLoRA+): the same with ``strategy: data_aware`` and
  ``data_aware_weighting: exp_one_minus_loss`` (weights exp(1 - trained validation loss));
* ``federated_full``: FedAvg with every weight trained and sent (``mode: full``), for bytes.

Every model is scored by the task's own evaluation on each hospital's test split (in-domain),
the pooled test split and the external-validation cohort; the new-site setting (the federated
model fine-tuned on the new site's labelled notes vs the public encoder trained on them alone)
is :meth:`ExtractionTask.evaluation_settings`, as ``evaluate_models`` runs it. Bytes per round
are the serialized model arrays each hospital sent (``bytes_update``), mean over rounds.

    python -m benchmarks extraction [--profile default] [--rounds 16] [--no-full] [--seed N]

``--rounds`` sets ``train_federated.rounds`` and the baselines' epochs to rounds x local epochs
(results then go to ``results/extraction_rounds<N>.*``); ``--seed`` sets ``base.seed`` (data,
splits, initialization; results to ``results/extraction_seed<N>.*``).
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import make_config, md_table, prepare_data, write_result
from privfed.config import PrivFedConfig
from privfed.federated import data_aware
from privfed.federated.inprocess import run_rounds
from privfed.logs import setup_logging
from privfed.partitions import COHORTS_DIR, hospital_dirs, split_dirs
from privfed.tasks import get_task
from privfed.tasks.extraction.generate import EXTERNAL
from privfed.training import train_with_config

__all__ = ["main"]

COLUMNS = ("entity_f1_strict", "entity_f1_lenient", "relation_f1")


#: ``train_federated`` of each federated variant (Fed-MedLoRA, with server momentum, Fed-MedLoRA+)
STRATEGIES: dict[str, dict[str, Any]] = {
    "fedavg": {"strategy": "fedavg"},
    "fedavgm": {"strategy": "fedavgm"},
    "plus": {"strategy": "data_aware", "data_aware_weighting": "exp_one_minus_loss"},
}
#: plain LoRA (A trained too) at the step size measured best for it, for the centralized row
PLAIN_LORA = {"lora_freeze_a": False, "lora_lr": 0.006}


def _config(
    profile: str,
    *,
    mode: str = "lora",
    strategy: str = "fedavg",
    rounds: int | None = None,
    model: dict[str, Any] | None = None,
    seed: int | None = None,
) -> PrivFedConfig:
    fed = dict(STRATEGIES[strategy])
    model = {"mode": mode, **(model or {})}
    if rounds is not None:  # the baselines get the same epochs: rounds x local epochs
        local = make_config(profile).train_federated.local_epochs
        fed["rounds"] = rounds
        model["baseline_epochs"] = rounds * local
    return make_config(
        profile,
        {
            "base": {"task": "extraction", **({} if seed is None else {"seed": seed})},
            "model": {"extraction": model},
            "train_federated": fed,
            "privacy": {"enabled": False},
            "register_model": {"candidate": "federated"},
        },
    )


@contextlib.contextmanager
def _recording_weights(into: list[dict[str, Any]]) -> Iterator[None]:
    """Record each round's trained validation losses and data-aware weights (hospital order)."""
    original = data_aware.data_aware_weights

    def recording(sizes: Any, losses: Any, **kwargs: Any) -> list[float]:
        weights = original(sizes, losses, **kwargs)
        into.append({"losses": list(losses), "sizes": list(sizes), "weights": weights})
        return weights

    data_aware.data_aware_weights = recording
    try:
        yield
    finally:
        data_aware.data_aware_weights = original


def _federate(cfg: PrivFedConfig, hospitals: list[Path], out: Path) -> tuple[Any, dict[str, Any]]:
    t0 = time.perf_counter()
    weights: list[dict[str, Any]] = []
    with _recording_weights(weights):
        model, recorder = run_rounds(cfg, {h.name: h for h in hospitals}, out)
    rows = [r for r in recorder.rounds if r["round"] > 0]
    update = [t["bytes_update"] for r in rows for t in r["train"].values()]
    return model, {
        "seconds": time.perf_counter() - t0,
        "bytes_update_per_hospital_round": sum(update) / len(update),
        "data_aware_rounds": weights,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks extraction")
    parser.add_argument("--profile", default="default")
    parser.add_argument("--no-full", action="store_true", help="skip full fine-tuning")
    parser.add_argument(
        "--rounds", type=int, default=None, help="federated rounds (baselines: x local epochs)"
    )
    parser.add_argument("--seed", type=int, default=None, help="base.seed (default: params.yaml)")
    args = parser.parse_args(argv)
    setup_logging("WARNING")
    cfg = _config(args.profile, rounds=args.rounds, seed=args.seed)
    task = get_task("extraction", cfg)
    task.public()  # built (and cached) before anything is timed
    models: dict[str, Any] = {}
    info: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="privfed-bench-extraction-") as tmp:
        work = Path(tmp)
        partitions = prepare_data(cfg, work / "data")
        hospitals = hospital_dirs(partitions)
        epochs = task.baseline_epochs(cfg.train_centralized.epochs)
        t0 = time.perf_counter()
        torch.manual_seed(cfg.base.seed)
        models["centralized"] = task.initial_model()
        pooled = task.load_dataset(split_dirs(hospitals, "train"))
        train_with_config(
            task, models["centralized"], pooled, cfg, epochs=epochs, seed=0, label="c"
        )
        info["centralized"] = {"seconds": time.perf_counter() - t0}
        plain = _config(args.profile, rounds=args.rounds, model=PLAIN_LORA, seed=args.seed)
        torch.manual_seed(cfg.base.seed)
        plain_task = get_task("extraction", plain)
        models["centralized_plain_lora"] = plain_task.initial_model()
        train_with_config(
            plain_task,
            models["centralized_plain_lora"],
            pooled,
            plain,
            epochs=epochs,
            seed=0,
            label="plain",
        )
        for h in hospitals:
            torch.manual_seed(cfg.base.seed)
            model = task.initial_model()
            train_with_config(
                task,
                model,
                task.load_dataset([h / "train"]),
                cfg,
                epochs=epochs,
                seed=0,
                label=h.name,
            )
            models[f"local:{h.name}"] = model
        models["federated"], info["federated"] = _federate(cfg, hospitals, work / "fed")
        momentum = _config(args.profile, strategy="fedavgm", rounds=args.rounds, seed=args.seed)
        models["federated_momentum"], info["federated_momentum"] = _federate(
            momentum, hospitals, work / "momentum"
        )
        plus = _config(args.profile, strategy="plus", rounds=args.rounds, seed=args.seed)
        models["federated_plus"], info["federated_plus"] = _federate(plus, hospitals, work / "plus")
        full_cfg = _config(args.profile, mode="full", rounds=args.rounds, seed=args.seed)
        if not args.no_full:
            models["federated_full"], info["federated_full"] = _federate(
                full_cfg, hospitals, work / "full"
            )
        tests = {h.name: task.load_dataset([h / "test"]) for h in hospitals}
        pooled_test = task.load_dataset(split_dirs(hospitals, "test"))
        results: dict[str, Any] = {}
        for name, model in models.items():
            scorer = get_task("extraction", full_cfg) if name == "federated_full" else task
            per = {h: scorer.evaluate(model, ds)["entity_f1_strict"] for h, ds in tests.items()}
            results[name] = {
                "pooled": scorer.evaluate(model, pooled_test),
                "per_hospital": {h: {"entity_f1_strict": v} for h, v in per.items()},
            }
        settings = task.evaluation_settings(
            {n: m for n, m in models.items() if n != "federated_full"},
            partitions / COHORTS_DIR,
            {n: r for n, r in results.items() if n != "federated_full"},
        )
        if not args.no_full:
            ext = task.load_dataset([partitions / COHORTS_DIR / EXTERNAL])
            settings["external_validation"]["federated_full"] = get_task(
                "extraction", full_cfg
            ).evaluate(models["federated_full"], ext)
        exchanged = {n: sum(v.numel() for v in m.state_dict().values()) for n, m in models.items()}
    markdown = settings.pop("markdown")
    settings.pop("summary")
    external = settings["external_validation"]
    rows = []
    for name in models:
        r = results[name]
        ext = external.get(name, {})
        rows.append(
            [
                name,
                *(r["pooled"][c] for c in COLUMNS),
                sum(p["entity_f1_strict"] for p in r["per_hospital"].values()) / len(tests),
                *(ext.get(c, float("nan")) for c in COLUMNS),
                exchanged[name],
            ]
        )
    table = md_table(
        [
            "model",
            "pooled strict F1",
            "pooled lenient F1",
            "pooled relation F1",
            "in-domain mean strict F1",
            "external strict F1",
            "external lenient F1",
            "external relation F1",
            "values sent",
        ],
        rows,
    )
    ext_f1 = {n: v["entity_f1_strict"] for n, v in external.items()}
    pooled_f1 = {n: r["pooled"]["entity_f1_strict"] for n, r in results.items()}
    c_ext, f_ext = ext_f1["centralized"], ext_f1["federated"]
    best_local = max(v for n, v in ext_f1.items() if n.startswith("local:"))
    summary = {
        "federated_to_centralized_external": f_ext / c_ext,
        "federated_to_centralized_pooled": pooled_f1["federated"] / pooled_f1["centralized"],
        "momentum_to_centralized_external": ext_f1["federated_momentum"] / c_ext,
        "momentum_to_centralized_pooled": pooled_f1["federated_momentum"]
        / pooled_f1["centralized"],
        "momentum_to_plain_lora_centralized_external": ext_f1["federated_momentum"]
        / ext_f1["centralized_plain_lora"],
        "federated_minus_best_local_external": f_ext - best_local,
        "momentum_minus_best_local_external": ext_f1["federated_momentum"] - best_local,
        "plus_minus_fedavg_external": ext_f1["federated_plus"] - f_ext,
        "new_site_adapted_to_in_domain": settings["new_site"]["adapted_to_in_domain"],
        "bytes_update_lora": info["federated"]["bytes_update_per_hospital_round"],
    }
    if "federated_full" in info:
        summary["bytes_full_to_lora"] = (
            info["federated_full"]["bytes_update_per_hospital_round"]
            / info["federated"]["bytes_update_per_hospital_round"]
        )
    lines = [f"- {k}: {v:.3f}" for k, v in summary.items()]
    markdown = table + "\n" + "\n".join(lines) + "\n\n" + markdown
    write_result(
        "extraction"
        + (f"_rounds{args.rounds}" if args.rounds else "")
        + (f"_seed{args.seed}" if args.seed is not None else ""),
        {"summary": summary, "results": results, "settings": settings, "runs": info},
        markdown,
        f"python -m benchmarks extraction --profile {args.profile}"
        + (f" --rounds {args.rounds}" if args.rounds else "")
        + (f" --seed {args.seed}" if args.seed is not None else "")
        + (" --no-full" if args.no_full else ""),
    )
