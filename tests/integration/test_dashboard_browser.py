"""``privfed dashboard`` in a real browser: a real Streamlit server, headless Chromium.

The store is written as docs/tracking.md lays it out (tests/dashboard_store.py). Playwright
drives the system's Chromium (``/usr/bin/chromium``, which ``make install`` installs as root);
it never downloads a browser. Without Chromium these tests skip, except under ``CI``, where a
missing browser is a broken machine and fails.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from privfed.dashboard.screenshot import chromium_executable, serving
from privfed.federated.processes import free_port
from tests import dashboard_store as store
from tests.integration.conftest import project_env, set_params

pytestmark = pytest.mark.integration

#: Generous: the server, MLflow and Chromium share 2 loaded cores with other tests.
WAIT_MS = 60_000
PRIVFED = Path(sys.executable).with_name("privfed")


@pytest.fixture(scope="module")
def chromium() -> str:
    path = chromium_executable()
    if path is None:
        reason = "no Chromium at /usr/bin/chromium (`make install` as root installs it)"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set and {reason}: the browser tests must run in CI")
        pytest.skip(reason)
    return path


@pytest.fixture
def page(chromium: str) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1000})
        finally:
            browser.close()


def _dashboard(
    uri: str, port: int, *, refresh: float = 5.0, experiment: str = store.EXPERIMENT
) -> list[str]:
    """The command line a user types (the installed ``privfed`` script)."""
    return [
        str(PRIVFED),
        "dashboard",
        "--tracking-uri",
        uri,
        "--experiment",
        experiment,
        "--port",
        str(port),
        "--refresh",
        str(refresh),
    ]


def test_finished_run_shows_runs_curves_comparison_and_registry(
    tmp_path: Path, page: object
) -> None:
    from playwright.sync_api import expect

    # Prepare: one finished DP pipeline run, registered as challenger
    uri, _ = store.finished_store(tmp_path / "store")
    port = free_port()
    with serving(_dashboard(uri, port), port) as url:
        # Execute
        page.goto(url, timeout=WAIT_MS)
        # Assert: the run list, with the run selected
        expect(page.get_by_role("heading", name="PrivFed pipeline runs")).to_be_visible(
            timeout=WAIT_MS
        )
        expect(page.get_by_test_id("stDataFrame").first).to_be_visible(timeout=WAIT_MS)
        expect(page.get_by_role("combobox", name="Run")).to_have_value(
            re.compile(r"^finished-run · readmission · FINISHED · challenger · "), timeout=WAIT_MS
        )
        # the round counter and the curves (Vega charts that drew)
        expect(page.locator(".st-key-round-federated_dp")).to_contain_text("Round", timeout=WAIT_MS)
        expect(page.locator(".st-key-round-federated_dp")).to_contain_text("5 / 5")
        charts = page.get_by_test_id("stVegaLiteChart")
        expect(charts.first.locator("canvas, svg").first).to_be_visible(timeout=WAIT_MS)
        for title in ("train loss", "validation macro_auroc", "ε spent", "participation"):
            expect(charts.filter(has_text=title).first).to_be_visible(timeout=WAIT_MS)
        # the comparison table, every model a row
        table = page.get_by_test_id("stTable").filter(has_text="public_only")
        expect(table).to_be_visible(timeout=WAIT_MS)
        for model in store.COMPARISON:
            expect(table).to_contain_text(model)
        # the registry: version, alias, the gate's reason
        expect(page.get_by_role("heading", name="Model registry")).to_be_visible()
        expect(page.get_by_text(f"{store.MODEL_NAME} v1", exact=True)).to_be_visible(
            timeout=WAIT_MS
        )
        expect(page.get_by_text(f"Gate: {store.GATE_REASON}")).to_be_visible()
        # the model card, behind its expander
        page.get_by_text("Model card v1").click()
        expect(page.get_by_text("Card text for the dashboard test.")).to_be_visible()
        # nothing on the page failed
        expect(page.get_by_test_id("stException")).to_have_count(0)
        expect(page.get_by_text("Could not show")).to_have_count(0)


class _RoundWriter(threading.Thread):
    """Logs rounds 2..5 into a RUNNING run as train_federated would, then ends the run.

    It holds after rounds 2 and 4 until the test has seen them on the page, so the test
    asserts what the page showed on its own, not a race with the writer.
    """

    def __init__(self, uri: str, run_id: str) -> None:
        super().__init__(daemon=True)
        self.uri, self.run_id = uri, run_id
        self.seen = {2: threading.Event(), 4: threading.Event()}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            client = MlflowClient(tracking_uri=self.uri)
            for r in (2, 3, 4, 5):
                store.log_round(client, self.run_id, r)
                if r in self.seen and not self.seen[r].wait(timeout=WAIT_MS / 1000 + 30):
                    raise TimeoutError(f"the test never saw round {r}")
            client.set_tag(self.run_id, "privfed.federation.federated_dp", "done")
            client.set_terminated(self.run_id, "FINISHED")
        except BaseException as err:  # handed to the test thread, which asserts on it
            self.error = err


def test_round_counter_advances_live_without_reload(tmp_path: Path, page: object) -> None:
    from playwright.sync_api import expect

    # Prepare: a RUNNING pipeline run at round 1 of 5
    uri, client, exp_id = store.open_store(tmp_path / "store")
    run_id = store.start_pipeline_run(client, exp_id, name="live-run")
    store.log_round(client, run_id, 1)
    port = free_port()
    with serving(_dashboard(uri, port, refresh=1.0), port) as url:
        page.goto(url, timeout=WAIT_MS)
        counter = page.locator(".st-key-round-federated_dp")
        expect(counter).to_contain_text("1 / 5", timeout=WAIT_MS)
        # a full page load would drop this
        page.evaluate("window.__privfedSamePage = 'yes'")
        writer = _RoundWriter(uri, run_id)
        # Execute: the federation goes on while the page stays open
        writer.start()
        try:
            expect(counter).to_contain_text("2 / 5", timeout=WAIT_MS)
            writer.seen[2].set()
            expect(counter).to_contain_text("4 / 5", timeout=WAIT_MS)
            writer.seen[4].set()
            expect(counter).to_contain_text("5 / 5", timeout=WAIT_MS)
            status = page.get_by_test_id("stMetric").filter(has_text="Status")
            expect(status).to_contain_text("FINISHED", timeout=WAIT_MS)
        finally:
            for event in writer.seen.values():
                event.set()
            writer.join(timeout=60)
        # Assert: the same document all along, and the writer had no error
        assert page.evaluate("window.__privfedSamePage") == "yes"
        assert writer.error is None, writer.error
        expect(page.get_by_test_id("stException")).to_have_count(0)


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; fails on anything that is not a PNG."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", head
    return struct.unpack(">II", head[16:24])


def test_screenshot_command_writes_a_full_page_png(tmp_path: Path, chromium: str) -> None:
    # Prepare
    uri, run_id = store.finished_store(tmp_path / "store")
    out = tmp_path / "img" / "dashboard.png"
    # Execute: the command README's screenshot is made with
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "privfed.dashboard.screenshot",
            "--tracking-uri",
            uri,
            "--experiment",
            store.EXPERIMENT,
            "--out",
            str(out),
            "--run-id",
            run_id,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "PRIVFED_CHROMIUM": chromium},
    )
    # Assert: a PNG as wide as the viewport and taller than one screen (the whole page)
    assert done.returncode == 0, done.stderr[-3000:]
    width, height = _png_size(out)
    assert width == 1400
    assert height > 1500, height
    assert out.stat().st_size > 50_000


def test_empty_store_waits_for_the_first_pipeline_run(tmp_path: Path, page: object) -> None:
    from playwright.sync_api import expect

    # Prepare: a store without the experiment yet (before the first `make run`)
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    port = free_port()
    with serving(_dashboard(uri, port, refresh=1.0), port) as url:
        page.goto(url, timeout=WAIT_MS)
        expect(page.get_by_text("No pipeline run in experiment")).to_be_visible(timeout=WAIT_MS)
        # Execute: a pipeline starts
        _, client, exp_id = store.open_store(tmp_path / "store")
        run_id = store.start_pipeline_run(client, exp_id, name="first-run")
        store.log_round(client, run_id, 1)
        # Assert: the page draws it on its own
        expect(page.locator(".st-key-round-federated_dp")).to_contain_text("1 / 5", timeout=WAIT_MS)


def test_page_shows_each_round_of_a_real_federation_before_the_next_ends(
    project: Path, page: object
) -> None:
    """Issue 21's bar: during a tiny ``dvc repro``, round N is on the page before round N+1 of
    the same federation ends (its checkpoint is written when it ends)."""
    from playwright.sync_api import expect

    # Prepare: 3 rounds (two chances per federation), the project's own SQLite store
    set_params(project, {"profiles.tiny.train_federated.rounds": 3})
    env = project_env()
    env.pop("MLFLOW_TRACKING_URI", None)
    uri = f"sqlite:///{project / 'mlflow.db'}"
    port = free_port()
    seen_early: list[str] = []
    training: set[str] = set()  # federations whose counter the page showed mid-run
    with serving(_dashboard(uri, port, refresh=1.0, experiment="privfed"), port, env=env) as url:
        page.goto(url, timeout=WAIT_MS)
        # Execute: the data stages and the federations, watched from the page
        with open(project / "repro.log", "w") as out:
            proc = subprocess.Popen(
                ["dvc", "repro", "train_federated"], cwd=project, env=env, stdout=out, stderr=out
            )
            try:
                while proc.poll() is None:
                    seen_early += _rounds_shown_early(page, project, training)
                    time.sleep(0.2)
            finally:
                if proc.poll() is None:
                    proc.kill()
        # Assert: the stage ran, and at least one round was on the page before the next ended
        log = (project / "repro.log").read_text()
        assert proc.returncode == 0, log[-4000:]
        rounds = [
            (r["round"], r["seconds"])
            for run in json.loads((project / "metrics/train_federated.json").read_text())[
                "runs"
            ].values()
            for r in run["rounds"][1:]
        ]
        assert seen_early, f"no round reached the page before the next ended; rounds: {rounds}"
        # the page followed the federation in training: non-DP first, then the DP one
        assert training == {"federated", "federated_dp"}, training
        counter = page.locator(".st-key-round-federated_dp, .st-key-round-federated").first
        expect(counter).to_contain_text("3 / 3", timeout=WAIT_MS)
        expect(page.get_by_test_id("stException")).to_have_count(0)


def _rounds_shown_early(page: object, project: Path, training: set[str]) -> list[str]:
    """``federation:N`` for each round counter showing N while round N+1 has no checkpoint;
    adds to ``training`` each federation whose counter shows a round short of the last."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    early = []
    for name in ("federated", "federated_dp"):
        counter = page.locator(f".st-key-round-{name}")
        if counter.count() == 0:
            continue
        try:  # Streamlit may be swapping the element out for its redraw: look at the next poll
            text = counter.first.inner_text(timeout=2000)
        except PlaywrightTimeout:
            continue
        shown = re.search(r"(\d+) / (\d+)", text)
        if shown is None or shown.group(1) == shown.group(2):
            continue
        done = int(shown.group(1))
        training.add(name)
        nxt = f"*/{name}/checkpoints/round_{done + 1:03d}.pt"
        if done >= 1 and not any((project / "models").glob(nxt)):
            early.append(f"{name}:{done}")
    return early
