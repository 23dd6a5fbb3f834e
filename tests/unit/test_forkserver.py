"""The warm template's protocol and the command lines of the processes forked from it."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

from privfed.federated.flower_commands import (
    executor_command,
    executor_poll_s,
    forkserver_command,
    serverapp_executor_command,
    superlink_command,
)
from privfed.federated.forkserver import request_line
from privfed.tasks import available_tasks, runtime_imports


def test_a_request_is_one_json_line_naming_module_argv_and_log() -> None:
    line = request_line("executor-h1", "privfed.federated.executor", ["--a", "1"], "/l/e.log")
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {
        "name": "executor-h1",
        "module": "privfed.federated.executor",
        "argv": ["--a", "1"],
        "log": "/l/e.log",
    }


def test_warm_superlinks_leave_serverapps_to_our_executor() -> None:
    assert superlink_command(9000)[-4:] == ["--host", "127.0.0.1", "--port", "9000"]
    assert "--isolation" not in superlink_command(9000)
    warm = superlink_command(9000, warm=True)
    assert warm[warm.index("--isolation") + 1] == "process"


def test_serverapp_executor_speaks_tls_unless_told_otherwise() -> None:
    tls = serverapp_executor_command(9000, root_certificates="/ca.pem", parent_pid=None)
    plain = serverapp_executor_command(9000, root_certificates=None, parent_pid=7)
    assert tls[1:3] == ["-m", "privfed.federated.serverapp_executor"]
    assert tls[tls.index("--root-certificates") + 1] == "/ca.pem" and "--insecure" not in tls
    assert "--insecure" in plain and plain[-2:] == ["--parent-pid", "7"]


def test_executor_poll_grows_only_past_ten_hospitals() -> None:
    assert [executor_poll_s(n) for n in (3, 10, 20, 50)] == ["0.05", "0.05", "0.1", "0.25"]
    command = executor_command(9001, parent_pid=5, poll_s=executor_poll_s(50))
    assert command[command.index("--poll-interval") + 1] == "0.25"


def test_every_tasks_runtime_imports_exist() -> None:
    # a typo would stop every local federation of that task at start-up
    for name in available_tasks():
        for module in runtime_imports(name):
            assert importlib.util.find_spec(module) is not None, (name, module)
    assert "monai.data" in runtime_imports("segmentation")
    assert forkserver_command(runtime_imports("notes"))[3:] == list(runtime_imports("notes"))


def test_the_template_imports_the_tasks_modules_once_for_every_child(tmp_path: Path) -> None:
    # Prepare: a "heavy" module that records each import, and a child that reports whether
    # it found the module already imported and the template's objects frozen (out of the
    # cyclic collector's reach)
    (tmp_path / "heavy_probe.py").write_text(
        "import os\nwith open(os.environ['PROBE_LOG'], 'a') as f:\n"
        "    f.write(f'{os.getpid()}\\n')\n"
    )
    (tmp_path / "child_probe.py").write_text(
        "import gc, sys\ndef main(argv):\n    print('preloaded' if 'heavy_probe' in sys.modules "
        "else 'not preloaded', 'frozen' if gc.get_freeze_count() > 100_000 else 'not frozen')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PROBE_LOG": str(tmp_path / "imports")}
    requests = b"".join(
        request_line(f"child-{i}", "child_probe", [], str(tmp_path / f"child-{i}.log"))
        for i in (1, 2)
    )

    # Execute: the real template, given the module as the run's task's runtime import
    done = subprocess.run(
        forkserver_command(["heavy_probe"]),
        input=requests,
        env=env,
        capture_output=True,
        timeout=300,
    )

    # Assert: imported once, by the template; both children found it there, frozen
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert len((tmp_path / "imports").read_text().split()) == 1
    for i in (1, 2):
        assert (tmp_path / f"child-{i}.log").read_text().strip() == "preloaded frozen"
