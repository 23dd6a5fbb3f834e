"""Crash resume: the after-round state round-trips, is bound to its run, and is replayed once."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from privfed.config import config_from_dict
from privfed.federated.flower_app import build_run_config
from privfed.federated.recorded import RecordedStrategy
from privfed.federated.recorder import RoundRecorder
from privfed.federated.resume import (
    ResumeState,
    ResumeStore,
    data_digest,
    restore_strategy,
    run_key,
    strategy_state,
)
from privfed.federated.strategies import make_strategy
from tests.conftest import raw_params


def _state(round_: int = 2) -> ResumeState:
    rows = [{"round": r, "val": {"auroc": 0.5 + r / 10}, "train": {}} for r in range(round_ + 1)]
    rows[0]["val"]["auroc"] = math.nan  # rows carry NaN (no metric yet) and must keep it
    return ResumeState(
        round=round_,
        arrays={"w": torch.arange(4, dtype=torch.float32), "n": torch.tensor([7])},
        rows=rows,
        dp_history={"hospital_1": [[1.1, 0.05, 20], [1.1, 0.05, 20]]},
        strategy={"m_t": {"w": np.full(4, 0.25, dtype=np.float32)}},
    )


def _recorder(tmp_path: Path, rounds: int = 4) -> RoundRecorder:
    return RoundRecorder(
        out_dir=tmp_path,
        task_name="readmission",
        primary_metric="auroc",
        num_rounds=rounds,
        min_replies=1,
    )


def test_state_round_trips(tmp_path: Path) -> None:
    store = ResumeStore(tmp_path / "run", "key-1")
    store.save(_state())
    loaded = store.load()
    assert loaded is not None and loaded.round == 2
    assert torch.equal(loaded.arrays["w"], torch.arange(4, dtype=torch.float32))
    assert loaded.arrays["n"].dtype == torch.int64
    assert math.isnan(loaded.rows[0]["val"]["auroc"]) and loaded.rows[2]["val"]["auroc"] == 0.7
    assert loaded.dp_history == {"hospital_1": [[1.1, 0.05, 20], [1.1, 0.05, 20]]}
    np.testing.assert_array_equal(loaded.strategy["m_t"]["w"], np.full(4, 0.25))
    # no temporaries are left beside the state (written by rename)
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["state.pt"]


def test_state_of_another_run_is_not_used(tmp_path: Path, caplog) -> None:
    ResumeStore(tmp_path, "key-of-old-params").save(_state())
    with caplog.at_level(logging.WARNING, logger="privfed"):
        assert ResumeStore(tmp_path, "key-of-new-params").load() is None
    assert "other params or data" in caplog.text
    assert ResumeStore(tmp_path / "empty", "k").load() is None


def test_run_key_covers_params_run_and_data(tmp_path: Path) -> None:
    cfg = config_from_dict(raw_params())
    other = config_from_dict(raw_params(base={"seed": 7}))
    base = run_key(cfg, name="federated_dp", dp=True, data="d1")
    assert base == run_key(cfg, name="federated_dp", dp=True, data="d1")
    assert base != run_key(other, name="federated_dp", dp=True, data="d1")
    assert base != run_key(cfg, name="federated", dp=False, data="d1")
    assert base != run_key(cfg, name="federated_dp", dp=True, data="d2")
    site = tmp_path / "hospital_1"
    site.mkdir()
    (site / "train.csv").write_text("a,b\n1,2\n")
    before = data_digest([site])
    (site / "train.csv").write_text("a,b\n1,3\n")
    assert data_digest([site]) != before


def test_adaptive_strategy_moments_survive(tmp_path: Path) -> None:
    cfg = config_from_dict(raw_params(train_federated={"strategy": "fedadam"}))
    strategy = make_strategy(cfg, 3)
    assert strategy_state(strategy) == {}  # before the first aggregation: nothing to keep
    strategy.m_t = {"w": np.ones(3)}
    strategy.v_t = {"w": np.full(3, 2.0)}
    store = ResumeStore(tmp_path, "k")
    store.save(ResumeState(1, {"w": torch.zeros(3)}, [], {}, strategy_state(strategy)))
    fresh = make_strategy(cfg, 3)
    restore_strategy(fresh, store.load().strategy)  # type: ignore[union-attr]
    np.testing.assert_array_equal(fresh.v_t["w"], np.full(3, 2.0))
    np.testing.assert_array_equal(fresh.m_t["w"], np.ones(3))


def test_server_momentum_survives_in_model_order(tmp_path: Path) -> None:
    # Prepare: FedAvgM's momentum is a list of arrays in the model's order
    cfg = config_from_dict(raw_params(train_federated={"strategy": "fedavgm"}))
    strategy = make_strategy(cfg, 3)
    assert strategy_state(strategy) == {}
    strategy.momentum_vector = [np.full(2, float(i)) for i in range(12)]  # 12 sorts after 2
    store = ResumeStore(tmp_path, "k")
    # Execute
    store.save(ResumeState(1, {"w": torch.zeros(3)}, [], {}, strategy_state(strategy)))
    fresh = make_strategy(cfg, 3)
    restore_strategy(fresh, store.load().strategy)  # type: ignore[union-attr]
    # Assert
    assert [float(a[0]) for a in fresh.momentum_vector] == [float(i) for i in range(12)]


#: recorder.grid is None here, so the wrapper never asks the grid for nodes
_NO_GRID: Grid = None  # type: ignore[assignment]


class _Rounds(Strategy):
    """An inner strategy that only notes the round numbers it is handed."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.seen.append(server_round)
        return []

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        self.seen.append(server_round)
        return None, None

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return []

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        return None

    def summary(self) -> None:
        pass


