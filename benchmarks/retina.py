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
        [--models public_only centralized federated federated_dp] [--images-total 900]
        [--jobs 2] [--name retina_study] [--init scratch] [--seeds 42 43 44]
        [--set ema_decay=0 class_weight=0 train_federated.local_epochs=1] [--tstr-multiples 4]
        [--latent-scales 1.5 2] [--confusions]

``--images-total`` holds the pooled image count fixed across federation sizes (each of N
hospitals gets ``total // N`` images), as the seed split one dataset among 3, 5, 7 and 10
clients; without it each hospital has ``generate_data.retina.images_per_hospital``.
``--jobs`` runs federation sizes in parallel processes (one intra-op thread each).
``--set KEY=VALUE`` changes ``model.retina`` keys (an ablation: ``--set class_weight=0``), or
any config key by its dotted path (``--set train_federated.local_epochs=1``), and
``--seeds`` repeats every size with each ``base.seed`` (data, splits, initial weights, training
draws); the table then has one row per size, seed and model. ``--tstr-multiples 4`` adds
``tstr_ratio_x4``: train-on-synthetic with four times as many generated images as real training
images (the task's own figure uses as many), over the same train-on-real accuracy.
``--latent-scales 1.5`` scores every model once more with its latent codes drawn from
N(0, 1.5^2) instead of N(0, 1) (rows ``"federated z*1.5"``; training is unchanged).
``--confusions`` records, per model, where the grades go wrong (the JSON's ``confusions``):
the confusion matrices on the pooled test images of the train-on-real classifier (``trtr``)
and of the train-on-synthetic one (``tstr``), the train-on-real classifier's grades of the
generated training images (``fidelity``: rows are the grades asked for), and both
classifiers' accuracy on each hospital's own test images (``per_hospital``).
``public_only`` scores the public GAN (``model.init: public``: pretrained on CT slices only)
that every other model starts from. Per round, the federation's example-weighted generator
and discriminator losses are kept; the loss curves and one sample grid per size go to
``results/<name>_losses.png`` and ``results/<name>_samples.png``.

``federated_dp`` is the same federation with DP-SGD on every hospital's discriminator steps
on real images (``privacy.*``: noise calibrated for ``privacy.target_epsilon`` over
``rounds x privacy.local_epochs`` epochs, the accountant's history carried over rounds, as
the deployed client does); its ε per hospital is reported. Results go to
``results/retina.json``, or ``results/retina_<models>.json`` for another model list.
"""

from __future__ import annotations

import argparse
import copy
import functools
import multiprocessing
import shlex
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
import yaml

from benchmarks.common import RESULTS, make_config, md_table, prepare_data, write_result
from privfed.config import deep_merge
from privfed.tasks import get_task
from privfed.training import FitPlan

__all__ = ["main", "run_size"]

#: Models in the order tables and figures show them.
ORDER = ("public_only", "centralized", "federated", "federated_dp")
FIGURES = (
    "fid",
    "kid_x1000",
    "realism",
    "tstr_accuracy",
    "trtr_accuracy",
    "tstr_ratio",
    "nn_ratio",
)


def _fedavg(states: list[dict[str, torch.Tensor]], weights: list[int]) -> dict[str, torch.Tensor]:
    total = float(sum(weights))
    return {
        k: sum(s[k].float() * (w / total) for s, w in zip(states, weights, strict=True)).to(
            states[0][k].dtype
        )
        for k in states[0]
    }


def _round_losses(rnd: int, results: list) -> dict[str, float]:
    """One round's generator and discriminator losses, example-weighted over hospitals."""
    n = sum(r.num_examples for r in results)
    row = {"round": rnd}
    for key in results[0].losses:
        row[key] = sum(r.losses[key] * r.num_examples for r in results) / n
    return row


def _federate(task: Any, cfg: Any, trains: list, *, dp: bool) -> tuple[torch.nn.Module, dict]:
    """FedAvg rounds in process; with ``dp`` each hospital's fit is DP-SGD (its own history)."""
    from privfed.federated.client import _noise_multiplier
    from privfed.privacy import epsilon_from_history
    from privfed.training import DPSettings, dp_batch_size, dp_local_epochs, dp_lr

    s = cfg.model.retina
    fed = task.initial_model()
    histories: list[list] = [[] for _ in trains]
    sigmas = [_noise_multiplier(cfg, len(t)) for t in trains] if dp else []
    curves: list[dict[str, float]] = []
    for rnd in range(cfg.train_federated.rounds):
        states, results = [], []
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
            results.append(result)
        fed.load_state_dict(_fedavg(states, [len(t) for t in trains]))
        curves.append(_round_losses(rnd + 1, results))
    info: dict[str, Any] = {"losses": curves}
    if dp:
        info["noise_multiplier"] = sigmas
        info["epsilon"] = [
            epsilon_from_history(h, delta=cfg.privacy.delta, accountant=cfg.privacy.accountant)
            for h in histories
        ]
    return fed, info


def _model_overrides(init: str | None, retina: dict[str, Any]) -> dict[str, Any]:
    """``model`` keys for the profile overlay (merged deeply: the profile's other
    ``model.retina`` keys stay)."""
    return {**({"init": init} if init else {}), **({"retina": retina} if retina else {})}


def _assignments(pairs: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``["ema_decay=0", "train_federated.local_epochs=1"]`` -> the ``model.retina`` changes
    ``{"ema_decay": 0}`` and the other sections' ``{"train_federated": {"local_epochs": 1}}``:
    a key without a dot is a ``model.retina`` key, a dotted one a path from the config root
    (values parsed as YAML scalars)."""
    retina: dict[str, Any] = {}
    sections: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or "" in key.split("."):
            raise SystemExit(
                f"--set {pair!r}: expected KEY=VALUE (a model.retina key or a dotted config path)"
            )
        *parents, leaf = key.split(".")
        node = retina if not parents else sections
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return retina, sections


def _grid_name(hospitals: int, seed: int, model: str) -> str:
    return f"n{hospitals}_s{seed}_{model.replace(' ', '_').replace('*', 'x')}.png"


def _model_order(name: str) -> tuple[int, str]:
    """Table and figure order: :data:`ORDER`, each model's ``"<model> z*<scale>"`` after it."""
    return ORDER.index(name.split(" ")[0]), name


def _larger_synthetic_sets(
    gan: torch.nn.Module,
    train: Any,
    test: Any,
    cfg: Any,
    trtr: float,
    multiples: tuple[int, ...],
) -> dict[str, float]:
    """``tstr_ratio_x<m>``: train-on-synthetic with m x as many generated images as real
    training images, over ``trtr``, in the feature space and with the seed
    :meth:`RetinaTask.evaluate` uses."""
    from privfed.tasks.retina.metrics import feature_classifier, train_on_synthetic

    s, seed = cfg.model.retina, cfg.base.seed
    classifier = feature_classifier(
        train.images, train.labels, epochs=s.evaluator_epochs, seed=seed
    )
    out = {}
    for m in multiples:
        tstr = train_on_synthetic(
            gan,
            classifier,
            test.images,
            test.labels,
            train.labels,
            epochs=s.evaluator_epochs,
            seed=seed,
            multiple=m,
        )
        out[f"tstr_ratio_x{m}"] = tstr / trtr if trtr else float("nan")
    return out


def _grade_confusions(
    gan: torch.nn.Module, train: Any, test: Any, tests: dict[str, Any], cfg: Any
) -> dict[str, Any]:
    """Where ``gan``'s train-on-synthetic grades go wrong, beside train-on-real's: the
    classifiers, samples and seeds of :meth:`RetinaTask.evaluate`, so the matrices add up to
    its ``tstr_accuracy`` and ``trtr_accuracy``."""
    from sklearn.metrics import confusion_matrix

    from privfed.tasks.retina.metrics import (
        _predict,
        classifier_accuracy,
        feature_classifier,
        synthetic_classifier,
    )

    s, seed = cfg.model.retina, cfg.base.seed
    real = feature_classifier(train.images, train.labels, epochs=s.evaluator_epochs, seed=seed)
    synthetic, images, grades = synthetic_classifier(
        gan, real, train.labels, epochs=s.evaluator_epochs, seed=seed
    )

    def matrix(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[list[int]]:
        pred = _predict(model, x).argmax(1)
        return confusion_matrix(y.numpy(), pred.numpy(), labels=range(5)).tolist()

    return {
        "trtr": matrix(real, test.images, test.labels),
        "tstr": matrix(synthetic, test.images, test.labels),
        "fidelity": matrix(real, images, grades),
        "per_hospital": {
            name: {
                "n": len(t.labels),
                "trtr_accuracy": classifier_accuracy(real, t.images, t.labels),
                "tstr_accuracy": classifier_accuracy(synthetic, t.images, t.labels),
            }
            for name, t in tests.items()
        },
    }


def _sampling_at(gan: torch.nn.Module, scale: float) -> torch.nn.Module:
    """A copy of ``gan`` whose samples draw latent codes with standard deviation ``scale``."""
    out = copy.deepcopy(gan)
    out.latent_scale = scale
    return out


def run_size(
    profile: str,
    hospitals: int,
    seed: int | None,
    scheme: str,
    work: Path,
    models: list[str] | None = None,
    images_total: int | None = None,
    figures: Path | None = None,
    init: str | None = None,
    retina: dict[str, Any] | None = None,
    sections: dict[str, Any] | None = None,
    tstr_multiples: tuple[int, ...] = (),
    latent_scales: tuple[float, ...] = (),
    confusions: bool = False,
) -> dict[str, Any]:
    """Data for ``hospitals`` (``base.seed`` = ``seed``, None: params.yaml's), the listed models
    trained and scored; JSON-ready figures.

    With ``figures``, each model's sample grid is written there (:func:`_grid_name`);
    ``retina`` changes ``model.retina`` keys and ``sections`` any other (nested) config keys;
    each of ``tstr_multiples`` adds ``tstr_ratio_x<m>`` (a generated set m x the real one);
    each of ``latent_scales`` adds every trained model once more as ``"<model> z*<scale>"``,
    sampling its latent codes from N(0, scale^2); ``confusions`` adds
    :func:`_grade_confusions` per model.
    """
    torch.set_num_threads(1)
    models = models or ["centralized", "federated"]
    data: dict[str, Any] = {}
    if images_total is not None:
        data = {"retina": {"images_per_hospital": images_total // hospitals}}
    overrides = {
        "base": {
            "task": "retina",
            "num_hospitals": hospitals,
            **({"seed": seed} if seed is not None else {}),
        },
        "partition_data": {"scheme": scheme},
        "generate_data": data,
        "model": _model_overrides(init, retina or {}),
    }
    cfg = make_config(profile, deep_merge(overrides, sections or {}))
    task = get_task("retina", cfg)
    s = cfg.model.retina
    parts = prepare_data(cfg, work / f"n{hospitals}_s{cfg.base.seed}")
    dirs = sorted(p for p in parts.iterdir() if p.is_dir())
    trains = [task.load_dataset([d / "train"]) for d in dirs]
    pooled_train = task.load_dataset([d / "train" for d in dirs])
    test = task.load_dataset([d / "test" for d in dirs])
    plan = {"batch_size": s.batch_size, "lr": s.lr}

    trained, seconds, info = {}, {}, {}
    if "public_only" in models:
        start = time.perf_counter()
        trained["public_only"] = task.initial_model()  # model.init: the public GAN (cached)
        seconds["public_only"] = time.perf_counter() - start
    if "centralized" in models:
        start = time.perf_counter()
        central = task.initial_model()
        result = task.fit(
            central, pooled_train, FitPlan(epochs=s.baseline_epochs, seed=cfg.base.seed, **plan)
        )
        seconds["centralized"] = time.perf_counter() - start
        trained["centralized"] = central
        info["centralized"] = {"losses": dict(result.losses)}
    for name in ("federated", "federated_dp"):
        if name in models:
            start = time.perf_counter()
            trained[name], info[name] = _federate(task, cfg, trains, dp=name == "federated_dp")
            seconds[name] = time.perf_counter() - start

    for name in list(trained):
        for scale in latent_scales:
            trained[f"{name} z*{scale:g}"] = _sampling_at(trained[name], scale)
    scores = {name: task.evaluate(model, test) for name, model in trained.items()}
    for name, model in trained.items():
        trtr = scores[name]["trtr_accuracy"]
        scores[name].update(
            _larger_synthetic_sets(model, pooled_train, test, cfg, trtr, tstr_multiples)
        )
    grade_views = {}
    if confusions:
        tests = {d.name: task.load_dataset([d / "test"]) for d in dirs}
        grade_views = {
            name: _grade_confusions(model, pooled_train, test, tests, cfg)
            for name, model in trained.items()
        }
    if figures is not None:
        from privfed.tasks.retina.figures import sample_grid

        for name, model in trained.items():
            sample_grid(
                model,
                figures / _grid_name(hospitals, cfg.base.seed, name),
                title=f"{name}, {hospitals} hospitals, seed {cfg.base.seed}",
            )
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
        "init": cfg.model.init,
        "seed": cfg.base.seed,
        "retina": cfg.model.retina.model_dump(mode="json"),
        "train_images": len(pooled_train),
        "test_images": len(test),
        "seconds": seconds,
        "scores": scores,
        "ratios": ratios,
        "losses": {name: v["losses"] for name, v in info.items()},
        "privacy": {k: v for k, v in info.get("federated_dp", {}).items() if k != "losses"},
        **({"confusions": grade_views} if confusions else {}),
    }


def _loss_figure(results: list[dict[str, Any]], out: Path) -> Path:
    """Generator and discriminator loss per round, one line per federation size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, key in zip(axes, ("generator_loss", "discriminator_loss"), strict=True):
        for r in results:
            for name, curve in r["losses"].items():
                if isinstance(curve, list):  # federated: one row per round
                    ax.plot(
                        [c["round"] for c in curve],
                        [c[key] for c in curve],
                        marker="o",
                        ms=3,
                        label=f"{r['hospitals']} hospitals, seed {r['seed']}, {name}",
                    )
        ax.set_title(key.replace("_", " ") + " (example-weighted mean over hospitals)", fontsize=8)
        ax.set_xlabel("round")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def _samples_figure(figures: Path, results: list[dict[str, Any]], out: Path) -> Path:
    """The grids of every size and model side by side (rows: sizes, columns: models)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({n for r in results for n in r["scores"]}, key=_model_order)
    fig, axes = plt.subplots(
        len(results), len(names), figsize=(4 * len(names), 4 * len(results)), squeeze=False
    )
    for i, r in enumerate(results):
        for j, name in enumerate(names):
            ax = axes[i, j]
            ax.axis("off")
            path = figures / _grid_name(r["hospitals"], r["seed"], name)
            if path.is_file():
                ax.imshow(plt.imread(path))
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks retina")
    parser.add_argument("--profile", default="default")
    parser.add_argument("--hospitals", type=int, nargs="+", default=[3])
    parser.add_argument("--scheme", default="origin", choices=("origin", "dirichlet"))
    parser.add_argument("--models", nargs="+", default=["centralized", "federated"], choices=ORDER)
    parser.add_argument("--images-total", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=1, help="federation sizes run in parallel")
    parser.add_argument("--name", default=None, help="result file name (default from --models)")
    parser.add_argument("--init", default=None, help="model.init (default: params.yaml's, public)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[None], help="base.seed values")
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="model.retina keys, or dotted config paths (train_federated.local_epochs=1)",
    )
    parser.add_argument(
        "--tstr-multiples",
        type=int,
        nargs="+",
        default=[],
        metavar="M",
        help="also train-on-synthetic with M x as many generated images (tstr_ratio_xM)",
    )
    parser.add_argument(
        "--latent-scales",
        type=float,
        nargs="+",
        default=[],
        metavar="S",
        help="also score every model sampling latent codes from N(0, S^2)",
    )
    parser.add_argument(
        "--confusions",
        action="store_true",
        help="also record per model where train-on-synthetic's grades go wrong (JSON only)",
    )
    args = parser.parse_args(argv)
    models = [m for m in ORDER if m in args.models]
    name = args.name or (
        "retina" if models == ["centralized", "federated"] else "retina_" + "_".join(models)
    )
    figures = RESULTS / f"{name}_grids"
    retina, sections = _assignments(args.set)
    with tempfile.TemporaryDirectory(prefix="privfed-retina-bench-") as tmp:
        run = functools.partial(
            run_size,
            args.profile,
            scheme=args.scheme,
            work=Path(tmp),
            models=models,
            images_total=args.images_total,
            figures=figures,
            init=args.init,
            retina=retina,
            sections=sections,
            tstr_multiples=tuple(args.tstr_multiples),
            latent_scales=tuple(args.latent_scales),
            confusions=args.confusions,
        )
        # largest first, so the longest run does not start last
        sizes = [n for n in sorted(args.hospitals, reverse=True) for _ in args.seeds]
        seeds = [s for _ in args.hospitals for s in args.seeds]
        if args.jobs > 1:
            spawn = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=args.jobs, mp_context=spawn) as pool:
                results = list(pool.map(run, sizes, seeds))
        else:
            results = [run(n, s) for n, s in zip(sizes, seeds, strict=True)]
        results.sort(key=lambda r: (r["hospitals"], r["seed"]))
    figures_shown = [*FIGURES, *(f"tstr_ratio_x{m}" for m in args.tstr_multiples)]
    rows = []
    for result in results:
        r = result["ratios"]
        for model, sc in sorted(result["scores"].items(), key=lambda kv: _model_order(kv[0])):
            rows.append(
                [result["hospitals"], result["seed"], model, *(sc[k] for k in figures_shown)]
                + [result["seconds"].get(model, "")]
                + [r.get(f"{model}_fid_ratio", ""), r.get(f"{model}_tstr_to_central", "")]
            )
    markdown = md_table(
        [
            "hospitals",
            "seed",
            "model",
            *figures_shown,
            "train s",
            "FID central/model",
            "TSTR model/central",
        ],
        rows,
    )
    if any(isinstance(c, list) for r in results for c in r["losses"].values()):
        _loss_figure(results, RESULTS / f"{name}_losses.png")
        markdown += f"\n\nLoss curves: `{name}_losses.png`."
    _samples_figure(figures, results, RESULTS / f"{name}_samples.png")
    shutil.rmtree(figures)  # kept side by side in the one samples figure
    markdown += f" Sample grids (rows: sizes; columns: models): `{name}_samples.png`."
    words = argv if argv is not None else sys.argv[2:]
    command = "python -m benchmarks retina " + shlex.join(words)  # copy-pasteable
    write_result(
        name,
        {
            "profile": args.profile,
            "scheme": args.scheme,
            "images_total": args.images_total,
            "runs": results,
        },
        markdown,
        command,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
