"""One MLflow run per pipeline run, written while the pipeline runs (docs/tracking.md).

Every stage the CLI or a Kubeflow component runs logs into the *pipeline run*: the run of the
experiment that carries this project's (or this Kubeflow job's) key and this config's digest and
that ``register_model`` has not finished yet. A stage that fails leaves it FAILED, and the rerun
after a fix goes on in it; a changed config starts a new one. ``train_federated`` logs each
round as the ServerApp records it (:class:`LiveRounds`), so the MLflow UI and ``privfed
dashboard`` show a federation while it trains.

The tracking store is where the user looks, not what the pipeline computes: a stage's outputs
never depend on it, so no stage lists ``register_model``'s MLflow keys among its DVC params.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import math
import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from privfed.config import PrivFedConfig
from privfed.federated import LIVE_FILE

__all__ = [
    "KIND_TAG",
    "LIVE_FILE",
    "LiveRounds",
    "PipelineRun",
    "RoundLog",
    "current",
    "flat_scalars",
    "flat_series",
    "metric_key",
    "open_pipeline_run",
    "pipeline_key",
    "tracked_stage",
]

log = logging.getLogger(__name__)

KIND_TAG = "privfed.kind"
KEY_TAG = "privfed.pipeline_key"
KEY_ID_TAG = "privfed.pipeline_id"
DIGEST_TAG = "privfed.config_digest"
#: Where a stage's outputs may be logged from: never data or models (patient data, weights).
LOGGED_OUTPUTS = ("reports/", "plots", "metrics/")
#: MLflow takes at most 1000 metrics per batch.
_BATCH = 1000

_current: contextvars.ContextVar[PipelineRun | None] = contextvars.ContextVar(
    "privfed_pipeline_run", default=None
)


def metric_key(name: str) -> str:
    """``name`` with the characters MLflow refuses in a metric name replaced by ``_``."""
    return re.sub(r"[^\w./ -]", "_", name)


def flat_scalars(data: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    """Every finite number of a nested mapping, under its dotted path (lists and bools skipped:
    per-round rows are logged with their step, not as one number)."""
    if isinstance(data, Mapping):
        for key, value in data.items():
            yield from flat_scalars(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(data, bool):
        return
    elif isinstance(data, int | float) and math.isfinite(data):
        yield prefix, float(data)


def flat_series(data: Any, prefix: str = "") -> Iterator[tuple[str, list[float]]]:
    """Every list of numbers of a nested mapping (e.g. a baseline's validation score after each
    epoch), under its dotted path; lists of anything else are skipped."""
    if isinstance(data, Mapping):
        for key, value in data.items():
            yield from flat_series(value, f"{prefix}.{key}" if prefix else str(key))
    elif (
        isinstance(data, list)
        and data
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in data)
    ):
        yield prefix, [float(v) for v in data]


def pipeline_key(cfg: PrivFedConfig, root: Path) -> str:
    """``register_model.pipeline_run`` (a Kubeflow job sets it), else this project folder's."""
    return cfg.register_model.pipeline_run or f"local:{root.resolve()}"


def config_digest(cfg: PrivFedConfig) -> str:
    """A short hash of the whole config: a pipeline run holds the story of one config."""
    text = json.dumps(cfg.as_flat_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class PipelineRun:
    """The MLflow run a pipeline run logs into, and the client that writes to it."""

    client: Any
    run_id: str
    experiment_id: str
    uri: str
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def log_metrics(self, values: Mapping[str, float], *, step: int | None = None) -> None:
        """Log the finite values of ``values`` at ``step`` (a round, an epoch) in batches."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._log_batch(
            [
                Metric(metric_key(k), float(v), now, step or 0)
                for k, v in values.items()
                if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            ]
        )

    def log_series(self, key: str, values: list[float]) -> None:
        """``values`` as one metric's history, steps 1, 2, … (epochs; non-finite ones left out)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._log_batch(
            [
                Metric(metric_key(key), v, now, step)
                for step, v in enumerate(values, start=1)
                if math.isfinite(v)
            ]
        )

    def _log_batch(self, metrics: list[Any]) -> None:
        """``metrics`` in batches of the most MLflow takes at once."""
        with self._lock:
            for i in range(0, len(metrics), _BATCH):
                self.client.log_batch(self.run_id, metrics=metrics[i : i + _BATCH])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        with self._lock:
            self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_outputs(self, spec_outputs: Mapping[str, str], outputs: Mapping[str, Path]) -> None:
        """Log the stage outputs that are reports, plots or metrics files (never data or
        models) under their DVC-layout path, where the dashboard looks for them."""
        for name, default in spec_outputs.items():
            path = Path(outputs[name])
            if not default.startswith(LOGGED_OUTPUTS) or not path.exists():
                continue
            with self._lock:
                if path.is_dir():
                    self.client.log_artifacts(self.run_id, str(path), artifact_path=default)
                else:
                    parent = str(Path(default).parent)
                    self.client.log_artifact(
                        self.run_id, str(path), artifact_path=None if parent == "." else parent
                    )

    def tags(self) -> dict[str, str]:
        return dict(self.client.get_run(self.run_id).data.tags)

    def end(self, status: str) -> None:
        """FINISHED (registration done) or FAILED (a stage failed; a rerun goes on here)."""
        with self._lock:
            self.client.set_terminated(self.run_id, status=status)