def test_resumed_recorder_counts_rounds_and_dp_steps_once(tmp_path: Path) -> None:
    # Prepare: a run resumed after round 2
    recorder = _recorder(tmp_path)
    inner = _Rounds()
    strategy = RecordedStrategy(inner, recorder)
    strategy.resume(_state(round_=2))
    # Execute: Flower restarts at round 1
    strategy.configure_train(1, ArrayRecord(), ConfigRecord(), _NO_GRID)
    strategy.aggregate_train(1, [])
    # Assert: the inner strategy and the rows see the run's round 3
    assert inner.seen == [3, 3]
    assert recorder.rounds[2]["val"]["auroc"] == 0.7 and recorder.rounds[3]["val"] == {}
    recorder.dp_history = {"hospital_1": [[1.1, 0.05, 20]], "hospital_2": [[1.3, 0.04, 9]]}
    full = recorder.full_dp_history()
    assert [n for *_, n in full["hospital_1"]] == [20, 20, 20]
    assert full["hospital_2"] == [[1.3, 0.04, 9]]


def test_round_end_saves_the_inner_strategys_state_and_resume_restores_it(
    tmp_path: Path,
) -> None:
    # Prepare: FedAdam with moments, wrapped; the recorder has a store; one reply kept
    cfg = config_from_dict(raw_params(train_federated={"strategy": "fedadam"}))
    store = ResumeStore(tmp_path / "resume", "k")
    recorder = RoundRecorder(
        out_dir=tmp_path,
        task_name="readmission",
        primary_metric="auroc",
        num_rounds=3,
        min_replies=1,
        store=store,
    )
    strategy = RecordedStrategy(make_strategy(cfg, 3), recorder)
    strategy.strategy.m_t = {"w": np.full(2, 0.5)}  # type: ignore[attr-defined]
    arrays = ArrayRecord({"w": torch.tensor([1.0, 2.0])})
    strategy.end_round(0, arrays)
    recorder.keep("hospital_1", {"train_loss": 0.25, "num-examples": 4}, None)
    # Execute
    strategy.end_round(1, arrays)
    fresh = RecordedStrategy(make_strategy(cfg, 3), _recorder(tmp_path / "again", rounds=3))
    saved = store.load()
    assert saved is not None
    fresh.resume(saved)
    # Assert: round 1 was saved with the moments; the rerun's strategy and rows go on from it
    assert saved.round == 1 and saved.rows[1]["train_loss"] == 0.25
    np.testing.assert_array_equal(fresh.strategy.m_t["w"], [0.5, 0.5])  # type: ignore[attr-defined]
    assert fresh.recorder.offset == 1


