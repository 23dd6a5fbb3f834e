"""Records which files each Python process opens under the audited folders (tests only).

Put this folder on PYTHONPATH and set PRIVFED_AUDIT_ROOTS (os.pathsep-separated absolute
folders) and PRIVFED_AUDIT_LOG: every process started with that environment (the SuperLink,
the ServerApp, each SuperNode and ClientApp executor, the stages) appends one line per
``open``/``os.listdir``/``os.scandir`` under a root: ``pid<TAB>argv<TAB>path``. Python's audit
hooks see every file a process opens through Python, so a test can assert who read what.
"""

import os
import sys

_roots = [r for r in os.environ.get("PRIVFED_AUDIT_ROOTS", "").split(os.pathsep) if r]
_log = os.environ.get("PRIVFED_AUDIT_LOG")

if _roots and _log:
    _fd = os.open(_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def _hook(event: str, args: tuple) -> None:
        if event not in ("open", "os.listdir", "os.scandir") or not args:
            return
        path = args[0]
        if isinstance(path, int) or path is None:
            return
        try:
            full = os.path.abspath(os.fsdecode(path))
        except Exception:
            return
        if any(full == r or full.startswith(r + os.sep) for r in _roots):
            line = f"{os.getpid()}\t{' '.join(sys.argv)}\t{full}\n"
            os.write(_fd, line.encode())

    sys.addaudithook(_hook)
