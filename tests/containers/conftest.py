"""Container tests: the project image on a real Docker daemon (`make container-test`).

Not collected by `make test` (pyproject's ``norecursedirs``): they need the daemon, started
without a bridge network (.ci/run), and the image `make images` built from this commit.
``PRIVFED_IMAGE`` names another image.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.conftest import ROOT
from tests.integration.conftest import partitions, project  # noqa: F401 - fixtures used here


def built_image() -> str:
    """``PRIVFED_IMAGE``, else the tag `make images` gives this checkout's commit."""
    if os.environ.get("PRIVFED_IMAGE"):
        return os.environ["PRIVFED_IMAGE"]
    describe = subprocess.run(
        ["git", "describe", "--always", "--dirty", "--abbrev=7"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return f"privfed/privfed:{describe.stdout.strip()}"


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """One ``docker`` CLI call; its output comes back as text."""
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


@pytest.fixture(scope="session")
def image() -> str:
    """The image under test; fails (does not skip) when the daemon or the image is missing."""
    if shutil.which("docker") is None:
        pytest.fail("no docker CLI on PATH: .ci/run installs docker.io and starts the daemon")
    info = docker("info", "--format", "{{.ServerVersion}}", check=False)
    if info.returncode != 0:
        pytest.fail(f"no Docker daemon answers: {info.stderr.strip()}")
    name = built_image()
    if docker("image", "inspect", name, check=False).returncode != 0:
        pytest.fail(f"image {name} is not built: run `make images` (or set PRIVFED_IMAGE)")
    return name
