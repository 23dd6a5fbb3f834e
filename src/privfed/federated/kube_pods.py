"""What the Kubernetes launcher decides without the cluster: pod readiness, names, paths.

Pure functions over the pod objects the API returns (``V1Pod`` or anything shaped like one)
and over the shared volume's layout, so that tests check every decision without an API
server. :mod:`privfed.federated.kubernetes` makes the API calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

__all__ = [
    "SupernodeReadiness",
    "pod_is_ready",
    "pod_log_name",
    "pod_state",
    "remote_run_dir",
    "run_tag",
    "supernode_readiness",
]


def pod_is_ready(pod: Any) -> bool:
    """Running, not being deleted, and its Ready condition is True (what a Service would route)."""
    if pod.metadata.deletion_timestamp is not None or pod.status is None:
        return False
    if pod.status.phase != "Running":
        return False
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def pod_state(pod: Any) -> str:
    """One line a user can act on: phase, readiness and why a container is not running."""
    status = pod.status
    if pod.metadata.deletion_timestamp is not None:
        return "Terminating"
    if status is None:
        return "Unknown"
    parts = [status.phase or "Unknown", "Ready" if pod_is_ready(pod) else "not Ready"]
    for cs in status.container_statuses or []:
        waiting = cs.state.waiting if cs.state is not None else None
        if waiting is not None and waiting.reason:
            parts.append(f"{cs.name}: {waiting.reason}")
        if cs.restart_count:
            parts.append(f"{cs.name}: {cs.restart_count} restarts")
    for cond in status.conditions or []:
        if cond.type == "PodScheduled" and cond.status != "True" and cond.reason:
            parts.append(f"{cond.reason}: {cond.message or ''}".strip())
    return ", ".join(parts)


@dataclass(frozen=True)
class SupernodeReadiness:
    """Which configured hospitals have a Ready SuperNode pod, and which pods do not fit."""

    ready: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    pods: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unexpected


def supernode_readiness(
    pods: Iterable[Any], hospitals: Sequence[str], hospital_label: str
) -> SupernodeReadiness:
    """Match SuperNode pods to ``hospitals`` by ``hospital_label``.

    A Ready pod of a hospital that is not configured is ``unexpected``: it would join the
    federation (the SuperLink samples every connected node) although params do not list it.
    A pod without the label is reported as ``<no label>``.
    """
    ready: set[str] = set()
    seen: set[str] = set()
    states: dict[str, str] = {}
    for pod in pods:
        labels = pod.metadata.labels or {}
        hospital = labels.get(hospital_label, "<no label>")
        seen.add(hospital)
        states[pod.metadata.name] = f"{hospital}: {pod_state(pod)}"
        if pod_is_ready(pod):
            ready.add(hospital)
    expected = set(hospitals)
    return SupernodeReadiness(
        ready=tuple(sorted(ready & expected)),
        missing=tuple(sorted(expected - ready)),
        unexpected=tuple(sorted(ready - expected)),
        pods=dict(sorted(states.items())),
    )


def run_tag(now: datetime, token: str) -> str:
    """Unique, sortable name of one stage execution's folder on the shared volume."""
    if not token.isalnum():
        raise ValueError(f"run tag token must be alphanumeric, got {token!r}")
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{token}"


def remote_run_dir(shared_dir: str, tag: str, name: str) -> PurePosixPath:
    """``<cluster.shared_dir>/<tag>/<run name>``: where the ServerApp pod writes one run."""
    base = PurePosixPath(shared_dir)
    if not base.is_absolute():
        raise ValueError(f"cluster.shared_dir must be absolute, got {shared_dir!r}")
    for part in (tag, name):
        if not part or "/" in part or part in (".", ".."):
            raise ValueError(f"run folder names must be single path parts, got {part!r}")
    return base / tag / name


def pod_log_name(pod_name: str, container: str) -> str:
    """File name of one container's log in the kept logs folder."""
    return f"{pod_name}.{container}.log"
