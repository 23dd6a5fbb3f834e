"""The ServerApp's main: one federated run from roll call to final model.

Runs inside the ServerApp process that the SuperLink starts. Everything it needs arrives in the
Flower run config (the validated PrivFed config as JSON, the absolute output folder), which the
launcher derives from params.yaml. The server never opens a hospital's data.

The pieces live beside it: the strategy comes from the registry
(:mod:`privfed.federated.strategies`), wrapped by
:class:`~privfed.federated.recorded.RecordedStrategy` for per-round records, screening and
checkpoints (:mod:`privfed.federated.recorder`); the roll call and final evaluation are
:mod:`privfed.federated.queries`; SecAgg+'s rounds are :mod:`privfed.federated.secagg.server`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp import Grid

from privfed.checkpoints import save_model
from privfed.config import PrivFedConfig, resolved_config
from privfed.config.strategy_registry import min_hospitals_for
from privfed.federated import ENROLLED_KEY, RUN_RESULT_FILE
from privfed.federated.client import CONFIG_KEY
from privfed.federated.grid import FastPollGrid, wait_for_nodes
from privfed.federated.queries import RollCall, final_evaluation, roll_call, sum_statistics
from privfed.federated.recorded import RecordedStrategy
from privfed.federated.recorder import RoundRecorder
from privfed.federated.resume import ResumeState, ResumeStore
from privfed.federated.strategies import make_strategy, min_train_nodes
from privfed.io import write_json
from privfed.selection import kept_round_state
from privfed.tasks import get_task

__all__ = [
    "exit_when_orphaned",
    "fixed_tensors",
    "run_server",
    # where they were before the split; import them from their own modules
    "RoundRecorder",
    "make_strategy",
    "min_hospitals_for",
    "min_train_nodes",
    "roll_call",
    "sum_statistics",
]

log = logging.getLogger(__name__)


def fixed_tensors(model: torch.nn.Module) -> frozenset[str]:
    """Names of the buffers that travel (those in the state dict): no honest update changes them.

    A buffer left out of the state dict (non-persistent, or dropped by the model's own
    state-dict hook) is never sent, so there is nothing to screen.
    """
    sent = set(model.state_dict())
    return frozenset(name for name, _ in model.named_buffers() if name in sent)


def exit_when_orphaned(poll_s: float = 0.5) -> None:
    """Hard-exit this ServerApp process if the process that started it dies.

    When a stage is killed outright, the SuperExec that started this process is gone and the
    SuperLink with it; Flower's own parent monitor then raises SIGINT, and the shutdown that
    follows retries the dead SuperLink without end. Nobody can use this process any more, so
    it ends at once (the resume state on disk is complete up to the last round).
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        log.error("the process that started this ServerApp (pid %d) is gone; exiting", parent)
        os._exit(1)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


def _resume_store(run_config: dict[str, Any]) -> ResumeStore | None:
    if "resume-dir" not in run_config:
        return None
    return ResumeStore(Path(str(run_config["resume-dir"])), str(run_config["resume-key"]))


def _train(
    grid: FastPollGrid,
    cfg: PrivFedConfig,
    *,
    recorder: RoundRecorder,
    strategy: RecordedStrategy | None,
    arrays: ArrayRecord,
    config: ConfigRecord,
    num_nodes: int,
) -> ArrayRecord:
    """The rounds left after ``recorder.offset``: SecAgg+'s workflow, else ``strategy``'s."""
    fed = cfg.train_federated
    if recorder.offset >= fed.rounds:
        return arrays  # every round completed before a crash: only the final evaluation is left
    if strategy is not None:
        return strategy.start(
            grid=grid,
            initial_arrays=arrays,
            num_rounds=fed.rounds - recorder.offset,
            timeout=fed.round_timeout_s,
            train_config=config,
        ).arrays
    # Flower's SecAgg+ runs only on its legacy workflow API; that seam lives in one module.
    from privfed.federated.secagg.server import train_secure

    log.warning(
        "secure aggregation (SecAgg+) is on: the server sees only the sum of the "
        "hospitals' updates, so update screening cannot run (screen_updates=false)"
    )
    return train_secure(
        grid,
        cfg,
        initial=arrays,
        recorder=recorder,
        fit_config=dict(config),
        num_nodes=num_nodes,
    )


def _summary(
    cfg: PrivFedConfig,
    recorder: RoundRecorder,
    *,
    use_dp: bool,
    roll: RollCall,
    resumed: ResumeState | None,
    seconds: dict[str, float],
    selected: int,
) -> dict[str, Any]:
    """``run.json``: every round's row, the DP histories, and where the time went."""
    fed = cfg.train_federated
    round_seconds = [r["seconds"] for r in recorder.rounds[1:] if "seconds" in r]
    return {
        "rounds": recorder.rounds,
        "rounds_completed": len(round_seconds),
        # the round whose global model model.pt holds (train.selection)
        "selected_round": selected,
        "dp": use_dp,
        "dp_history": recorder.full_dp_history(),
        # the round a crashed run had completed when this one took over (None: no crash)
        "resumed_from_round": resumed.round if resumed else None,
        "strategy": fed.strategy,
        # SecAgg+: the server learned only sums; per-round protocol records in rounds[r].secagg
        "secure_aggregation": fed.secure_aggregation.enabled,
        "update_screening": bool(recorder.screen_norm_factor is not None),
        "statistics_from": roll.statistics_from,
        # hospital -> the round it dropped out in
        "dropouts": {h: row["round"] for row in recorder.rounds for h in row["dropouts"]},
        "seconds": {
            **seconds,
            "per_round": round_seconds,
            "per_round_median": float(np.median(round_seconds)) if round_seconds else None,
        },
    }


