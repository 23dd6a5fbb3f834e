"""``privfed pipeline submit`` / ``schedule``: start or schedule the DAG on a Kubeflow cluster.

Thin wrappers over ``kfp.Client``: the package is compiled from the given params (so its
defaults are the user's params.yaml) and ``--set section.key=value`` overrides become pipeline
arguments. A schedule is a KFP recurring run that never overlaps itself and never backfills.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["parse_overrides", "check_cron", "submit", "schedule", "Submission"]

log = logging.getLogger("privfed")


@dataclass(frozen=True)
class Submission:
    experiment_id: str
    id: str  # run id or recurring-run id


def parse_overrides(items: Sequence[str], defaults: dict[str, Any]) -> dict[str, Any]:
    """``section.key=value`` (value parsed as YAML) -> whole-section pipeline arguments.

    Raises:
        ValueError: naming an item without ``=``, or a section the pipeline does not have.
    """
    args: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise ValueError(f"--set expects section.key=value, got {item!r}")
        section, *path = key.split(".")
        if section not in defaults:
            raise ValueError(
                f"--set {item!r}: no pipeline parameter {section!r} "
                f"(sections: {', '.join(defaults)})"
            )
        node = args.setdefault(section, copy.deepcopy(defaults[section]))
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = yaml.safe_load(value)
    return args


def check_cron(expression: str) -> str:
    """KFP schedules take 6-field cron (seconds first); say so instead of failing on the server."""
    fields = expression.split()
    if len(fields) != 6:
        raise ValueError(
            f"--cron {expression!r} has {len(fields)} fields; KFP needs 6 "
            f"(seconds minutes hours day-of-month month day-of-week), e.g. '0 0 3 * * *'"
        )
    return expression


def _client(host: str, namespace: str | None) -> Any:
    """A ``kfp.Client``; in a pod with a token projected for the KFP API (env
    ``KF_PIPELINES_SA_TOKEN_PATH``, as the retraining CronJob has) it sends that token.

    kfp.Client skips the projected token whenever ``host`` is given, so it is passed explicitly;
    multi-user Kubeflow rejects unauthenticated calls.
    """
    import kfp
    from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

    token_path = os.environ.get("KF_PIPELINES_SA_TOKEN_PATH")
    credentials = None
    if token_path:
        if not Path(token_path).is_file():
            raise FileNotFoundError(
                f"KF_PIPELINES_SA_TOKEN_PATH={token_path!r} does not exist: project a token "
                "for the KFP API there, or unset the variable"
            )
        credentials = ServiceAccountTokenVolumeCredentials(path=token_path)
    # A namespace given up front also spares the client its healthz round trip.
    return kfp.Client(host=host, namespace=namespace or "kubeflow", credentials=credentials)


def _validated_arguments(params: Path, overrides: Sequence[str]) -> dict[str, Any]:
    from privfed.config import config_from_dict
    from privfed.kubeflow.parameters import COMPILE_TIME_SECTIONS, PIPELINE_SECTIONS, load_params

    sections, _ = load_params(params)
    for item in overrides:
        if item.split(".", 1)[0] in COMPILE_TIME_SECTIONS:
            raise ValueError(
                f"--set {item!r}: section {item.split('.', 1)[0]!r} is fixed when the pipeline "
                "is compiled (it shapes the pods); change it in the params file instead"
            )
    args = parse_overrides(overrides, {s: sections[s] for s in PIPELINE_SECTIONS})
    config_from_dict({**sections, **args})  # a bad override fails here, not in a pod
    return args


def submit(
    *,
    host: str,
    package: Path,
    params: Path,
    overrides: Sequence[str] = (),
    experiment: str,
    run_name: str,
    service_account: str | None = None,
    namespace: str | None = None,
) -> Submission:
    """Start one run of the compiled ``package``."""
    args = _validated_arguments(params, overrides)
    client = _client(host, namespace)
    exp = client.create_experiment(experiment, namespace=namespace)
    run = client.run_pipeline(
        experiment_id=exp.experiment_id,
        job_name=run_name,
        pipeline_package_path=str(package),
        params=args,
        service_account=service_account,
    )
    log.info("submitted run %s (experiment %s) to %s", run.run_id, exp.experiment_id, host)
    return Submission(experiment_id=exp.experiment_id, id=run.run_id)


def schedule(
    *,
    host: str,
    package: Path,
    params: Path,
    cron: str,
    overrides: Sequence[str] = (),
    experiment: str,
    name: str,
    service_account: str | None = None,
    namespace: str | None = None,
) -> Submission:
    """A recurring run: at most one at a time, no catch-up of missed intervals."""
    check_cron(cron)
    args = _validated_arguments(params, overrides)
    client = _client(host, namespace)
    exp = client.create_experiment(experiment, namespace=namespace)
    job = client.create_recurring_run(
        experiment_id=exp.experiment_id,
        job_name=name,
        cron_expression=cron,
        max_concurrency=1,
        no_catchup=True,
        pipeline_package_path=str(package),
        params=args,
        service_account=service_account,
    )
    log.info("scheduled %r (%s) on %s: cron %r", name, job.recurring_run_id, host, cron)
    return Submission(experiment_id=exp.experiment_id, id=job.recurring_run_id)
