"""py-spy sampling of running federation processes, summarized as text the docs can quote.

``py-spy record --idle`` samples every thread, sleeping ones included, so a process that
spends a round waiting in ``time.sleep`` shows it. Raw (collapsed) stacks are kept, gzipped,
beside a summary of where samples end (self) and which functions they pass through
(inclusive).
py-spy is an optional dependency (``pip install -e .[bench]``); without it nothing is recorded.
"""

from __future__ import annotations

import collections
import gzip
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

__all__ = ["PySpy", "summarize_collapsed"]

_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")


def _function(frame: str, *, line: bool = False) -> str:
    """``name (path/file.py:123)`` -> ``name (file.py)`` (or ``name (file.py:123)``)."""
    match = re.match(r"^(.*) \((.*?):(\d+)\)$", frame.strip())
    if not match:
        return frame.strip()
    where = Path(match.group(2)).name + (f":{match.group(3)}" if line else "")
    return f"{match.group(1)} ({where})"


def summarize_collapsed(text: str, top: int = 12) -> str:
    """Top functions by self and by inclusive share of samples, from py-spy's raw output."""
    self_counts: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in text.splitlines():
        match = _LINE.match(line.strip())
        if not match:
            continue
        count = int(match.group("count"))
        # py-spy prefixes "process N:..." (with --subprocesses) and thread frames: not code
        raw = [f for f in match.group("stack").split(";") if f and not f.startswith("process ")]
        frames = [_function(f) for f in raw]
        if not frames:
            continue
        total += count
        self_counts[_function(raw[-1], line=True)] += count  # a line: which sleep, which call
        for name in set(frames):
            incl[name] += count
    if not total:
        return "no samples\n"
    out = [f"{total} samples (all threads, idle ones included)", "", "self (where samples end):"]
    out += [f"  {100 * c / total:5.1f}%  {n}" for n, c in self_counts.most_common(top)]
    out += ["", "inclusive:"]
    out += [f"  {100 * c / total:5.1f}%  {n}" for n, c in incl.most_common(top)]
    return "\n".join(out) + "\n"


class PySpy:
    """Record the given processes (and their children) until the ``with`` block ends."""

    def __init__(self, pids: dict[str, int], out_dir: Path, *, rate: int = 50) -> None:
        self.pids = pids
        self.out_dir = out_dir
        self.rate = rate
        self.procs: dict[str, subprocess.Popen] = {}
        exe = Path(sys.executable).parent / "py-spy"
        self.exe = str(exe) if exe.is_file() else shutil.which("py-spy")

    def __enter__(self) -> PySpy:
        if not self.exe:
            print("  py-spy not installed: no profile recorded", flush=True)
            return self
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for name, pid in self.pids.items():
            self.procs[name] = subprocess.Popen(
                [
                    self.exe,
                    "record",
                    "--idle",
                    "--subprocesses",
                    "--nonblocking",
                    "--format",
                    "raw",
                    "--rate",
                    str(self.rate),
                    "--pid",
                    str(pid),
                    "-o",
                    str(self.out_dir / f"{name}.collapsed.txt"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGINT)
        for name, proc in self.procs.items():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            raw = self.out_dir / f"{name}.collapsed.txt"
            if raw.is_file():
                text = raw.read_text()
                (self.out_dir / f"{name}.summary.txt").write_text(summarize_collapsed(text))
                # raw stacks for flamegraph tools, compressed (they run to megabytes)
                with gzip.open(raw.with_name(raw.name + ".gz"), "wt") as out:
                    out.write(text)
                raw.unlink()
