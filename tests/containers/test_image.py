"""What the built image holds: the locked versions, and nothing of the machine that built it."""

from __future__ import annotations

import json

from packaging.utils import canonicalize_name

from tests.conftest import ROOT
from tests.containers.conftest import docker

#: In the image but not in requirements.lock (which pins what `make install` installs): the
#: mlflow-server extra (PostgreSQL and S3 clients, pyproject.toml's ranges) and pip's own tools.
UNLOCKED = {"boto3", "botocore", "jmespath", "psycopg2-binary", "s3transfer"}
PIP_TOOLS = {"pip", "setuptools", "wheel"}


def _pins(lines: list[str]) -> dict[str, str]:
    pins = {}
    for line in lines:
        if line.strip() and not line.startswith("#") and "==" in line:
            name, version = line.strip().split("==", 1)
            pins[canonicalize_name(name)] = version
    return pins


def test_the_image_holds_exactly_the_locked_versions(image: str) -> None:
    # Execute
    frozen = docker("run", "--rm", "--network", "none", image, "pip", "freeze", "--all")

    # Assert: every package the lock names is at its version (torch's +cpu build included)
    installed = _pins(frozen.stdout.splitlines())
    locked = _pins((ROOT / "requirements.lock").read_text().splitlines())
    drift = {n: (v, locked[n]) for n, v in installed.items() if n in locked and v != locked[n]}
    assert not drift
    assert installed["torch"] == "2.13.0+cpu"
    assert set(installed) - set(locked) <= UNLOCKED | PIP_TOOLS, set(installed) - set(locked)


def test_no_build_certificate_or_proxy_setting_reaches_the_image(image: str) -> None:
    # Execute
    history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    config = json.loads(docker("image", "inspect", image).stdout)[0]["Config"]
    files = docker("run", "--rm", "--network", "none", image, "ls", "/opt").stdout.split()

    # Assert: the build stage's CA (BUILD_CA_PEM) and its file stayed in the build stage
    assert "BEGIN CERTIFICATE" not in history
    assert "build-ca.pem" not in files and "wheels" not in files
    env = dict(e.split("=", 1) for e in config["Env"])
    assert not {k for k in env if "proxy" in k.lower() or k in ("PIP_CERT", "SSL_CERT_FILE")}
    assert config["User"] == "1000:1000"
