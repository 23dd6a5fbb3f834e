"""Logging set-up shared by the CLI: rich console output, one format everywhere."""

from __future__ import annotations

import logging
import os
import shutil

from rich.console import Console
from rich.logging import RichHandler

__all__ = ["print_flower_lines_once", "setup_logging"]


def _console() -> Console:
    # Under DVC or CI stderr is no terminal: keep long lines whole instead of wrapping at 80.
    width = (
        None if Console(stderr=True).is_terminal else max(160, shutil.get_terminal_size().columns)
    )
    return Console(stderr=True, width=width)


def print_flower_lines_once() -> None:
    """Let Flower's ``flwr`` logger print through its own console handler only.

    That logger has a handler of its own and also propagates to the root logger, so any root
    handler (ours below, or the one ``opacus`` installs with ``basicConfig`` when imported into
    a ServerApp or ClientApp process) printed every Flower line a second time, timestamped.
    """
    logging.getLogger("flwr").propagate = False


def setup_logging(level: str | None = None) -> None:
    level = level or os.environ.get("PRIVFED_LOG_LEVEL", "INFO")
    logging.basicConfig(
        level=level,
        format="%(name)s: %(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=_console(), show_path=False, markup=False)],
        force=True,
    )
    print_flower_lines_once()
    for noisy in ("great_expectations", "alembic", "urllib3", "git", "opacus"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
