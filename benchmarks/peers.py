"""PrivFed against peer frameworks in one run: same model, same tensors, same rounds.

    python -m benchmarks peers [--profile default] [--rounds 8] [--repeats 1] [--only NAME ...]

Four runners train the readmission model of ``--profile`` (3 hospitals, non-DP FedAvg,
``train_federated.local_epochs`` epochs per round, the task's batch size and step size):

- ``privfed``: ``train_federated``'s federation as the pipeline runs it (real SuperLink and
  SuperNodes on 127.0.0.1 over TLS, warm ClientApp executors, PrivFed's SuperNode poll).
- ``flower_deployment_stock``: the same processes with Flower's own behaviour: a new
  ``flwr-clientapp`` process per message and the SuperNode's hard-coded waits
  (``clientapp_launcher: subprocess``, ``supernode_poll_s: null``).
- ``flower_simulation``: Flower 1.41's simulation engine (Ray; virtual SuperNodes, one process
  tree, no network), ``benchmarks/peer_apps/flower_sim.py``.
- ``nvflare_simulator``: NVIDIA FLARE's simulator with its PyTorch FedAvg recipe,
  ``benchmarks/peer_apps/nvflare_sim.py``.

The two peers run in their own virtual environments (``benchmarks/peer_apps/.venv-*``, made on
first use from the exact pins in ``benchmarks/peer_apps/requirements-*.txt``), never in the
project's; they train PrivFed's exported initial model on the exported tensors of each hospital
(``peer_apps/workload.py``: validate the received model, then the same local epochs).

Every runner's round is measured the same way: the round's wall time, and the work of the slowest
hospital in it (its client code from receiving the model to handing back the update).
**Overhead per round** = round time - that work: what the framework adds around the training.
PrivFed's round time is the server's (dispatch to aggregated); a peer's is the interval between
the first hospital's receipt of consecutive rounds' models (the same span, seen from a client).
Writes benchmarks/results/peers.json and .md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import TensorDataset

from benchmarks.common import (
    ROOT,
    make_config,
    md_table,
    prepare_data,
    wait_for_quiet,
    write_result,
)
from privfed.config import PrivFedConfig
from privfed.federated import ROUNDS_FILE
from privfed.logs import setup_logging
from privfed.partitions import hospital_dirs
from privfed.stages import train_federated
from privfed.tasks import get_task

APPS = ROOT / "benchmarks" / "peer_apps"
#: runner -> (virtual environment under APPS, its requirements file, the app script)
PEERS = {
    "flower_simulation": (".venv-flower-sim", "requirements-flower-sim.txt", "flower_sim.py"),
    "nvflare_simulator": (".venv-nvflare", "requirements-nvflare.txt", "nvflare_sim.py"),
}
#: runner -> train_federated overrides for the runners that are PrivFed's own federation
DEPLOYMENTS = {
    "privfed": {},
    "flower_deployment_stock": {"clientapp_launcher": "subprocess", "supernode_poll_s": None},
}
RUNNERS = (*DEPLOYMENTS, *PEERS)
#: how each runner places hospitals: what the comparison may and may not conclude
KIND = {
    "privfed": "deployment (a process per hospital, TLS)",
    "flower_deployment_stock": "deployment (a process per hospital, TLS)",
    "flower_simulation": "simulator (Ray actors in one process tree)",
    "nvflare_simulator": "simulator (a worker process per site, one parent)",
}


def _config(profile: str, rounds: int, overrides: dict[str, Any]) -> PrivFedConfig:
    return make_config(
        profile,
        {
            "train_federated": {"rounds": rounds, **overrides},
            "privacy": {"enabled": False},
            "register_model": {"candidate": "federated"},
        },
    )


def export_workload(cfg: PrivFedConfig, partitions: Path, folder: Path) -> dict[str, Any]:
    """PrivFed's initial model and each hospital's train/val tensors, in a torch-only layout."""
    task = get_task(cfg.base.task, cfg)
    folder.mkdir(parents=True, exist_ok=True)
    hospitals = []
    for hospital in hospital_dirs(partitions):
        splits = {s: task.load_dataset([hospital / s]) for s in ("train", "val")}
        for split, data in splits.items():
            if not isinstance(data, TensorDataset):
                raise TypeError(
                    f"peers needs a task whose datasets are TensorDatasets; {cfg.base.task!r} "
                    f"gives {type(data).__name__} for {hospital.name}/{split}"
                )
        torch.save({s: list(d.tensors) for s, d in splits.items()}, folder / f"{hospital.name}.pt")
        hospitals.append(hospital.name)
    torch.save(task.initial_model(), folder / "model.pt")
    plan = {
        "hospitals": hospitals,
        "rounds": cfg.train_federated.rounds,
        "epochs": cfg.train_federated.local_epochs,
        "batch_size": task.train_batch_size(),
        "lr": task.train_lr(),
        "weight_decay": cfg.train.weight_decay,
        "seed": cfg.base.seed,
        "src": str(ROOT / "src"),
    }
    (folder / "plan.json").write_text(json.dumps(plan, indent=1))
    return plan


def ensure_venv(name: str) -> Path:
    """The peer's Python, installing its virtual environment from the pinned file on first use."""
    venv_dir, requirements, _ = PEERS[name]
    python = APPS / venv_dir / "bin" / "python"
    stamp = APPS / venv_dir / "installed-from.txt"
    pins = (APPS / requirements).read_text()
    if python.is_file() and stamp.is_file() and stamp.read_text() == pins:
        return python
    print(f"installing {name}'s environment from {requirements} (once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(APPS / venv_dir)], check=True)
    pip = [
        str(python),
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "-r",
        str(APPS / requirements),
    ]
    subprocess.run(pip, check=True)
    subprocess.run([str(python), "-m", "pip", "check"], check=True)
    stamp.write_text(pins)
    return python


def _deployment_rows(run: dict[str, Any]) -> list[dict[str, float]]:
    """Per round: the server's round seconds and the slowest hospital's client seconds."""
    rows = []
    for row in run["rounds"][1:]:
        work = max(sum(t["seconds"].values()) for t in row["train"].values())
        rows.append({"round": row["round"], "round_s": row["seconds"], "work_s": work})
    return rows


def _read_timeline(folder: Path, runner: str) -> list[dict[str, Any]]:
    """The lines the peer's hospitals appended to ``timeline-<runner>.jsonl``."""
    text = (folder / f"timeline-{runner}.jsonl").read_text()
    return [json.loads(x) for x in text.split("\n") if x]


def _timeline_rows(lines: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Per round but the last: interval between first receipts, and the slowest client's work."""
    by_round: dict[int, list[dict[str, Any]]] = {}
    for line in lines:
        by_round.setdefault(int(line["round"]), []).append(line)
    rounds = sorted(by_round)
    rows = []
    for r, nxt in zip(rounds, rounds[1:], strict=False):
        first = min(x["t_start"] for x in by_round[r])
        rows.append(
            {
                "round": r,
                "round_s": min(x["t_start"] for x in by_round[nxt]) - first,
                "work_s": max(x["t_end"] - x["t_start"] for x in by_round[r]),
            }
        )
    return rows


def run_deployment(name: str, profile: str, rounds: int, parts: Path, work: Path) -> dict[str, Any]:
    cfg = _config(profile, rounds, DEPLOYMENTS[name])
    out = work / f"models-{name}"
    t0 = time.monotonic()
    metrics = train_federated.run(
        cfg, {"partitions": parts}, {"models": out, "metrics": work / "m.json"}
    )
    wall = time.monotonic() - t0
    run = json.loads((out / ROUNDS_FILE).read_text())["federated"]
    return {
        "wall_s": wall,
        "rounds": _deployment_rows(run),
        # rounds[r]["val"]: the round-r model on each hospital's validation split, mean over
        # hospitals; the peers' last line holds the round-(R-1) model's (what round R received)
        "val_loss_before_last_round": run["rounds"][-2]["val"]["loss"],
        "start": metrics["federation"],
    }


def run_peer(name: str, python: Path, folder: Path, timeout_s: float) -> dict[str, Any]:
    """One run of a peer app with the Python of its environment (:func:`ensure_venv`)."""
    script = APPS / PEERS[name][2]
    log = folder / f"{name}.log"
    (folder / f"timeline-{name}.jsonl").unlink(missing_ok=True)  # this run's rounds only
    t0 = time.monotonic()
    with log.open("w") as fh:
        proc = subprocess.run(
            [str(python), str(script), str(folder)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=folder,
            timeout=timeout_s,
        )
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"{name} exited with {proc.returncode}; last lines of {log}:\n{tail}")
    lines = _read_timeline(folder, name)
    last = max(int(x["round"]) for x in lines)
    return {
        "wall_s": wall,
        "rounds": _timeline_rows(lines),
        "rounds_seen": last,
        # each hospital scored the model it received in the last round: the round-(R-1) model
        "val_loss_before_last_round": statistics.mean(
            x["val_loss"] for x in lines if x["round"] == last
        ),
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Medians over every round of every repeat (and over repeats for whole-run figures)."""
    rows = [r for run in runs for r in run["rounds"]]
    return {
        "round_median_s": statistics.median(r["round_s"] for r in rows),
        "work_median_s": statistics.median(r["work_s"] for r in rows),
        "overhead_median_s": statistics.median(r["round_s"] - r["work_s"] for r in rows),
        "wall_s": statistics.median(run["wall_s"] for run in runs),
        "val_loss_before_last_round": statistics.median(
            run["val_loss_before_last_round"] for run in runs
        ),
        "repeats": len(runs),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks peers")
    parser.add_argument("--profile", default="default")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--only", nargs="*", choices=RUNNERS, default=list(RUNNERS))
    parser.add_argument("--repeats", type=int, default=1, help="runs of each, interleaved")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per peer run")
    args = parser.parse_args(argv)
    setup_logging("WARNING")
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in args.only}
    with tempfile.TemporaryDirectory(prefix="privfed-peers-") as tmp:
        work = Path(tmp)
        cfg = _config(args.profile, args.rounds, {})
        parts = prepare_data(cfg, work)
        plan = export_workload(cfg, parts, work / "workload")
        # installs are not part of any timing
        pythons = {name: ensure_venv(name) for name in args.only if name in PEERS}
        for repeat in range(args.repeats):
            order = args.only if repeat % 2 == 0 else args.only[::-1]  # A B, B A, ...
            for name in order:
                load = wait_for_quiet()
                print(f"running {name} (repeat {repeat + 1}/{args.repeats})", flush=True)
                if name in DEPLOYMENTS:
                    res = run_deployment(name, args.profile, args.rounds, parts, work)
                else:
                    res = run_peer(name, pythons[name], work / "workload", args.timeout)
                res["load"] = load
                runs[name].append(res)
                print(name, summarize([res]), flush=True)
    summaries = {name: summarize(rs) for name, rs in runs.items()}
    table = md_table(
        [
            "runner",
            "kind",
            "round (s)",
            "work (s)",
            "overhead / round (s)",
            "whole run (s)",
            "val loss, round R-1 model",
        ],
        [
            (
                name,
                KIND[name],
                s["round_median_s"],
                s["work_median_s"],
                s["overhead_median_s"],
                s["wall_s"],
                s["val_loss_before_last_round"],
            )
            for name, s in summaries.items()
        ],
    )
    note = (
        f"\nreadmission, profile {args.profile}: {len(plan['hospitals'])} hospitals, "
        f"{args.rounds} rounds of {plan['epochs']} local epochs (batch {plan['batch_size']}, "
        f"Adam {plan['lr']}), no DP; medians over the rounds of {args.repeats} run(s) each. "
        "*work*: the slowest hospital's client code in the round (validate the received model "
        "+ train); *overhead*: round - work.\n"
    )
    command = (
        f"python -m benchmarks peers --profile {args.profile} --rounds {args.rounds} "
        f"--repeats {args.repeats}"
    )
    if set(args.only) != set(RUNNERS):
        command += " --only " + " ".join(args.only)
    write_result("peers", {"plan": plan, "summary": summaries, "runs": runs}, table + note, command)


if __name__ == "__main__":
    main()
