"""One entry point for every benchmark: ``python -m benchmarks <name> [options]``.

``python -m benchmarks list`` names them; each writes ``benchmarks/results/<name>.json`` and a
Markdown table (``<name>.md``) that BENCHMARKS.md shows.
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["BENCHMARKS", "main"]

#: name -> (module under ``benchmarks``, the figure of issue 7 it measures)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "federation_overhead": ("overhead", "1. federated / centralized wall time, fixed + factor"),
    "federation_latency": ("federation_latency", "1. per-round latency: stock vs warm ClientApp"),
    "privacy_overhead": ("privacy", "2. DP-SGD step time and peak memory: hooks vs ghost"),
    "dp_step": (
        "dp_step",
        "2. DP-SGD step / plain step for every task's model, through Task.fit",
    ),
    "communication": ("communication", "3. bytes per round per hospital"),
    "scale": ("scale", "4. 3-20 hospitals: round time and federation memory"),
    "pipeline": ("pipeline", "5. dvc repro of the default profile, then a no-change rerun"),
    "accuracy": ("accuracy", "6. privacy-utility and federation-size accuracy studies"),
    "secure_aggregation": (
        "secure_aggregation",
        "secure aggregation: SecAgg+ off vs on, seconds and bytes per round",
    ),
    "notes": (
        "notes",
        "notes task: training tokens/s centralized vs federated, bytes/round full vs LoRA",
    ),
    "privacy_utility": (
        "privacy_utility",
        "ε 0.5-8 and ∞ against utility per task, mean ± sd over seeds, public-only row",
    ),
    "retina": (
        "retina",
        "retina task (FedGAN): federated vs centralized generator quality by federation size",
    ),
    "extraction": (
        "extraction",
        "extraction task: Fed-MedLoRA(+) vs centralized and single-site F1, bytes full vs LoRA",
    ),
    "comparison": (
        "comparison",
        "every model best-on-validation, each over >= 3 seeds: the README comparison tables",
    ),
    "peers": (
        "peers",
        "PrivFed vs stock Flower, Flower's simulation engine and NVIDIA FLARE's simulator",
    ),
    "report": ("report", "refresh BENCHMARKS.md's tables from benchmarks/results/*.md"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("list", "-h", "--help"):
        print("usage: python -m benchmarks <name> [options]   (<name> --help for options)\n")
        for name, (_, what) in BENCHMARKS.items():
            print(f"  {name:<20} {what}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in BENCHMARKS:
        print(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"benchmarks.{BENCHMARKS[name][0]}")
    module.main(rest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
