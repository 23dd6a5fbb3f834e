"""README's command lines, as written, in a new shell (nothing activated, no .venv on PATH).

Every line of README's ``bash`` blocks is checked. The quick ones run for real, in a copy of
the project on the tiny profile; the long ones are covered elsewhere and only resolved here:

- ``make run`` / ``make test`` / ``make images`` / ``make container-test``: what ``.ci/run``
  itself runs;
- ``dvc exp run -S ...``: each ``-S`` is applied to params.yaml as DVC applies it and the result
  must pass ``privfed check-params`` (a whole experiment is what test_pipeline_e2e runs);
- ``mlflow ui`` and ``privfed dashboard``: servers, started until their port answers HTTP 200
  (test_dashboard_browser opens the dashboard in a browser);
- ``privfed pipeline run-local`` (test_kfp_local runs it) and ``python -m benchmarks <name>``:
  their arguments must parse (``--help`` of the same subcommand).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import PARAMS, ROOT
from tests.integration.conftest import set_params

pytestmark = pytest.mark.integration

#: what a command may start with: nothing that needs an activated environment
PROGRAMS = ("make", "sed", ".venv/bin/")


def readme_commands(readme: Path) -> list[str]:
    """The command lines of README's ``bash`` blocks (continuations joined, comments dropped)."""
    commands, block, pending = [], False, ""
    for line in readme.read_text().splitlines():
        if line.startswith("```"):
            block = line.strip() == "```bash"
            continue
        if not block or not line.strip() or line.lstrip().startswith("#"):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        commands.append(pending.strip())
        pending = ""
    return commands


def _new_shell_env(home: Path) -> dict[str, str]:
    """A login-less shell's environment: the system PATH, no virtual environment."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "DVC_NO_ANALYTICS": "1",
        "GX_ANALYTICS_ENABLED": "false",
        "TMPDIR": os.environ.get("TMPDIR", "/tmp"),
    }


def _sh(command: str, cwd: Path, env: dict[str, str], timeout: float = 300):
    return subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def _apply_set_params(project: Path, args: list[str]) -> None:
    """``dvc exp run``'s ``-S key=value`` on params.yaml (values parsed as YAML, as DVC does)."""
    updates = {}
    for flag, assignment in zip(args, args[1:], strict=False):
        if flag == "-S":
            key, value = assignment.split("=", 1)
            updates[key] = yaml.safe_load(value)
    assert updates, args
    set_params(project, updates)


def _serves(command: str, cwd: Path, env: dict[str, str]) -> None:
    """Start a server command, wait until its port answers HTTP 200, stop it."""
    port = int(re.search(r"--port (\d+)", command)[1])
    with socket.socket() as probe:  # the port README names must be free for this check
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            pytest.fail(f"port {port} of {command!r} is taken on this machine")
    proc = subprocess.Popen(
        ["bash", "-c", command],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"{command!r} exited with {proc.returncode}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as reply:
                    assert reply.status == 200
                    return
            except OSError:
                assert time.monotonic() < deadline, f"{command!r} never answered on {port}"
                time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_readme_commands_work_as_written_in_a_new_shell(tmp_path: Path) -> None:
    # Prepare: the tracked files on the tiny profile, the environment `make` built as .venv
    project = tmp_path / "project"
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    for rel in files.stdout.split():
        if not rel.startswith(("tests/", "benchmarks/")):
            (project / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PARAMS if rel == "params.yaml" else ROOT / rel, project / rel)
    # the peers benchmark's own virtual environments (GBs, git-ignored) are not the project's
    shutil.copytree(
        ROOT / "benchmarks", project / "benchmarks", ignore=shutil.ignore_patterns(".venv-*")
    )
    set_params(project, {"base.profile": "tiny"})
    (project / ".venv").symlink_to(ROOT / ".venv", target_is_directory=True)
    env = _new_shell_env(tmp_path)
    pristine = (project / "params.yaml").read_text()
    commands = readme_commands(ROOT / "README.md")
    assert len(commands) >= 10, commands  # the blocks were found

    for command in commands:
        # nothing may depend on an activated environment
        assert command.startswith(PROGRAMS), f"README command needs activation: {command!r}"
        args = shlex.split(command, comments=True)
        if args[0] == "make":
            # .ci/run runs these (images and container-test after `make test`, with a daemon)
            assert args[1] in ("run", "test", "images", "container-test"), command
            continue
        if args[:3] == [".venv/bin/dvc", "exp", "run"]:
            _apply_set_params(project, args)
            checked = _sh(".venv/bin/privfed check-params", project, env)
            (project / "params.yaml").write_text(pristine)
            assert checked.returncode == 0, (command, checked.stderr[-2000:])
            continue
        if args[:3] == [".venv/bin/mlflow", "ui", "--backend-store-uri"] or args[:2] == [
            ".venv/bin/privfed",
            "dashboard",
        ]:
            _serves(command, project, env)
            continue
        if "run-local" in args or args[1:3] == ["-m", "benchmarks"]:
            at = args.index("run-local") + 1 if "run-local" in args else 4
            shown = _sh(shlex.join([*args[:at], "--help"]), project, env)
            assert shown.returncode == 0, (command, shown.stderr[-2000:])
            continue
        # Execute: the line itself
        done = _sh(command, project, env)
        # Assert: it worked as README says
        assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-2000:])

    # what the walkthrough made is there
    assert (project / "data/external/breast_cancer.csv").stat().st_size > 10_000
    assert "site_column: site" in (project / "data/external/schema.yaml").read_text()
