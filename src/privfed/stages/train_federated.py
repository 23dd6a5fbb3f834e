"""Stage ``train_federated``: Flower Deployment Engine runs, without and with DP-SGD.

One federation serves both runs: ``federated`` (no DP; with privacy on, only while
``privacy.non_dp_run``) and, when ``privacy.enabled``, ``federated_dp``.
``train_federated.launcher`` says where it is: ``local`` starts a SuperLink and a SuperNode per
hospital partition on 127.0.0.1; ``docker`` the same federation with the SuperLink and each
SuperNode in a container of the project image that mounts only its hospital's partition;
``kubernetes`` uses the cluster's SuperLink and SuperNode pods
(section ``cluster``; the hospitals' data stays on their volumes, so the ``partitions`` input
is not read). Outputs go to a temporary folder that replaces ``models/federated`` only when
every run completed; either way they have the same layout.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from privfed import tracking
from privfed.config import ConfigError, PrivFedConfig
from privfed.federated import ROUNDS_FILE
from privfed.federated.client import BYTE_COUNTS
from privfed.federated.containers import DockerFederation
from privfed.federated.federation import Federation, RunSpec
from privfed.federated.kubernetes import KubernetesFederation, PodApi
from privfed.federated.launcher import LocalFederation
from privfed.federated.resume import run_key
from privfed.io import atomic_dir, write_json
from privfed.partitions import hospital_dirs
from privfed.privacy import check_delta
from privfed.stages.spec import StageSpec
from privfed.stale import owned_tempdir
from privfed.tasks import Task, get_task
from privfed.tracking import LiveRounds

log = logging.getLogger(__name__)

SPEC = StageSpec(
    params=(
        "base",
        "generate_data.n_genes",
        "ingest_data",
        "model",
        "train",
        "train_federated",
        "privacy",
        "cluster",
        "profiles",
    ),
    inputs={"partitions": "data/partitions"},
    outputs={"models": "models/federated", "metrics": "metrics/train_federated.json"},
)

#: Beside the models folder; not a DVC output, so a failed run's logs survive.
FAILED_LOGS = "federated-failed-logs"


def _log_tails(folder: Path, lines: int = 15) -> None:
    """The last lines of every kept Flower log, in this stage's own log."""
    for path in sorted(folder.rglob("*.log")):
        tail = path.read_text(errors="replace").splitlines()[-lines:]
        if tail:
            log.error("last lines of %s:\n%s", path.name, "\n".join(tail))


def _round_row(row: dict[str, Any], metric: str) -> dict[str, Any]:
    """One round, flat: train loss, and the primary validation metric overall and per hospital."""
    return {
        "round": row["round"],
        "seconds": row.get("seconds"),
        "train_loss": row.get("train_loss"),
        **row.get("losses", {}),  # a GAN: generator and discriminator loss
        f"val_{metric}": row["val"].get(metric),
        **{f"val_{metric}.{h}": m.get(metric) for h, m in sorted(row["val_per_hospital"].items())},
    }


