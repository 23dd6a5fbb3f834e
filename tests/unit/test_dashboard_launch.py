"""``privfed dashboard``'s command line: which store it opens and how it starts Streamlit."""

from __future__ import annotations

from pathlib import Path

import pytest

from privfed.cli import build_parser
from privfed.config import ConfigError
from privfed.dashboard.launch import APP, resolve_store, streamlit_command
from tests.conftest import PARAMS


def test_defaults_come_from_params_with_relative_sqlite_at_the_project_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: the project's params.yaml in a project folder other than the working directory
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = tmp_path / "project" / "params.yaml"
    params.parent.mkdir()
    params.write_text(PARAMS.read_text())
    monkeypatch.chdir(tmp_path)
    # Execute
    uri, experiment = resolve_store(params)
    # Assert: register_model's defaults, the SQLite file beside params.yaml
    assert uri == f"sqlite:///{tmp_path / 'project' / 'mlflow.db'}"
    assert experiment == "privfed"


def test_mlflow_tracking_uri_wins_over_params_and_flags_win_over_both(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert resolve_store(PARAMS) == ("http://mlflow.example:5000", "privfed")
    assert resolve_store(PARAMS, "sqlite:////x/m.db", "other") == ("sqlite:////x/m.db", "other")


def test_missing_params_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="nope.yaml"):
        resolve_store(missing, tracking_uri="sqlite:////x/m.db")
    # both flags given: params.yaml is not needed
    assert resolve_store(missing, "sqlite:////x/m.db", "e") == ("sqlite:////x/m.db", "e")


def test_streamlit_runs_the_app_headless_without_usage_statistics() -> None:
    cmd = streamlit_command("sqlite:////x/m.db", "privfed", port=8600, refresh=2.0)
    assert cmd[1:5] == ["-m", "streamlit", "run", str(APP)]
    server = cmd[: cmd.index("--")]
    pairs = dict(zip(server[5::2], server[6::2], strict=True))
    assert pairs["--server.headless"] == "true"
    assert pairs["--browser.gatherUsageStats"] == "false"
    assert pairs["--server.port"] == "8600"
    assert pairs["--server.address"] == "127.0.0.1"  # not every interface, unless asked
    assert cmd[cmd.index("--") + 1 :] == [
        "--tracking-uri",
        "sqlite:////x/m.db",
        "--experiment",
        "privfed",
        "--refresh",
        "2.0",
    ]
    assert APP.is_file()


@pytest.mark.parametrize(("kwargs", "named"), [({"port": 0}, "0"), ({"refresh": -1.0}, "-1.0")])
def test_bad_port_or_refresh_is_named(kwargs: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        streamlit_command("sqlite:////x/m.db", "privfed", **kwargs)


def test_cli_parses_the_dashboard_command() -> None:
    args = build_parser().parse_args(
        ["dashboard", "--tracking-uri", "sqlite:////x/m.db", "--experiment", "e", "--port", "9000"]
    )
    assert (args.command, args.tracking_uri, args.experiment, args.port) == (
        "dashboard",
        "sqlite:////x/m.db",
        "e",
        9000,
    )
    assert (args.params, args.address, args.refresh) == ("params.yaml", "127.0.0.1", 5.0)
