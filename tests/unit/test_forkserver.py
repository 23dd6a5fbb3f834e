"""The warm template's protocol and the command lines of the processes forked from it."""

from __future__ import annotations

import json

from privfed.federated.flower_commands import (
    executor_command,
    executor_poll_s,
    serverapp_executor_command,
    superlink_command,
)
from privfed.federated.forkserver import request_line


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
