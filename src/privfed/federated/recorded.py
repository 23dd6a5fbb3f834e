"""A strategy wrapper that records each round, screens updates and checkpoints the aggregate.

It holds the strategy that aggregates and delegates to it, as Flower's DP wrappers
(``DifferentialPrivacyClientSideFixedClipping``) hold theirs, so any strategy gets PrivFed's
cross-cutting work without a subclass per strategy or methods assigned over its own. Around
the inner strategy it

* waits, with a bound, for enough hospitals before the round is configured (Flower waits for
  ``min_available_nodes`` without one), and notes who is asked;
* hands the inner strategy the run's round number (a resumed run's Flower counts from 1);
* records every reply in the :class:`RoundRecorder`, passes on only the updates screening
  accepts, in hospital order, and times the aggregation;
* after each round, lets the recorder finish the row and write the checkpoint and the
  resume state, which includes the inner strategy's own state.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from privfed.federated.grid import wait_for_nodes
from privfed.federated.recorder import RoundRecorder
from privfed.federated.resume import ResumeState, restore_strategy, strategy_state

__all__ = ["RecordedStrategy"]


class RecordedStrategy(Strategy):
    """``strategy`` with recording, update screening and checkpoints by ``recorder``.

    Args:
        strategy: the strategy that configures and aggregates the rounds.
        recorder: keeps the rows, screens, checkpoints (and saves resume state if it has a
            store).
    """

    def __init__(self, strategy: Strategy, recorder: RoundRecorder) -> None:
        super().__init__()
        self.strategy = strategy
        self.recorder = recorder

    def __repr__(self) -> str:
        return f"RecordedStrategy({self.strategy!r})"

    def summary(self) -> None:
        self.strategy.summary()

    # -- training ------------------------------------------------------------------------------
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """The inner strategy's messages for the run's round, once enough hospitals are here."""
        recorder = self.recorder
        if recorder.grid is not None:
            wait_for_nodes(recorder.grid, recorder.min_replies, timeout=recorder.round_timeout_s)
        # the strategy (and so each hospital's ``server-round``) sees the run's own round
        messages = list(
            self.strategy.configure_train(server_round + recorder.offset, arrays, config, grid)
        )
        recorder.note_sampled(messages)
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Record every reply; the inner strategy aggregates the screened ones (timed)."""
        run_round = server_round + self.recorder.offset
        kept = self.recorder.receive(run_round, list(replies))
        t0 = time.perf_counter()
        try:
            return self.strategy.aggregate_train(run_round, kept)
        finally:
            self.recorder.add_aggregate_seconds(time.perf_counter() - t0)

    # -- evaluation: PrivFed validates on the next round's train message ----------------------
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        return self.strategy.aggregate_evaluate(server_round, replies)

    # -- round ends, resume -------------------------------------------------------------------
    def end_round(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """After round ``server_round`` (0: before the first): row, checkpoint, resume state."""
        return self.recorder.on_round_end(
            server_round, arrays, strategy_state=strategy_state(self.strategy)
        )

    def resume(self, state: ResumeState) -> None:
        """Go on after a crashed run's last completed round: its rows and strategy state."""
        self.recorder.resume(state)
        restore_strategy(self.strategy, state.strategy)

    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
    ) -> Result:
        """Flower's loop; :meth:`end_round` runs after each round, before ``evaluate_fn``."""

        def after_round(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
            recorded = self.end_round(server_round, arrays)
            return evaluate_fn(server_round, arrays) if evaluate_fn else recorded

        return super().start(
            grid=grid,
            initial_arrays=initial_arrays,
            num_rounds=num_rounds,
            timeout=timeout,
            train_config=train_config,
            evaluate_config=evaluate_config,
            evaluate_fn=after_round,
        )
