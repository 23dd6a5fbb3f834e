"""The Streamlit page of ``privfed dashboard`` (started by ``streamlit run``, never imported).

Reads only the MLflow tracking store, through :mod:`privfed.dashboard.data`. The selected run
redraws itself while it is RUNNING (a Streamlit fragment with ``run_every``), so a federation is
watched round by round without reloading the page. Arguments come after ``--`` on the
``streamlit run`` line (see :func:`privfed.dashboard.launch.streamlit_command`).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st
from mlflow import MlflowClient

from privfed.dashboard import data

__all__ = ["main", "parse_args"]

TITLE = "PrivFed pipeline runs"
#: Markdown images in the evaluation report point at files beside it: the figures section
#: shows them from the run's artifacts instead.
_MD_IMAGE = re.compile(r"!\[[^\]]*\]\((?!https?://)[^)]*\)")


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The page's arguments (what ``privfed dashboard`` passes after ``--``)."""
    parser = argparse.ArgumentParser(prog="privfed-dashboard-app")
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--refresh", type=float, default=5.0, help="seconds between redraws")
    args = parser.parse_args(argv)
    if not args.refresh > 0:
        parser.error(f"--refresh must be > 0 seconds, got {args.refresh}")
    return args


@st.cache_resource
def _client(uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@contextmanager
def _shown_errors(what: str) -> Iterator[None]:
    """A section that fails says so on the page (with the error) and the others still draw."""
    try:
        yield
    except Exception as err:  # shown, not swallowed: the page is the only place it surfaces
        st.error(f"Could not show {what}: {type(err).__name__}: {err}")


def _run_label(row: pd.Series) -> str:
    start = row["start_time"].strftime("%Y-%m-%d %H:%M")
    gate = f" · {row['gate']}" if row["gate"] else ""
    return f"{row['run_name']} · {row['task']} · {row['status']}{gate} · {start}"


def _run_list(runs: pd.DataFrame) -> None:
    shown = runs.drop(columns=["run_id"]).rename(
        columns={"run_name": "run", "epsilon": "ε", "model_version": "version", "dp": "DP"}
    )
    st.dataframe(
        shown,
        hide_index=True,
        width="stretch",
        column_config={
            "ε": st.column_config.NumberColumn(format="%.3g"),
            "start_time": st.column_config.DatetimeColumn("started (UTC)"),
        },
    )


def _pick_run(runs: pd.DataFrame) -> str:
    """The run to show: ``?run=<id>`` if listed, else the newest RUNNING one, else the newest."""
    ids = list(runs["run_id"])
    asked = st.query_params.get("run")
    running = [r for r, s in zip(runs["run_id"], runs["status"], strict=True) if s == "RUNNING"]
    default = asked if asked in ids else (running or ids)[0]
    labels = {r: _run_label(row) for r, (_, row) in zip(ids, runs.iterrows(), strict=True)}
    chosen = st.selectbox("Run", ids, index=ids.index(default), format_func=labels.__getitem__)
    st.query_params["run"] = chosen
    return chosen


def _line_chart(frame: pd.DataFrame, y: str, title: str, *, dashed: str = data.GLOBAL) -> alt.Chart:
    """One line per hospital (the ``dashed`` series, the federation's own figure, dashed)."""
    return (
        alt.Chart(frame, title=title)
        .mark_line(point=True)
        .encode(
            x=alt.X("round:Q", title="round", axis=alt.Axis(tickMinStep=1)),
            y=alt.Y(f"{y}:Q", title=title, scale=alt.Scale(zero=False)),
            color=alt.Color("hospital:N"),
            strokeDash=alt.condition(
                alt.datum.hospital == dashed, alt.value([6, 3]), alt.value([1, 0])
            ),
            tooltip=["round:Q", "hospital:N", alt.Tooltip(f"{y}:Q", format=".4g")],
        )
    )


def _curves(client: MlflowClient, run: Any, name: str) -> None:
    metrics = data.val_metrics(run.data.metrics, name)
    primary = data.primary_metric(metrics)
    metric = (
        st.selectbox(
            "Validation metric",
            metrics,
            index=metrics.index(primary),
            key=f"metric-{run.info.run_id}-{name}",
        )
        if metrics
        else None
    )
    frame = data.curves(client, run, name, metric)
    if frame.empty:
        st.info(f"No round of {name} has been logged yet.")
        return
    left, right = st.columns(2)
    loss = frame[frame.series == "train_loss"]
    left.altair_chart(_line_chart(loss, "value", "train loss"), width="stretch")
    if metric:
        val = frame[frame.series == f"val_{metric}"]
        right.altair_chart(_line_chart(val, "value", f"validation {metric}"), width="stretch")
    parts = data.loss_parts(run.data.metrics, name)  # a GAN: generator, discriminator loss
    columns = st.columns(2) if parts else []
    for i, part in enumerate(parts):
        chart = _line_chart(frame[frame.series == part], "value", part.replace("_", " "))
        columns[i % 2].altair_chart(chart, width="stretch")
    st.caption(
        "global: the train loss weighted by each hospital's examples, the validation score the "
        "mean over hospitals. A round's validation scores arrive with the next round's replies "
        "(each hospital scores the model it receives)."
    )


def _epsilon(client: MlflowClient, run: Any, name: str) -> None:
    frame, budget = data.epsilon_curves(client, run, name)
    if frame.empty:
        return
    spent = frame[frame.hospital == data.GLOBAL]["epsilon"]
    most = "max over hospitals"
    frame = frame.replace({"hospital": {data.GLOBAL: most}})
    chart = _line_chart(frame, "epsilon", "ε spent", dashed=most)
    if budget is not None:
        rule = (
            alt.Chart(pd.DataFrame({"budget": [budget]}))
            .mark_rule(color="red", strokeDash=[4, 2])
            .encode(y="budget:Q", tooltip=[alt.Tooltip("budget:Q", title="ε budget")])
        )
        chart = chart + rule
    st.altair_chart(chart, width="stretch")
    note = f"ε budget (privacy.epsilon_budget): {budget:g}" if budget is not None else ""
    if not spent.empty and budget is not None:
        note += f"; spent so far (max over hospitals): {spent.iloc[-1]:.3g}"
    st.caption(f"{note} — the red line is the budget." if note else "No ε budget recorded.")


def _participation(client: MlflowClient, run: Any, name: str) -> None:
    frame = data.participation(client, run, name)
    if frame.empty:
        return
    frame["state"] = frame["took_part"].map({True: "took part", False: "dropped out / rejected"})
    chart = (
        alt.Chart(frame, title="participation")
        .mark_rect(stroke="white")
        .encode(
            x=alt.X("round:O", title="round"),
            y=alt.Y("hospital:N"),
            color=alt.Color(
                "state:N",
                scale=alt.Scale(
                    domain=["took part", "dropped out / rejected"], range=["#4c9f70", "#d1495b"]
                ),
            ),
            tooltip=["round:O", "hospital:N", "state:N"],
        )
    )
    st.altair_chart(chart, width="stretch")


def _costs(client: MlflowClient, run: Any, name: str) -> None:
    frame = data.round_costs(client, run, name)
    if frame.empty:
        return
    left, right = st.columns(2)
    if frame["seconds"].notna().any():
        seconds = (
            alt.Chart(frame, title="seconds per round")
            .mark_bar()
            .encode(x=alt.X("round:O"), y=alt.Y("seconds:Q"), tooltip=["round:O", "seconds:Q"])
        )
        left.altair_chart(seconds, width="stretch")
    traffic = frame.melt(
        id_vars="round", value_vars=["bytes_sent", "bytes_received"], var_name="direction"
    ).dropna()
    if not traffic.empty:
        chart = (
            alt.Chart(traffic, title="bytes per round (all hospitals)")
            .mark_line(point=True)
            .encode(
                x=alt.X("round:Q", axis=alt.Axis(tickMinStep=1)),
                y=alt.Y("value:Q", title="bytes"),
                color="direction:N",
                tooltip=["round:Q", "direction:N", alt.Tooltip("value:Q", format=",.0f")],
            )
        )
        right.altair_chart(chart, width="stretch")


def _federation(client: MlflowClient, run: Any, name: str) -> None:
    progress = data.round_progress(run, name)
    with st.container(key=f"round-{name}"):
        st.metric(
            "Round",
            progress.label,
            help="rounds finished, of train_federated.rounds",
        )
    if progress.total:
        st.progress(min(progress.done / progress.total, 1.0))
    with _shown_errors(f"the curves of {name}"):
        _curves(client, run, name)
    left, right = st.columns(2)
    with left, _shown_errors(f"the ε of {name}"):
        _epsilon(client, run, name)
    with right, _shown_errors(f"the participation in {name}"):
        _participation(client, run, name)
    with _shown_errors(f"the cost of {name}'s rounds"):
        _costs(client, run, name)


def _live(client: MlflowClient, run_id: str, was_running: bool) -> None:
    """The selected run's status and federations; a fragment that redraws while it trains."""
    try:
        run = client.get_run(run_id)
    except Exception as err:  # e.g. the store is busy or gone: say so, retry on the next redraw
        st.error(f"Could not read run {run_id}: {type(err).__name__}: {err}")
        return
    if was_running and run.info.status != "RUNNING":
        st.rerun()  # the run ended: redraw everything once (list, comparison, registry) and stop
    with _shown_errors(f"run {run_id}"):
        _live_run(client, run)


def _live_run(client: MlflowClient, run: Any) -> None:
    run_id = run.info.run_id
    stages = {
        k.removeprefix("privfed.stage."): v
        for k, v in run.data.tags.items()
        if k.startswith("privfed.stage.")
    }
    cols = st.columns([1, 3])
    cols[0].metric("Status", run.info.status)
    if stages:
        cols[1].markdown(" · ".join(f"`{stage}` {state}" for stage, state in stages.items()))
    names = data.federations(run)
    if not names:
        st.info("No federation has started in this run yet.")
        return
    # the federation training now, else the last one: what a watcher wants to see
    states = [run.data.tags.get(f"privfed.federation.{n}") for n in names]
    default = states.index("running") if "running" in states else len(names) - 1
    # keyed by the federation training now: when the next one starts, the page follows it
    name = (
        st.radio(
            "Federation",
            names,
            index=default,
            horizontal=True,
            key=f"fed-{run_id}-{names[default]}",
        )
        if len(names) > 1
        else names[0]
    )
    st.subheader(f"Federation `{name}`")
    _federation(client, run, name)


#: How long a run's artifacts are reused before they are read again (a finished run's do not
#: change; a running run's appear as its stages finish). The caches below are keyed by
#: ``uri, run_id, end`` (Streamlit hashes the arguments; ``_``-prefixed ones are not hashed).
ARTIFACTS_TTL_S = 30


@st.cache_data(ttl=ARTIFACTS_TTL_S, show_spinner=False)
def _cached_comparison(
    _client: MlflowClient, uri: str, run_id: str, end: int | None
) -> tuple[pd.DataFrame, list[str]]:
    return data.comparison(_client, run_id)


@st.cache_data(ttl=ARTIFACTS_TTL_S, show_spinner=False)
def _cached_audit(
    _client: MlflowClient, _run: Any, uri: str, run_id: str, end: int | None
) -> pd.DataFrame:
    return data.membership_audit(_client, _run)


@st.cache_data(ttl=ARTIFACTS_TTL_S, show_spinner=False)
def _cached_figures(
    _client: MlflowClient, uri: str, run_id: str, end: int | None
) -> tuple[list[tuple[str, bytes]], list[tuple[str, str]]]:
    return data.figures(_client, run_id), data.markdown_reports(_client, run_id)


def _key(client: MlflowClient, run: Any) -> tuple[str, str, int | None]:
    """What identifies a run's artifacts in the caches above (the store, the run, its end)."""
    return client.tracking_uri, run.info.run_id, run.info.end_time


def _comparison(client: MlflowClient, run: Any) -> None:
    frame, metrics = _cached_comparison(client, *_key(client, run))
    if frame.empty:
        st.info("No comparison yet (evaluate_models logs reports/evaluation/comparison.json).")
        return
    st.table(frame.style.format("{:.4g}", na_rep="n/a"))
    primary = data.primary_metric(metrics)
    metric = st.selectbox(
        "Compare models by", metrics, index=metrics.index(primary), key="compare-metric"
    )
    bars = frame[[metric]].reset_index()
    chart = (
        alt.Chart(bars, title=f"pooled test {metric}")
        .mark_bar()
        .encode(
            x=alt.X("model:N", sort=None),
            y=alt.Y(f"{metric}:Q"),
            color=alt.Color("model:N", legend=None),
            tooltip=["model:N", alt.Tooltip(f"{metric}:Q", format=".4g")],
        )
    )
    st.altair_chart(chart, width="stretch")
    st.caption("ε: what the model spent (inf: trained on hospital data without a DP bound).")


def _audit(client: MlflowClient, run: Any) -> None:
    frame = _cached_audit(client, run, *_key(client, run))
    if frame.empty:
        st.info("No membership-inference audit in this run.")
        return
    st.table(frame.pivot(index="model", columns="figure", values="value").style.format("{:.3g}"))
    st.caption("AUROC 0.5: the attack cannot tell training patients from unseen ones.")


def _figures(client: MlflowClient, run: Any) -> None:
    shown, reports = _cached_figures(client, *_key(client, run))
    if not shown:
        st.info("No figures (PNG under plots/ or reports/) in this run.")
    for path, png in shown:
        st.image(png, caption=path)
    for path, text in reports:
        with st.expander(path):
            st.markdown(_MD_IMAGE.sub("", text))


def _registry(client: MlflowClient, run_ids: list[str]) -> None:
    versions = data.registry_versions(client, run_ids)
    if not versions:
        st.info("No registered model version from these runs yet.")
        return
    for v in versions:
        aliases = ", ".join(f"`{a}`" for a in v["aliases"]) or "no alias"
        st.markdown(f"**{v['name']} v{v['version']}** — {aliases} (run `{v['run_id']}`)")
        reason = v["promotion_reason"] or "no promotion_reason recorded"
        (st.success if "champion" in v["aliases"] else st.warning)(f"Gate: {reason}")
        if v["gate"]:
            st.table(
                pd.DataFrame({"gate check": list(v["gate"]), "value": list(v["gate"].values())})
            )
        with st.expander(f"Model card v{v['version']}"):
            st.markdown(v["model_card"] or "_no model card_")


def _waiting(uri: str, experiment: str) -> None:
    """Before the first pipeline run: say so, and draw the page once one has started.

    A SQLite store is not opened before the pipeline has made it (see
    :func:`privfed.dashboard.data.store_has_experiment`).
    """
    try:
        started = data.store_has_experiment(uri, experiment) and not (
            data.pipeline_runs(_client(uri), experiment, max_results=1).empty
        )
    except Exception as err:
        st.error(f"Cannot list pipeline runs: {type(err).__name__}: {err}")
        return
    if started:
        st.rerun()
    st.info(f"No pipeline run in experiment {experiment!r} yet: `make run` starts one.")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    st.set_page_config(page_title="PrivFed dashboard", layout="wide")
    st.title(TITLE)
    st.caption(f"MLflow store `{args.tracking_uri}` · experiment `{args.experiment}`")
    if not data.store_has_experiment(args.tracking_uri, args.experiment):
        st.fragment(_waiting, run_every=args.refresh)(args.tracking_uri, args.experiment)
        return
    client = _client(args.tracking_uri)
    if data.experiment_id(client, args.experiment) is None:
        st.fragment(_waiting, run_every=args.refresh)(args.tracking_uri, args.experiment)
        return
    try:
        runs = data.pipeline_runs(client, args.experiment)
    except Exception as err:
        st.error(f"Cannot list pipeline runs: {type(err).__name__}: {err}")
        return
    if runs.empty:
        st.fragment(_waiting, run_every=args.refresh)(args.tracking_uri, args.experiment)
        return
    _run_list(runs)
    run_id = _pick_run(runs)
    running = bool((runs.set_index("run_id").loc[run_id, "status"]) == "RUNNING")
    live = st.fragment(_live, run_every=args.refresh if running else None)
    live(client, run_id, running)
    try:
        run = client.get_run(run_id)
    except Exception as err:
        st.error(f"Could not read run {run_id}: {type(err).__name__}: {err}")
        return
    st.header("Model comparison")
    with _shown_errors("the comparison"):
        _comparison(client, run)
    st.subheader("Membership-inference audit")
    with _shown_errors("the membership-inference audit"):
        _audit(client, run)
    st.header("Figures and reports")
    with _shown_errors("the figures"):
        _figures(client, run)
    st.header("Model registry")
    with _shown_errors("the registry"):
        _registry(client, list(runs["run_id"]))


if __name__ == "__main__":
    main()
