"""A full-page PNG of the dashboard, for README (``docs/img/dashboard.png``) and for review.

``python -m privfed.dashboard.screenshot --tracking-uri URI --experiment NAME --out PNG
[--run-id ID]`` serves ``privfed dashboard`` on a free port, opens it in headless Chromium
(Playwright driving the system's browser: nothing is downloaded), waits until the page has
drawn and writes the screenshot. :func:`serving` is the same server for the browser tests.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from privfed.federated.processes import free_port

__all__ = [
    "DEFAULT_CHROMIUM",
    "capture",
    "chromium_executable",
    "dashboard_command",
    "serving",
    "wait_until_drawn",
]

DEFAULT_CHROMIUM = "/usr/bin/chromium"


def chromium_executable() -> str | None:
    """The system Chromium (``PRIVFED_CHROMIUM`` overrides), or None when there is none.

    Playwright's own browser download is never used: machines here install Debian's chromium.
    """
    for candidate in (os.environ.get("PRIVFED_CHROMIUM"), DEFAULT_CHROMIUM):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium")


def dashboard_command(
    tracking_uri: str, experiment: str, *, port: int, refresh: float = 5.0
) -> list[str]:
    """``privfed dashboard`` on ``port`` through this interpreter (no PATH lookup)."""
    return [
        sys.executable,
        "-m",
        "privfed.cli",
        "dashboard",
        "--tracking-uri",
        tracking_uri,
        "--experiment",
        experiment,
        "--port",
        str(port),
        "--refresh",
        str(refresh),
    ]


@contextmanager
def serving(
    cmd: Sequence[str], port: int, *, timeout_s: float = 120.0, env: dict[str, str] | None = None
) -> Iterator[str]:
    """Run a dashboard command until Streamlit answers its health check; yield the URL.

    The server runs in its own process group, stopped on exit; if it dies or does not answer
    in ``timeout_s``, the error quotes the end of its output.
    """
    log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in finally, read on failure)
    proc = subprocess.Popen(
        list(cmd), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                tail = log.read().decode(errors="replace")[-3000:]
                state = (
                    f"exited with {proc.returncode}"
                    if proc.poll() is not None
                    else (f"did not answer in {timeout_s:g} s")
                )
                raise RuntimeError(f"dashboard {state}: {' '.join(cmd)}\n{tail}")
            time.sleep(0.3)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


def wait_until_drawn(page: object, *, timeout_s: float = 90.0) -> None:
    """Wait until the script has run to the end and every chart has drawn.

    Streamlit marks its root element ``data-test-script-state="notRunning"`` when a run
    ends; Vega charts draw after that, into a canvas or SVG of their own.
    """
    ms = timeout_s * 1000
    page.get_by_role("heading", name="PrivFed pipeline runs").wait_for(timeout=ms)
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=ms)
    page.wait_for_function(
        """() => [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')]
                .every(c => c.querySelector('canvas, svg'))""",
        timeout=ms,
    )


def capture(
    tracking_uri: str,
    experiment: str,
    out: Path,
    *,
    run_id: str | None = None,
    width: int = 1400,
    timeout_s: float = 120.0,
) -> Path:
    """Serve the dashboard, open it (on ``run_id`` if given) and write a full-page PNG."""
    from playwright.sync_api import sync_playwright

    chromium = chromium_executable()
    if chromium is None:
        raise FileNotFoundError(
            f"no Chromium at {DEFAULT_CHROMIUM} (nor PRIVFED_CHROMIUM, nor on PATH): "
            "`apt-get install chromium` (make install does it as root)"
        )
    port = free_port()
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1"}
    cmd = dashboard_command(tracking_uri, experiment, port=port)
    with serving(cmd, port, timeout_s=timeout_s, env=env) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.goto(url + (f"/?run={run_id}" if run_id else "/"), timeout=timeout_s * 1000)
            wait_until_drawn(page, timeout_s=timeout_s)
            # Streamlit scrolls inside its main block, not the document: a viewport as tall as
            # that block's content is what makes the screenshot hold the whole page
            height = page.evaluate(
                """() => Math.max(...[...document.querySelectorAll('[data-testid="stMain"], '
                    + '[data-testid="stMain"] *')].map(e => e.scrollHeight))"""
            )
            page.set_viewport_size({"width": width, "height": int(height) + 40})
            wait_until_drawn(page, timeout_s=timeout_s)
            page.screenshot(path=str(out), full_page=True)
        finally:
            browser.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m privfed.dashboard.screenshot")
    parser.add_argument("--tracking-uri", help="default: params.yaml's, as privfed dashboard")
    parser.add_argument("--experiment", help="default: params.yaml's register_model.experiment")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", type=Path, default=Path("docs/img/dashboard.png"))
    parser.add_argument("--run-id", help="the run to show (default: the newest)")
    parser.add_argument("--width", type=int, default=1400, help="viewport width in pixels")
    args = parser.parse_args(argv)
    from privfed.dashboard.launch import resolve_store

    uri, experiment = resolve_store(args.params, args.tracking_uri, args.experiment)
    out = capture(uri, experiment, args.out, run_id=args.run_id, width=args.width)
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