#: How often a stage tries a SQLite store that another process is creating at the same time.
_CREATE_TRIES = 5


def _resolve(cfg: PrivFedConfig, root: Path) -> tuple[Any, str, str]:
    """Client, URI and experiment id; a store being created by another process is retried.

    Two processes that open a new SQLite store at once both create its tables, and one of them
    fails ("table … already exists"): e.g. ``mlflow ui`` started beside ``make run``. The loser
    waits and opens the store the other one finished.
    """
    from mlflow import MlflowClient
    from sqlalchemy.exc import OperationalError

    from privfed.registry import experiment_id, tracking_uri

    r = cfg.register_model
    uri = tracking_uri(r.tracking_uri, root)
    attempt = 1
    while True:
        client = MlflowClient(tracking_uri=uri)
        try:
            return client, uri, experiment_id(client, uri, r.experiment, r.artifact_location, root)
        except OperationalError as err:
            if "already exists" not in str(err) or attempt == _CREATE_TRIES:
                raise
            log.warning("MLflow store %s is being created by another process; retrying", uri)
            time.sleep(attempt)
            attempt += 1


def open_pipeline_run(cfg: PrivFedConfig, root: Path | None = None) -> PipelineRun:
    """The pipeline run this stage belongs to: the open one of this key and config, or a new one.

    An open run of the same key with another config is closed as KILLED (tagged with the run
    that replaced it): its story ended when the config changed.
    """
    from mlflow.entities import Param

    root = Path.cwd() if root is None else root
    client, uri, exp = _resolve(cfg, root)
    key, digest = pipeline_key(cfg, root), config_digest(cfg)
    key_id = hashlib.sha256(key.encode()).hexdigest()[:16]  # a key may hold any character
    open_runs = [
        run
        for run in client.search_runs(
            [exp],
            filter_string=f"tags.`{KEY_ID_TAG}` = '{key_id}'",
            order_by=["attributes.start_time DESC"],
        )
        if run.data.tags.get(KEY_TAG) == key and run.info.status in ("RUNNING", "FAILED")
    ]
    for run in open_runs:
        if run.data.tags.get(DIGEST_TAG) == digest:
            if run.info.status != "RUNNING":
                client.update_run(run.info.run_id, status="RUNNING")
            log.info("logging into pipeline run %s (MLflow %s)", run.info.run_id, uri)
            return PipelineRun(client, run.info.run_id, exp, uri)
    task = cfg.base.task
    created = client.create_run(
        exp,
        run_name=f"{task}-{time.strftime('%Y%m%d-%H%M%S')}",
        tags={
            KIND_TAG: "pipeline",
            KEY_TAG: key,
            KEY_ID_TAG: key_id,
            DIGEST_TAG: digest,
            "task": task,
            "candidate": cfg.register_model.candidate,
            "privfed.strategy": cfg.train_federated.strategy,
            "privfed.dp": str(cfg.privacy.enabled).lower(),
        },
    )
    run_id = created.info.run_id
    params = [Param(k, str(v)[:500]) for k, v in cfg.as_flat_dict().items()]
    for i in range(0, len(params), 100):
        client.log_batch(run_id, params=params[i : i + 100])
    for stale in open_runs:  # another config's story, left open: it ended here
        client.set_tag(stale.info.run_id, "privfed.superseded_by", run_id)
        client.set_terminated(stale.info.run_id, status="KILLED")
    log.info("opened pipeline run %s in MLflow %s", run_id, uri)
    return PipelineRun(client, run_id, exp, uri)


def current() -> PipelineRun | None:
    """The pipeline run of the stage in progress (None outside a tracked stage)."""
    return _current.get()


@contextmanager
def tracked_stage(
    stage: str,
    cfg: PrivFedConfig,
    spec_outputs: Mapping[str, str],
    outputs: Mapping[str, Path],
) -> Iterator[dict[str, Any]]:
    """Run a stage inside its pipeline run: tagged running, then done with its figures, or
    failed (the run is left FAILED for the rerun to go on in).

    Yields a dict the caller puts the stage's result in (``result["metrics"]``).
    With ``register_model.live`` off only ``register_model`` logs (it opens the run itself).
    """
    holder: dict[str, Any] = {}
    if not cfg.register_model.live:
        yield holder
        return
    run = open_pipeline_run(cfg)
    run.set_tags({f"privfed.stage.{stage}": "running"})
    token = _current.set(run)
    try:
        yield holder
    except BaseException:
        run.set_tags({f"privfed.stage.{stage}": "failed"})
        run.end("FAILED")
        raise
    finally:
        _current.reset(token)
    figures = holder.get("metrics", {})
    run.log_metrics({f"{stage}.{k}": v for k, v in flat_scalars(figures)})
    for key, values in flat_series(figures):  # e.g. a baseline's validation curve by epoch
        run.log_series(f"{stage}.{key}", values)
    run.log_outputs(spec_outputs, outputs)
    run.set_tags({f"privfed.stage.{stage}": "done"})


