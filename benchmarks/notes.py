"""Task ``notes``: training throughput centralized vs federated, and bytes per round full vs LoRA.

One local federation (TLS, enrolled SuperNodes, warm ClientApps) on the task's data, no DP; for
each ``model.notes.mode`` (full, lora), side by side in one run:

* training tokens/s, centralized: tokens of the pooled training split x epochs over the seconds
  of :func:`privfed.training.train_with_config`, in this process;
* training tokens/s, federated: every hospital's training tokens x local epochs x rounds over
  the sum of the server's per-round seconds (a round includes validation, (de)serialization and
  transport; start-up is excluded);
* bytes per round per hospital: the serialized reply of each hospital (its ``bytes_sent``,
  counted by the ClientApp from Flower's protobuf), mean over hospitals and rounds;
* pooled-test perplexity of the federated model after the rounds.

Centralized throughput is measured over ``--central-epochs`` epochs (throughput, not a
baseline model: the pipeline's ``train_centralized`` is that).

    python -m benchmarks notes [--profile default] [--rounds 8] [--central-epochs 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import make_config, md_table, prepare_data, wait_for_quiet, write_result
from privfed.checkpoints import load_model
from privfed.config import PrivFedConfig
from privfed.federated.launcher import LocalFederation, RunSpec
from privfed.logs import setup_logging
from privfed.partitions import hospital_dirs, split_dirs
from privfed.tasks import get_task
from privfed.training import train_with_config

MODES = ("full", "lora")


def _config(profile: str, rounds: int, mode: str) -> PrivFedConfig:
    return make_config(
        profile,
        {
            "base": {"task": "notes"},
            "model": {"notes": {"mode": mode}},
            "train_federated": {"rounds": rounds},
            "privacy": {"enabled": False},
            "register_model": {"candidate": "federated"},
        },
    )


def _tokens(dataset: Any) -> int:
    """Next-token targets in a notes dataset (what one epoch trains on)."""
    return int(dataset.tensors[1][:, 1:].sum())


def summarize(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Ratios between the measured modes and settings."""
    out: dict[str, Any] = {}
    for mode, row in rows.items():
        out[f"{mode}_federated_to_centralized_tokens_per_s"] = (
            row["federated_tokens_per_s"] / row["centralized_tokens_per_s"]
        )
    if {"full", "lora"} <= set(rows):
        out["bytes_full_to_lora"] = rows["full"]["bytes_sent"] / rows["lora"]["bytes_sent"]
        out["perplexity_lora_to_full"] = (
            rows["lora"]["federated_perplexity"] / rows["full"]["federated_perplexity"]
        )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks notes")
    parser.add_argument("--profile", default="default")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--central-epochs", type=int, default=1)
    args = parser.parse_args(argv)
    setup_logging("WARNING")
    base = _config(args.profile, args.rounds, "lora")
    task = get_task("notes", base)
    task.assets()  # the public tokenizer and base, built before anything is timed
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="privfed-bench-notes-") as tmp:
        work = Path(tmp)
        hospitals = hospital_dirs(prepare_data(base, work / "data"))
        pooled = task.load_dataset(split_dirs(hospitals, "train"))
        test = task.load_dataset(split_dirs(hospitals, "test"))
        fed_epochs = args.rounds * base.train_federated.local_epochs
        epochs = args.central_epochs
        with LocalFederation(base, hospitals, work / "fed") as federation:
            for mode in MODES:
                cfg = _config(args.profile, args.rounds, mode)
                mode_task = get_task("notes", cfg)
                wait_for_quiet()
                torch.manual_seed(cfg.base.seed)
                model = mode_task.build_model()
                t0 = time.perf_counter()
                train_with_config(
                    mode_task, model, pooled, cfg, epochs=epochs, seed=0, label="centralized"
                )
                central_s = time.perf_counter() - t0
                wait_for_quiet()
                federation.cfg = cfg
                run = federation.run(RunSpec(name=mode, out_dir=work / mode, dp=False))
                trained = run["rounds"][1:]
                fed_s = sum(r["seconds"] for r in trained)
                sent = [t["bytes_sent"] for r in trained for t in r["train"].values()]
                update = [t["bytes_update"] for r in trained for t in r["train"].values()]
                final = load_model(work / mode / "model.pt", cfg)
                rows[mode] = {
                    "centralized_tokens_per_s": _tokens(pooled) * epochs / central_s,
                    "centralized_seconds": central_s,
                    "federated_tokens_per_s": _tokens(pooled) * fed_epochs / fed_s,
                    "federated_round_seconds": [r["seconds"] for r in trained],
                    "bytes_sent": sum(sent) / len(sent),
                    "bytes_update": sum(update) / len(update),
                    "exchanged_values": sum(v.numel() for v in final.state_dict().values()),
                    "federated_perplexity": mode_task.evaluate(final, test)["perplexity"],
                }
                print(mode, rows[mode], flush=True)
    summary = summarize(rows)
    table = md_table(
        [
            "mode",
            "centralized tokens/s",
            "federated tokens/s",
            "federated / centralized",
            "KiB sent per hospital per round",
            "values exchanged",
            "federated perplexity",
        ],
        [
            [
                mode,
                r["centralized_tokens_per_s"],
                r["federated_tokens_per_s"],
                summary[f"{mode}_federated_to_centralized_tokens_per_s"],
                r["bytes_sent"] / 1024,
                r["exchanged_values"],
                r["federated_perplexity"],
            ]
            for mode, r in rows.items()
        ],
    )
    if "bytes_full_to_lora" in summary:
        table += (
            f"\nfull / LoRA bytes per round: {summary['bytes_full_to_lora']:.1f}x; "
            f"LoRA / full perplexity: {summary['perplexity_lora_to_full']:.3f}\n"
        )
    command = (
        f"python -m benchmarks notes --profile {args.profile} --rounds {args.rounds} "
        f"--central-epochs {args.central_epochs}"
    )
    write_result(
        "notes",
        {"profile": args.profile, "rounds": args.rounds, "modes": rows, "summary": summary},
        table,
        command,
    )
