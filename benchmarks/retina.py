"""Task ``retina`` (FedGAN): federated vs centralized generator quality, by federation size.

For each number of hospitals N: the task's data for N hospitals (``base.num_hospitals``; each
hospital its own camera and case mix, or ``--scheme dirichlet`` for label skew by grade),
partitioned by the pipeline's own data stages; a centralized GAN trained on the pooled training
images for ``model.retina.baseline_epochs``; a federated GAN trained by FedAvg over the N
hospitals for ``train_federated.rounds`` x ``local_epochs`` (in process: each hospital's
:meth:`RetinaTask.fit` from the global weights, then the example-weighted mean of generator and
discriminator, the arithmetic of Flower's FedAvg without the transport; no DP). Both are
scored by :meth:`RetinaTask.evaluate` on the pooled test images (docs/retina.md defines the
figures), and the ratios to centralized are reported: FID central/federated (>= 1: federated at
least as good) and train-on-synthetic accuracy federated/central.

    python -m benchmarks retina [--profile default] [--hospitals 3 5 7 10] [--scheme origin]
        [--models centralized federated federated_dp]

``federated_dp`` is the same federation with DP-SGD on every hospital's discriminator steps
on real images (``privacy.*``: noise calibrated for ``privacy.target_epsilon`` over
``rounds x privacy.local_epochs`` epochs, the accountant's history carried over rounds, as
the deployed client does); its ε per hospital is reported. Results go to
``results/retina.json``, or ``results/retina_<models>.json`` for another model list.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import make_config, md_table, prepare_data, write_result
from privfed.tasks import get_task
from privfed.training import FitPlan

__all__ = ["main", "run_size"]

FIGURES = ("fid", "kid_x1000", "realism", "tstr_accuracy", "trtr_accuracy", "nn_ratio")


def _fedavg(states: list[dict[str, torch.Tensor]], weights: list[int]) -> dict[str, torch.Tensor]:
    total = float(sum(weights))
    return {
        k: sum(s[k].float() * (w / total) for s, w in zip(states, weights, strict=True)).to(
            states[0][k].dtype
        )
        for k in states[0]
    }


def _federate(task: Any, cfg: Any, trains: list, *, dp: bool) -> tuple[torch.nn.Module, dict]:
    """FedAvg rounds in process; with ``dp`` each hospital's fit is DP-SGD (its own history)."""
    from privfed.federated.client import _noise_multiplier
    from privfed.privacy import epsilon_from_history
    from privfed.training import DPSettings, dp_batch_size, dp_local_epochs, dp_lr

    s = cfg.model.retina
    fed = task.initial_model()
    histories: list[list] = [[] for _ in trains]
    sigmas = [_noise_multiplier(cfg, len(t)) for t in trains] if dp else []
    for rnd in range(cfg.train_federated.rounds):
        states = []
        for i, train in enumerate(trains):
            local = copy.deepcopy(fed)
            seed = cfg.base.seed + 1000 * (rnd + 1) + i
            if dp:
                settings = DPSettings(
                    noise_multiplier=sigmas[i],
                    max_grad_norm=task.dp_max_grad_norm(),
                    history=histories[i],
                )
                plan = FitPlan(
                    epochs=dp_local_epochs(cfg),
                    batch_size=dp_batch_size(task, cfg),
                    lr=dp_lr(task, cfg),
                    seed=seed,
                    dp=settings,
                )
            else:
                plan = FitPlan(
                    epochs=cfg.train_federated.local_epochs,
                    batch_size=s.batch_size,
                    lr=s.lr,
                    seed=seed,
                )
            result = task.fit(local, train, plan)
            if dp:
                histories[i] = result.history
            states.append(local.state_dict())
        fed.load_state_dict(_fedavg(states, [len(t) for t in trains]))
    info: dict[str, Any] = {}
    if dp:
        info["noise_multiplier"] = sigmas
        info["epsilon"] = [
            epsilon_from_history(h, delta=cfg.privacy.delta, accountant=cfg.privacy.accountant)
            for h in histories
        ]
    return fed, info


def run_size(
    profile: str, hospitals: int, scheme: str, work: Path, models: list[str] | None = None
) -> dict[str, Any]:
    models = models or ["centralized", "federated"]
    cfg = make_config(
        profile,
        {
            "base": {"task": "retina", "num_hospitals": hospitals},
            "partition_data": {"scheme": scheme},
        },
    )
    task = get_task("retina", cfg)
    s = cfg.model.retina
    parts = prepare_data(cfg, work / f"n{hospitals}")
    dirs = sorted(p for p in parts.iterdir() if p.is_dir())
    trains = [task.load_dataset([d / "train"]) for d in dirs]
    pooled_train = task.load_dataset([d / "train" for d in dirs])
    test = task.load_dataset([d / "test" for d in dirs])
    plan = {"batch_size": s.batch_size, "lr": s.lr}

    trained, seconds, info = {}, {}, {}
    if "centralized" in models:
        start = time.perf_counter()
        central = task.initial_model()
        task.fit(
            central, pooled_train, FitPlan(epochs=s.baseline_epochs, seed=cfg.base.seed, **plan)
        )
        seconds["centralized"] = time.perf_counter() - start
        trained["centralized"] = central
    for name in ("federated", "federated_dp"):
        if name in models:
            start = time.perf_counter()
            trained[name], info[name] = _federate(task, cfg, trains, dp=name == "federated_dp")
            seconds[name] = time.perf_counter() - start

    scores = {name: task.evaluate(model, test) for name, model in trained.items()}
    ratios: dict[str, float] = {}
    if "centralized" in scores:
        c = scores["centralized"]
        for name in scores:
            if name != "centralized":
                ratios[f"{name}_fid_ratio"] = c["fid"] / scores[name]["fid"]
                ratios[f"{name}_tstr_to_central"] = scores[name]["tstr_accuracy"] / max(
                    c["tstr_accuracy"], 1e-12
                )
    return {
        "hospitals": hospitals,
        "train_images": len(pooled_train),
        "test_images": len(test),
        "seconds": seconds,
        "scores": scores,
        "ratios": ratios,
        "privacy": info.get("federated_dp", {}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks retina")
    parser.add_argument("--profile", default="default")
    parser.add_argument("--hospitals", type=int, nargs="+", default=[3])
    parser.add_argument("--scheme", default="origin", choices=("origin", "dirichlet"))
    parser.add_argument(
        "--models",
        nargs="+",
        default=["centralized", "federated"],
        choices=("centralized", "federated", "federated_dp"),
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows, results = [], []
    with tempfile.TemporaryDirectory(prefix="privfed-retina-bench-") as tmp:
        for n in args.hospitals:
            result = run_size(args.profile, n, args.scheme, Path(tmp), args.models)
            results.append(result)
            for name, sc in result["scores"].items():
                r = result["ratios"]
                rows.append(
                    [n, name, *(sc[k] for k in FIGURES), result["seconds"][name]]
                    + [r.get(f"{name}_fid_ratio", ""), r.get(f"{name}_tstr_to_central", "")]
                )
    markdown = md_table(
        ["hospitals", "model", *FIGURES, "train s", "FID central/model", "TSTR model/central"],
        rows,
    )
    command = "python -m benchmarks retina " + " ".join(argv if argv is not None else sys.argv[2:])
    name = (
        "retina"
        if args.models == ["centralized", "federated"]
        else "retina_" + "_".join(args.models)
    )
    write_result(
        name,
        {"profile": args.profile, "scheme": args.scheme, "runs": results},
        markdown,
        command,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