class RoundLog:
    """Logs a federation's rounds once each: training figures when a round ends, the global
    model's validation scores when they arrive (a round later), ε spent so far.

    The same rows feed it live (:class:`LiveRounds`) and, where nothing was logged live, from
    the finished run's record (``register_model``).
    """

    def __init__(self, run: PipelineRun, name: str) -> None:
        self.run = run
        self.name = name
        self.trained: set[int] = set()
        self.validated: set[int] = set()

    def rows(self, rows: list[dict[str, Any]]) -> int:
        """Log what is new in ``rows``; returns how many rounds' training figures were new."""
        new = 0
        for row in rows:
            r = int(row["round"])
            if r >= 1 and r not in self.trained and row.get("train"):
                self.run.log_metrics(self._train(row), step=r)
                self.trained.add(r)
                new += 1
            if r not in self.validated and row.get("val"):
                self.run.log_metrics(self._val(row), step=r)
                self.validated.add(r)
        return new

    def epsilon(self, step: int, epsilons: Mapping[str, float]) -> None:
        n = self.name
        values = {f"{n}.{h}.epsilon": e for h, e in epsilons.items()}
        if epsilons:
            values[f"{n}.epsilon"] = max(epsilons.values())
        self.run.log_metrics(values, step=step)

    def _train(self, row: dict[str, Any]) -> dict[str, float]:
        n, train = self.name, row["train"]
        rejected, dropouts = row.get("rejected", {}), row.get("dropouts", {})
        out: dict[str, float] = {
            f"{n}.round": row["round"],
            f"{n}.train_loss": row.get("train_loss", math.nan),
            f"{n}.seconds": row.get("seconds", math.nan),
            f"{n}.participants": len(set(train) - set(rejected)),
            f"{n}.dropouts": len(dropouts),
            f"{n}.rejected_updates": len(rejected),
        }
        out |= {f"{n}.{k}": v for k, v in row.get("losses", {}).items()}
        for hospital, values in train.items():
            for key in ("train_loss", "num_examples", "bytes_sent", "bytes_received"):
                if key in values:
                    out[f"{n}.{hospital}.{key}"] = values[key]
            out |= {f"{n}.{hospital}.{k}": v for k, v in values.get("losses", {}).items()}
            out[f"{n}.{hospital}.took_part"] = float(hospital not in rejected)
        for hospital in dropouts:
            out[f"{n}.{hospital}.took_part"] = 0.0
        return out

    def _val(self, row: dict[str, Any]) -> dict[str, float]:
        n = self.name
        out = {f"{n}.{k}": v for k, v in row["val"].items()}
        for hospital, values in row.get("val_per_hospital", {}).items():
            out |= {f"{n}.{hospital}.val_{k}": v for k, v in values.items()}
        return out


class LiveRounds:
    """Follows a federation's ``live.json`` in a thread and logs each round as it lands.

    The ServerApp rewrites the file after every round; this reads it every ``poll_s``. A
    tracking store that fails mid-run is logged as a warning and retried at the next change:
    a federation is not stopped for a chart (``register_model`` logs what is missing).
    """

    def __init__(
        self,
        run: PipelineRun,
        name: str,
        out_dir: Path,
        *,
        delta: float,
        accountant: str,
        poll_s: float = 0.25,
    ) -> None:
        self.log = RoundLog(run, name)
        self.path = Path(out_dir) / LIVE_FILE
        self.delta, self.accountant, self.poll_s = delta, accountant, poll_s
        self._seen: tuple[int, int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name=f"live-{name}", daemon=True)

    def __enter__(self) -> LiveRounds:
        self.log.run.set_tags({f"privfed.federation.{self.log.name}": "running"})
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def finish(self, result: Mapping[str, Any]) -> None:
        """After the run: the last rows (the final round's validation) from its result."""
        self._stop.set()
        self._thread.join()
        self.poll()
        self.log.rows(list(result.get("rounds", [])))
        self.log.run.set_tags({f"privfed.federation.{self.log.name}": "done"})

    def _follow(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.poll()
            except Exception as err:  # noqa: BLE001 - reported, and the next change retries
                log.warning("%s: live MLflow logging failed: %s", self.log.name, err)

    def poll(self) -> None:
        """Log what changed in the live file since the last look."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return
        seen = (stat.st_mtime_ns, stat.st_size)
        if seen == self._seen:
            return
        state = json.loads(self.path.read_text())
        if self.log.rows(state["rounds"]) and state.get("dp_history"):
            self.log.epsilon(int(state["completed"]), self._epsilons(state["dp_history"]))
        self._seen = seen

    def _epsilons(self, histories: Mapping[str, list]) -> dict[str, float]:
        from privfed.privacy import epsilon_from_history

        return {
            h: epsilon_from_history(history, delta=self.delta, accountant=self.accountant)
            for h, history in histories.items()
        }
