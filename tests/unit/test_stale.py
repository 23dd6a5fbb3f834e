"""What a process killed outright leaves behind is removed by the next run, and no more."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil

from privfed.io import atomic_dir
from privfed.stale import owned_prefix, owned_tempdir, remove_stale

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _python(code: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def _dead_owners_dir(parent: Path, prefix: str) -> Path:
    """A folder made by a process that has exited without removing it (as after kill -9)."""
    proc = _python(
        f"""
        import tempfile
        from privfed.stale import owned_prefix
        print(tempfile.mkdtemp(prefix=owned_prefix({prefix!r}), dir={str(parent)!r}))
        """
    )
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    made = Path(out.strip())
    assert made.is_dir()
    return made


def test_only_a_dead_owners_entries_are_removed(tmp_path: Path) -> None:
    dead = _dead_owners_dir(tmp_path, "privfed-federation-")
    (dead / "tls.key").write_text("secret")
    mine = Path(tempfile.mkdtemp(prefix=owned_prefix("privfed-federation-"), dir=tmp_path))
    foreign = tmp_path / "privfed-federation-someone-else"  # no owner token: not ours to judge
    foreign.mkdir()
    other_prefix = _dead_owners_dir(tmp_path, "privfed-bench-")

    removed = remove_stale(tmp_path, "privfed-federation-")

    assert removed == [dead]
    assert not dead.exists()
    assert mine.is_dir() and foreign.is_dir() and other_prefix.is_dir()


def test_a_reused_pid_is_not_the_owner(tmp_path: Path) -> None:
    # this process's pid, another start time: the process that made it is gone
    impostor = tmp_path / f".federated.{os.getpid()}-1.abc"
    impostor.mkdir()
    assert remove_stale(tmp_path, ".federated.") == [impostor]


def test_atomic_dir_removes_a_killed_writers_half_written_folder(tmp_path: Path) -> None:
    half = _dead_owners_dir(tmp_path, ".federated.")
    (half / "round_001.pt").write_bytes(b"partial")
    with atomic_dir(tmp_path / "federated") as out:
        (out / "model.pt").write_bytes(b"done")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["federated"]


def test_owned_tempdir_clears_a_killed_federations_keys(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    stale = _dead_owners_dir(tmp_path, "privfed-federation-")
    with owned_tempdir("privfed-federation-") as work:
        assert not stale.exists()
        assert work.is_dir()
    assert not work.exists()


def test_a_forked_clientapp_task_dies_with_its_executor() -> None:
    # an executor forks a task that would run for a minute, then is killed outright
    executor = _python(
        """
        import os, time
        from privfed.federated.executor import fork_task
        print(fork_task(lambda: time.sleep(60)), flush=True)
        time.sleep(60)
        """,
        start_new_session=True,
    )
    child = psutil.Process(int(executor.stdout.readline()))
    assert child.is_running() and child.ppid() == executor.pid
    os.kill(executor.pid, signal.SIGKILL)
    executor.wait(timeout=10)
    deadline = time.monotonic() + 10
    while child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the task outlived its executor"
        time.sleep(0.05)