def run_server(grid: Grid, run_config: dict[str, Any]) -> dict[str, Any]:
    """One run: roll call, the rounds (resumed if a crash left state), final evaluation."""
    cfg = resolved_config(json.loads(str(run_config[CONFIG_KEY])))
    out_dir = Path(str(run_config["out-dir"]))
    use_dp = bool(run_config.get("dp", False))
    num_nodes = int(run_config["num-nodes"])
    fed = cfg.train_federated
    task = get_task(cfg.base.task, cfg)
    enrolled = run_config.get(ENROLLED_KEY)
    grid = FastPollGrid(
        grid,
        poll_interval=fed.poll_interval_s,
        enrolled={int(n): h for n, h in json.loads(str(enrolled)).items()} if enrolled else None,
    )
    t0 = time.monotonic()
    wait_for_nodes(grid, num_nodes, timeout=fed.startup_timeout_s)
    log.info(
        "%d hospitals connected after %.1f s; %d rounds of %s%s",
        num_nodes,
        time.monotonic() - t0,
        fed.rounds,
        fed.strategy,
        " with DP-SGD" if use_dp else "",
    )
    roll = roll_call(
        grid, cfg, num_nodes=num_nodes, timeout=fed.round_timeout_s, statistics=task.uses_statistics
    )
    grid.names = roll.names
    torch.manual_seed(cfg.base.seed)
    initial = task.initial_model(roll.statistics)
    store = _resume_store(run_config)
    recorder = RoundRecorder(
        out_dir=out_dir,
        task_name=task.name,
        primary_metric=task.primary_metric,
        num_rounds=fed.rounds,
        min_replies=min_train_nodes(cfg, num_nodes),
        screen_norm_factor=fed.screen_norm_factor if fed.screen_updates else None,
        fixed=fixed_tensors(initial),
        grid=grid,
        round_timeout_s=fed.round_timeout_s,
        store=store,
    )
    secure = fed.secure_aggregation.enabled
    strategy = (
        None
        if secure
        else RecordedStrategy(
            make_strategy(
                cfg,
                num_nodes,
                parameter_names=[n for n, p in initial.named_parameters() if p.requires_grad],
            ),
            recorder,
        )
    )
    arrays = ArrayRecord(initial.state_dict())
    resumed = store.load() if store else None
    if resumed is not None:
        if strategy is not None:  # its state too (e.g. an adaptive optimizer's moments)
            strategy.resume(resumed)
        else:
            recorder.resume(resumed)
        arrays = ArrayRecord(resumed.arrays)
        store.restore_checkpoints(out_dir / "checkpoints", resumed.round)
        log.info(
            "resuming from the checkpoint of round %d of %d (%s): %d round(s) left; the "
            "completed rounds are not trained again and their DP steps are counted once",
            resumed.round,
            fed.rounds,
            store.path if store else None,
            fed.rounds - resumed.round,
        )
    config = ConfigRecord({CONFIG_KEY: json.dumps(cfg.model_dump(mode="json")), "dp": use_dp})
    t_train = time.monotonic()
    arrays = _train(
        grid,
        cfg,
        recorder=recorder,
        strategy=strategy,
        arrays=arrays,
        config=config,
        num_nodes=num_nodes,
    )
    training_seconds = time.monotonic() - t_train
    for hospital, metrics in final_evaluation(grid, recorder, arrays, config).items():
        recorder.record_val(fed.rounds, hospital, metrics)
    selected, state = kept_round_state(
        recorder.rounds,
        task,
        cfg.train.selection,
        arrays.to_torch_state_dict(),
        out_dir / "checkpoints",
    )
    save_model(
        out_dir / "model.pt",
        state,
        task=task.name,
        meta={
            "rounds": fed.rounds,
            "selected_round": selected,
            "dp": use_dp,
            "strategy": fed.strategy,
            "secure_aggregation": secure,
        },
    )
    summary = _summary(
        cfg,
        recorder,
        use_dp=use_dp,
        roll=roll,
        resumed=resumed,
        seconds={"total": time.monotonic() - t0, "training": training_seconds},
        selected=selected,
    )
    write_json(summary, out_dir / RUN_RESULT_FILE)
    log.info(
        "federated run finished: %d rounds, median %.2f s per round; kept round %d, val %s=%.4f",
        summary["rounds_completed"],
        summary["seconds"]["per_round_median"] or math.nan,
        selected,
        task.primary_metric,
        recorder.rounds[selected]["val"].get(task.primary_metric, math.nan),
    )
    return summary