def bytes_per_round(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Mean serialized bytes one hospital sent / received per round (its reply, the server's)."""
    out = {}
    for key in BYTE_COUNTS:
        values = [t[key] for row in rows for t in row.get("train", {}).values() if key in t]
        if values:
            out[f"{key}_per_hospital_round"] = float(sum(values) / len(values))
    return out


def _federation(
    cfg: PrivFedConfig, inputs: Mapping[str, Path], workdir: Path, kube_api: PodApi | None
) -> Federation:
    """The launcher ``train_federated.launcher`` names: the only place the stage tells them apart.

    On Kubernetes the hospitals' data stays on their volumes, so ``partitions`` is not read.
    """
    if cfg.train_federated.launcher == "kubernetes":
        return KubernetesFederation(cfg, workdir, core_api=kube_api)
    if cfg.train_federated.launcher == "docker":
        return DockerFederation(cfg, hospital_dirs(Path(inputs["partitions"])), workdir)
    return LocalFederation(cfg, hospital_dirs(Path(inputs["partitions"])), workdir)


@contextmanager
def _live(cfg: PrivFedConfig, spec: RunSpec) -> Iterator[LiveRounds | None]:
    """Each round of ``spec``'s run logged to the pipeline's MLflow run as it ends (when the
    stage runs inside one: the CLI's and Kubeflow's front doors); None outside one."""
    run = tracking.current()
    if run is None:
        yield None
        return
    with LiveRounds(
        run,
        spec.name,
        spec.out_dir,
        delta=cfg.privacy.delta,
        accountant=cfg.privacy.accountant,
    ) as live:
        yield live


def planned_runs(cfg: PrivFedConfig) -> list[tuple[str, bool]]:
    """``(name, dp)`` of each federated run: without DP unless ``privacy.non_dp_run`` is off."""
    plain = not cfg.privacy.enabled or cfg.privacy.non_dp_run
    return [("federated", False)] * plain + [("federated_dp", True)] * cfg.privacy.enabled


def check_privacy_delta(cfg: PrivFedConfig, task: Task, partitions: Path) -> None:
    """Refuse δ ≥ 1/n before any round runs (n: the smallest hospital's training examples).

    The local and docker launchers read the partitions here; on Kubernetes the data stays on
    the hospitals' volumes and each hospital's examples are not known here.

    Raises:
        ConfigError: naming ``privacy.delta``, the hospital and its n.
    """
    if not cfg.privacy.enabled or cfg.train_federated.launcher == "kubernetes":
        return
    examples = {h.name: len(task.load_dataset([h / "train"])) for h in hospital_dirs(partitions)}
    try:
        warning = check_delta(cfg.privacy.delta, examples)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if warning:
        log.warning(warning)


def run(
    cfg: PrivFedConfig,
    inputs: Mapping[str, Path],
    outputs: Mapping[str, Path],
    *,
    kube_api: PodApi | None = None,
) -> dict[str, Any]:
    """Train ``federated`` (and ``federated_dp``) with the launcher params select.

    ``kube_api`` replaces the Kubernetes API client (``launcher: kubernetes`` only); tests pass
    a stand-in because no API server can run where they do.
    """
    task = get_task(cfg.base.task, cfg)
    check_privacy_delta(cfg, task, Path(inputs.get("partitions", "")))
    specs = planned_runs(cfg)
    runs: dict[str, Any] = {}
    resume_root: Path | None = None
    with (
        atomic_dir(outputs["models"]) as out,
        owned_tempdir("privfed-federation-") as work,  # a killed stage's keys go next time
    ):
        federation = _federation(cfg, inputs, work, kube_api)
        # DVC deletes a stage's outputs before it reruns it, and the after-round state of a
        # crashed run must outlive that: it lives where the launcher says, outside them
        # (removed once the stage succeeds), bound to the params and the data it was run on
        if cfg.train_federated.resume:
            resume_root = federation.resume_root(Path(outputs["models"]))
        data = federation.data_digest() if resume_root is not None else ""
        try:
            with federation:
                for name, dp in specs:
                    log.info(
                        "starting federated run %r (%d rounds, DP %s)",
                        name,
                        cfg.train_federated.rounds,
                        "on" if dp else "off",
                    )
                    spec = RunSpec(
                        name=name,
                        out_dir=out / name,
                        dp=dp,
                        resume_dir=resume_root / name if resume_root else None,
                        resume_key=run_key(cfg, name=name, dp=dp, data=data),
                    )
                    with _live(cfg, spec) as live:
                        runs[name] = federation.run(spec)
                        if live is not None:
                            live.finish(runs[name])
        except BaseException:
            # The output folder is discarded on failure: keep the process (or SuperNode pod)
            # logs where a user can read them, and say where.
            kept = Path(outputs["models"]).parent / FAILED_LOGS
            if federation.log_dir.is_dir():  # start() may fail before any process has a log
                shutil.rmtree(kept, ignore_errors=True)
                shutil.copytree(federation.log_dir, kept, dirs_exist_ok=True)
                log.error("federated training failed; Flower logs kept in %s", kept)
                _log_tails(kept)  # in a pod, the kept folder dies with it: the log is what stays
            raise
        shutil.copytree(federation.log_dir, out / "logs", dirs_exist_ok=True)
        write_json(runs, out / ROUNDS_FILE)
    if resume_root is not None:  # every run is in the published output: nothing to resume
        shutil.rmtree(resume_root, ignore_errors=True)
    metrics = {
        "federation": federation.timings,
        "runs": {
            name: {
                "rounds_completed": r["rounds_completed"],
                "wall_seconds": r["wall_seconds"],
                "per_round_seconds_median": r["seconds"]["per_round_median"],
                "final_val": r["rounds"][-1]["val"],
                # the round model.pt holds (train.selection) and its validation scores
                "selected_round": r["selected_round"],
                "selected_val": r["rounds"][r["selected_round"]]["val"],
                "network_bytes": (r["flower"].get("network-traffic") or {}).get("total-bytes"),
                **bytes_per_round(r["rounds"]),
                "rounds": [_round_row(row, task.primary_metric) for row in r["rounds"]],
                # SecAgg+: the server saw only sums (nothing was screened then)
                "secure_aggregation": bool(r.get("secure_aggregation", False)),
                # hospital -> round it dropped out in (missed round_timeout_s)
                "dropouts": r.get("dropouts", {}),
                # the round a crashed attempt had completed when this one went on (None: none)
                "resumed_from_round": r.get("resumed_from_round"),
                # screening: round -> hospital -> why its update was left out
                "rejected_updates": {
                    str(row["round"]): row["rejected"] for row in r["rounds"] if row.get("rejected")
                },
            }
            for name, r in runs.items()
        },
        "primary_metric": task.primary_metric,
    }
    write_json(metrics, outputs["metrics"])
    return metrics