def test_resume_dir_must_be_absolute() -> None:
    cfg = config_from_dict(raw_params())
    with pytest.raises(ValueError, match="resume-dir must be absolute, got 'rel/dir'"):
        build_run_config(cfg, out_dir="/abs", dp=False, num_nodes=2, resume_dir="rel/dir")
    config = build_run_config(
        cfg, out_dir="/abs", dp=True, num_nodes=2, resume_dir="/r", resume_key="k"
    )
    assert config["resume-dir"] == "/r" and config["resume-key"] == "k"


def test_steps_whose_update_reached_the_server_count_even_if_the_round_never_ended(
    tmp_path: Path,
) -> None:
    # Prepare: rounds 1-2 completed and saved (hospital_1: 2 x 20 steps); the run resumed and,
    # in round 3, hospital_1's update (20 more steps) reached the server; then the server died
    store = ResumeStore(tmp_path / "resume", "k")
    store.save(_state(round_=2))
    crashed = RoundRecorder(
        out_dir=tmp_path, task_name="t", primary_metric="auroc", num_rounds=4, min_replies=1,
        store=store,
    )  # fmt: skip
    crashed.resume(store.load())
    crashed.keep(
        "hospital_1", {"train_loss": 0.3, "num-examples": 4}, json.dumps([[1.1, 0.05, 20]])
    )

    # Execute: the rerun resumes from the last completed round, 2
    rerun = RoundRecorder(
        out_dir=tmp_path, task_name="t", primary_metric="auroc", num_rounds=4, min_replies=1,
        store=store,
    )  # fmt: skip
    saved = store.load()
    assert saved is not None and saved.round == 2
    rerun.resume(saved)

    # Assert: the 20 released steps of round 3 are carried on, before round 3 is trained again
    assert sum(n for *_, n in rerun.full_dp_history()["hospital_1"]) == 60
    # a store of another run's spent steps is not read
    assert ResumeStore(tmp_path / "resume", "other").load_spent() == {}


def test_kept_checkpoints_survive_the_discarded_output_and_are_restored(tmp_path: Path) -> None:
    store = ResumeStore(tmp_path / "resume", "key")
    killed_output = tmp_path / ".federated.123-4.tmp" / "checkpoints"
    killed_output.mkdir(parents=True)
    for n in (1, 2):
        torch.save({"round": n}, killed_output / f"round_{n:03d}.pt")
        store.keep_checkpoint(killed_output / f"round_{n:03d}.pt")
    torch.save({"round": 2, "rewritten": True}, killed_output / "round_002.pt.new")
    (killed_output / "round_002.pt.new").replace(killed_output / "round_002.pt")
    store.keep_checkpoint(killed_output / "round_002.pt")  # a rewritten round replaces its copy
    for child in sorted(killed_output.parent.rglob("*"), reverse=True):  # the stage discards it
        child.unlink() if child.is_file() else child.rmdir()

    restored = store.restore_checkpoints(tmp_path / "out" / "checkpoints", 2)

    assert [p.name for p in restored] == ["round_001.pt", "round_002.pt"]
    assert torch.load(restored[1])["rewritten"]
    with pytest.raises(FileNotFoundError, match="round_003.pt"):
        store.restore_checkpoints(tmp_path / "out" / "checkpoints", 3)
