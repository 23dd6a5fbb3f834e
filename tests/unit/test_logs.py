"""Stage output: every Flower log line is printed once, in the CLI and in a ServerApp process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_CLI = "from privfed.logs import setup_logging; setup_logging()"
# A ServerApp process: opacus' import-time basicConfig gives the root logger a handler
# before Flower loads our app module.
_SERVERAPP = "import opacus.utils.module_utils; import privfed.federated.app"


@pytest.mark.parametrize("setup", [_CLI, _SERVERAPP], ids=["cli", "serverapp"])
def test_each_flower_line_is_printed_once(setup: str) -> None:
    # Prepare: a fresh interpreter, so no other test's logging set-up leaks in
    code = (
        f"{setup}\n"
        "import logging\n"
        "from flwr.common.logger import log\n"
        "log(logging.INFO, 'flower-line-7f3a')\n"
    )
    # Execute
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    # Assert
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert output.count("flower-line-7f3a") == 1, output
