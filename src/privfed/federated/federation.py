"""What a launcher is to the ``train_federated`` stage: the :class:`Federation` interface.

A federation is started once and serves every run of the stage (``federated``, then
``federated_dp``); the stage calls only what is here, so it picks a launcher by
``train_federated.launcher`` and never branches on it again. Two launchers implement it:
:class:`~privfed.federated.launcher.LocalFederation` (real Flower processes on 127.0.0.1) and
:class:`~privfed.federated.kubernetes.KubernetesFederation` (a cluster's long-lived pods).
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from privfed.federated import RUN_RESULT_FILE

__all__ = ["Federation", "FederationError", "RunSpec", "read_run_result"]


class FederationError(RuntimeError):
    """A Flower process failed, timed out, or the run did not finish as completed."""

    #: the id Flower gave the run, when it got that far (a remote run may still be going)
    run_id: str | None = None


@dataclass(frozen=True)
class RunSpec:
    """One run to submit: its name, where its outputs go, and whether hospitals use DP-SGD."""

    name: str
    out_dir: Path
    dp: bool
    #: where the ServerApp keeps its after-round state for a rerun (None: no resume), and the
    #: key (:func:`privfed.federated.resume.run_key`) that state must carry to be used
    resume_dir: Path | None = None
    resume_key: str = ""


class Federation(ABC):
    """A started federation that runs :class:`RunSpec`\\ s: ``with fed: fed.run(spec)``.

    ``__exit__`` always calls :meth:`stop`, and a failing :meth:`start` is stopped too (a
    ``with`` skips ``__exit__`` when ``__enter__`` raises), so nothing a launcher started
    outlives the stage.
    """

    #: where the launcher keeps the Flower logs the stage publishes (or keeps on failure)
    log_dir: Path
    #: start-up timings (seconds) for the stage's metrics
    timings: dict[str, float]

    @abstractmethod
    def start(self) -> None:
        """Bring the federation up (or wait until it is up); raise if it cannot be."""

    @abstractmethod
    def stop(self, error: BaseException | None = None) -> None:
        """Release what :meth:`start` took; ``error`` is the failure under way, if any."""

    @abstractmethod
    def run(self, spec: RunSpec) -> dict[str, Any]:
        """Submit one run and return its ``run.json`` result, or raise :class:`FederationError`."""

    @abstractmethod
    def resume_root(self, models: Path) -> Path:
        """Where runs keep their resume state: a folder the ServerApp can write and reread.

        ``models`` is the stage's output folder; the state must live outside it (DVC deletes
        a stage's outputs before it reruns it).
        """

    @abstractmethod
    def data_digest(self) -> str:
        """What of the hospitals' data a resumed run must match ("" when out of reach here)."""

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException as err:
            self.stop(err)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(exc)


def read_run_result(spec: RunSpec, status: dict[str, Any], t0: float) -> dict[str, Any]:
    """The ServerApp's ``run.json`` from ``spec.out_dir``, with wall time and Flower's figures."""
    result_path = spec.out_dir / RUN_RESULT_FILE
    if not result_path.is_file():
        raise FederationError(f"run {spec.name!r} completed but wrote no {result_path}")
    result = json.loads(result_path.read_text())
    result["wall_seconds"] = time.monotonic() - t0
    result["flower"] = {
        k: status.get(k) for k in ("run-id", "elapsed", "network-traffic", "compute-time")
    }
    return result
