"""The docker launcher's command lines (:mod:`privfed.federated.containers`), without a daemon."""

from __future__ import annotations

import sys
from pathlib import Path

from privfed.federated.containers import Mount, docker_run_command, in_image
from privfed.federated.flower_commands import supernode_command


def test_a_supernode_container_gets_host_network_its_mounts_and_nothing_else() -> None:
    # Prepare
    mounts = [Mount(Path("/data/h1")), Mount(Path("/run/tls/ca.crt"))]

    # Execute
    args = docker_run_command(
        docker="docker",
        name="privfed-1234-supernode-h1",
        image="privfed/privfed:abc1234",
        command=["flower-supernode", "--insecure"],
        mounts=mounts,
        env={"HOME": "/tmp"},
        user="0:0",
        label="privfed.federation=1234",
    )

    # Assert
    image_at = args.index("privfed/privfed:abc1234")
    options, command = args[:image_at], args[image_at + 1 :]
    assert options[:2] == ["docker", "run"]
    assert options[options.index("--network") + 1] == "host"
    assert [options[i + 1] for i, a in enumerate(options) if a == "--mount"] == [
        "type=bind,source=/data/h1,target=/data/h1,readonly",
        "type=bind,source=/run/tls/ca.crt,target=/run/tls/ca.crt,readonly",
    ]
    assert "--rm" in options and "--init" in options
    assert options[options.index("--env") + 1] == "HOME=/tmp"
    assert command == ["flower-supernode", "--insecure"]


def test_a_writable_mount_says_so() -> None:
    assert Mount(Path("/runs"), read_only=False).arg() == "type=bind,source=/runs,target=/runs"


def test_host_interpreter_and_flower_binaries_become_the_images() -> None:
    # Prepare: the local launcher's command for a SuperNode with capped idle waits
    command = supernode_command(
        "127.0.0.1:9092",
        runtime_port=9100,
        node_config='hospital="h1"',
        warm=False,
        idle_poll_s=0.2,
    )

    # Execute / Assert
    assert command[0] == sys.executable
    assert in_image(command)[:3] == ["python", "-m", "privfed.federated.supernode"]
    assert in_image([str(Path(sys.executable).with_name("flower-superlink")), "--insecure"]) == [
        "flower-superlink",
        "--insecure",
    ]
    assert in_image(["sh", "-c", "true"]) == ["sh", "-c", "true"]
