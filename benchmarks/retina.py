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
"""

from __future__ import annotations

import argparse
import copy
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


def run_size(profile: str, hospitals: int, scheme: str, work: Path) -> dict[str, Any]:
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

    start = time.perf_counter()
    central = task.initial_model()
    task.fit(central, pooled_train, FitPlan(epochs=s.baseline_epochs, seed=cfg.base.seed, **plan))
    central_s = time.perf_counter() - start

    start = time.perf_counter()
    fed = task.initial_model()
    for rnd in range(cfg.train_federated.rounds):
        states = []
        for i, train in enumerate(trains):
            local = copy.deepcopy(fed)
            seed = cfg.base.seed + 1000 * (rnd + 1) + i
            task.fit(
                local, train, FitPlan(epochs=cfg.train_federated.local_epochs, seed=seed, **plan)
            )
            states.append(local.state_dict())
        fed.load_state_dict(_fedavg(states, [len(t) for t in trains]))
    federated_s = time.perf_counter() - start

    scores = {"centralized": task.evaluate(central, test), "federated": task.evaluate(fed, test)}
    c, f = scores["centralized"], scores["federated"]
    return {
        "hospitals": hospitals,
        "train_images": len(pooled_train),
        "test_images": len(test),
        "seconds": {"centralized": central_s, "federated": federated_s},
        "scores": scores,
        "fid_ratio": c["fid"] / f["fid"],
        "tstr_ratio_to_central": f["tstr_accuracy"] / max(c["tstr_accuracy"], 1e-12),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks retina")
    parser.add_argument("--profile", default="default")
    parser.add_argument("--hospitals", type=int, nargs="+", default=[3])
    parser.add_argument("--scheme", default="origin", choices=("origin", "dirichlet"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows, results = [], []
    with tempfile.TemporaryDirectory(prefix="privfed-retina-bench-") as tmp:
        for n in args.hospitals:
            result = run_size(args.profile, n, args.scheme, Path(tmp))
            results.append(result)
            for name in ("centralized", "federated"):
                sc = result["scores"][name]
                rows.append(
                    [n, name, *(sc[k] for k in FIGURES), result["seconds"][name]]
                    + (
                        [result["fid_ratio"], result["tstr_ratio_to_central"]]
                        if name == "federated"
                        else ["", ""]
                    )
                )
    markdown = md_table(
        ["hospitals", "model", *FIGURES, "train s", "FID central/fed", "TSTR fed/central"], rows
    )
    command = "python -m benchmarks retina " + " ".join(argv or [])
    write_result(
        "retina",
        {"profile": args.profile, "scheme": args.scheme, "runs": results},
        markdown,
        command,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
