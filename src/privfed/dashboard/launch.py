"""Start the dashboard: ``streamlit run`` on :mod:`privfed.dashboard.app`, headless.

The store and experiment default to params.yaml's ``register_model.tracking_uri`` and
``experiment``, resolved as the stages resolve them (``MLFLOW_TRACKING_URI`` wins; a relative
SQLite path is anchored at the project root), so the dashboard opens the store ``make run``
writes to without flags.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

__all__ = ["APP", "DEFAULT_PORT", "launch", "resolve_store", "streamlit_command"]

#: The Streamlit script (a file: ``streamlit run`` takes a path, not a module).
APP = Path(__file__).with_name("app.py")
DEFAULT_PORT = 8501


def resolve_store(
    params: Path | str, tracking_uri: str | None = None, experiment: str | None = None
) -> tuple[str, str]:
    """``(tracking URI, experiment)``: the flags where given, else params.yaml's.

    Raises:
        ConfigError: params.yaml is needed (a flag is missing) and cannot be read.
    """
    from privfed.config import ConfigError, load_config
    from privfed.registry import tracking_uri as resolve_uri

    if tracking_uri is not None and experiment is not None:
        return tracking_uri, experiment
    params = Path(params)
    if not params.is_file():
        raise ConfigError(
            f"params file {str(params)!r} not found: pass --params, or both --tracking-uri "
            "and --experiment"
        )
    cfg = load_config(params).register_model
    uri = tracking_uri or resolve_uri(cfg.tracking_uri, params.resolve().parent)
    return uri, experiment or cfg.experiment


def streamlit_command(
    tracking_uri: str,
    experiment: str,
    *,
    port: int = DEFAULT_PORT,
    address: str = "127.0.0.1",
    refresh: float = 5.0,
) -> list[str]:
    """The ``streamlit run`` command line: headless, no usage statistics, no file watcher
    (the page's code does not change while it serves), bound to ``address``."""
    if not 0 < port < 65536:
        raise ValueError(f"port must be in 1..65535, got {port}")
    if not refresh > 0:
        raise ValueError(f"refresh must be > 0 seconds, got {refresh}")
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "viewer",
        "--server.fileWatcherType",
        "none",
        "--server.port",
        str(port),
        "--server.address",
        address,
        "--",
        "--tracking-uri",
        tracking_uri,
        "--experiment",
        experiment,
        "--refresh",
        str(refresh),
    ]


def launch(
    tracking_uri: str,
    experiment: str,
    *,
    port: int = DEFAULT_PORT,
    address: str = "127.0.0.1",
    refresh: float = 5.0,
) -> int:
    """Serve the dashboard until interrupted; returns streamlit's exit status."""
    cmd = streamlit_command(tracking_uri, experiment, port=port, address=address, refresh=refresh)
    print(f"PrivFed dashboard on http://{address}:{port} (store {tracking_uri})", flush=True)
    try:
        return subprocess.run(cmd, check=False).returncode
    except KeyboardInterrupt:  # Ctrl-C reached streamlit too: it stops on its own
        return 0
