"""A federation of containers: the SuperLink and each hospital's SuperNode in the project image.

``train_federated.launcher: docker`` (:mod:`privfed.federated.containers`): TLS and SuperNode
authentication on, host network, everything on 127.0.0.1, and a hospital's container mounts only
that hospital's partition, read-only.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from privfed.config import config_from_dict
from privfed.federated.containers import DockerFederation
from privfed.partitions import hospital_dirs
from privfed.stages import train_federated
from tests.conftest import raw_params
from tests.containers.conftest import docker

pytestmark = pytest.mark.integration


def _inspect(container: str) -> dict:
    return json.loads(docker("inspect", container).stdout)[0]


def test_a_hospital_container_cannot_read_another_hospitals_data(
    image: str, partitions: Path, tmp_path: Path
) -> None:
    # Prepare
    cfg = config_from_dict(raw_params(train_federated={"launcher": "docker"}))
    dirs = hospital_dirs(partitions)
    own, other = dirs[0], dirs[1]
    other_file = next(p for p in sorted(other.rglob("*")) if p.is_file())

    # Execute: the federation is up (SuperLink and enrolled SuperNodes, TLS)
    with DockerFederation(cfg, dirs, tmp_path / "work", image=image) as fed:
        container = fed.container_name(f"supernode-{own.name}")
        listed_own = docker("exec", container, "ls", str(own / "train"), check=False)
        listed_other = docker("exec", container, "ls", str(other), check=False)
        read_other = docker("exec", container, "cat", str(other_file), check=False)
        write_own = docker("exec", container, "touch", str(own / "planted"), check=False)
        node = _inspect(container)
        link = _inspect(fed.container_name("superlink"))
        enrolled = dict(fed.node_ids)

    # Assert: its own partition is there, read-only; the other hospital's is not mounted at all
    assert listed_own.returncode == 0 and listed_own.stdout.strip(), listed_own.stderr
    assert listed_other.returncode != 0
    assert "No such file or directory" in listed_other.stderr
    assert read_other.returncode != 0
    assert write_own.returncode != 0 and "Read-only file system" in write_own.stderr
    assert not (own / "planted").exists()
    mounts = {m["Source"]: m["RW"] for m in node["Mounts"]}
    assert mounts[str(own.resolve())] is False
    assert not any(src.startswith(str(other.resolve())) for src in mounts)
    # only the partition, the CA certificate and the hospital's own enrolled key
    assert len(mounts) == 3 and not any(mounts.values())
    assert str(fed.enrolled[own.name].private.resolve()) in mounts
    # host network only (no bridge), everything on 127.0.0.1; TLS and node authentication on
    assert node["HostConfig"]["NetworkMode"] == "host"
    assert link["HostConfig"]["NetworkMode"] == "host"
    link_args = link["Config"]["Cmd"]
    assert "--enable-supernode-auth" in link_args and "--ssl-certfile" in link_args
    assert link_args[link_args.index("--host") + 1] == "127.0.0.1"
    assert "--root-certificates" in node["Config"]["Cmd"]
    assert set(enrolled) == {d.name for d in dirs}
    # every container is gone after the federation stopped
    assert docker("ps", "-aq", "--filter", f"label={fed.label}").stdout.strip() == ""


def test_train_federated_stage_drives_a_federation_of_containers(
    image: str, partitions: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: the stage reads the image from PRIVFED_IMAGE (over kubeflow.image)
    monkeypatch.setenv("PRIVFED_IMAGE", image)
    cfg = config_from_dict(raw_params(train_federated={"launcher": "docker"}))
    models, metrics = tmp_path / "models" / "federated", tmp_path / "metrics" / "federated.json"

    # Execute
    result = train_federated.run(
        cfg, {"partitions": partitions}, {"models": models, "metrics": metrics}
    )

    # Assert: both runs completed every round, in the local launcher's layout
    rounds = json.loads((models / "rounds.json").read_text())
    assert set(rounds) == {"federated", "federated_dp"}
    for name, run_ in rounds.items():
        assert run_["rounds_completed"] == cfg.train_federated.rounds, name
        assert (models / name / "run.json").is_file()
        assert result["runs"][name]["rounds_completed"] == cfg.train_federated.rounds
    # every hospital trained in its own container (their logs were kept with the outputs)
    logs = {p.name for p in (models / "logs").iterdir()}
    assert "superlink.log" in logs
    assert {f"supernode-{d.name}.log" for d in hospital_dirs(partitions)} <= logs
