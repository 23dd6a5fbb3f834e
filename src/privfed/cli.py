"""``privfed <stage>``: the command-line front door that ``dvc.yaml`` calls.

Every stage accepts ``--params`` and ``--in NAME=PATH`` / ``--out NAME=PATH`` overrides of the
default DVC layout. Errors print one readable message and exit non-zero.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import warnings
from pathlib import Path

from privfed.config import STAGES, ConfigError, load_config
from privfed.logs import setup_logging

log = logging.getLogger("privfed")


def _pairs(values: list[str] | None, flag: str) -> dict[str, Path]:
    out = {}
    for item in values or []:
        if "=" not in item:
            raise ConfigError(f"{flag} expects NAME=PATH, got {item!r}")
        key, value = item.split("=", 1)
        out[key] = Path(value)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="privfed", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for stage in STAGES:
        p = sub.add_parser(stage, help=f"run the {stage} stage")
        p.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
        p.add_argument("--in", dest="inputs", action="append", metavar="NAME=PATH")
        p.add_argument("--out", dest="outputs", action="append", metavar="NAME=PATH")
    check = sub.add_parser("check-params", help="validate params.yaml and print the result")
    check.add_argument("--params", default="params.yaml")
    _add_pipeline_parser(sub)
    _add_schema_parser(sub)
    _add_dashboard_parser(sub)
    return parser


def _add_dashboard_parser(sub: argparse._SubParsersAction) -> None:
    """``privfed dashboard``: the live Streamlit view of pipeline runs (read from MLflow)."""
    dash = sub.add_parser("dashboard", help="serve the live dashboard of pipeline runs")
    dash.add_argument(
        "--tracking-uri",
        help="MLflow store (default: MLFLOW_TRACKING_URI, else register_model.tracking_uri)",
    )
    dash.add_argument("--experiment", help="default: params' register_model.experiment")
    dash.add_argument("--port", type=int, default=8501, help="default: %(default)s")
    dash.add_argument(
        "--address", default="127.0.0.1", help="interface to serve on (default: %(default)s)"
    )
    dash.add_argument(
        "--refresh",
        type=float,
        default=5.0,
        help="seconds between redraws of a running run (default: %(default)s)",
    )
    dash.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")


def run_dashboard_command(args: argparse.Namespace) -> int:
    from privfed.dashboard.launch import launch, resolve_store

    uri, experiment = resolve_store(args.params, args.tracking_uri, args.experiment)
    return launch(uri, experiment, port=args.port, address=args.address, refresh=args.refresh)


def _add_schema_parser(sub: argparse._SubParsersAction) -> None:
    """``privfed schema infer``: draft a tabular schema from a user's data for review."""
    schema = sub.add_parser("schema", help="tabular schema files")
    actions = schema.add_subparsers(dest="action", required=True)
    infer = actions.add_parser("infer", help="draft a schema from the data, to review and edit")
    infer.add_argument("--data", required=True, help="folder per hospital, or one file")
    infer.add_argument("--target", required=True, help="the column to predict")
    infer.add_argument(
        "--site-column",
        default="site",
        help="with one file: the column naming each row's hospital, recorded in the schema so "
        "ingest_data reads it too (default: %(default)s)",
    )
    infer.add_argument("--id-column", help="a row identifier column (not a feature)")
    infer.add_argument("--kind", choices=["classification", "regression"])
    infer.add_argument("--exclude", action="append", default=[], help="a column to leave out")
    infer.add_argument("--max-categories", type=int, default=20)
    infer.add_argument("--out", default="schema.yaml", help="where to write (default: %(default)s)")
    example = sub.add_parser("example", help="write example 'own data' for the walkthrough")
    example.add_argument("name", choices=["breast-cancer"])
    example.add_argument("--out", required=True, help="CSV to write (one table, a site column)")


def run_schema_command(args: argparse.Namespace) -> None:
    from privfed.ingest import concat_sites, site_tables
    from privfed.tasks.tabular.schema import dominant_values, infer_schema, write_schema

    tables = site_tables(
        Path(args.data),
        table=None,
        site_column=args.site_column,
        setting="pass --site-column",
    )
    one_file = len({t.file for t in tables}) == 1  # split by the site column, not by folder
    by_site = concat_sites(tables)
    frame = by_site.drop(columns=["hospital"])
    schema = infer_schema(
        frame,
        target=args.target,
        kind=args.kind,
        exclude=tuple(args.exclude),
        id_column=args.id_column,
        site_column=args.site_column if one_file else None,
        max_categories=args.max_categories,
    )
    numeric = [n for n, f in schema["features"].items() if f["type"] == "numeric"]
    checks = dominant_values(by_site, columns=numeric)
    out = Path(args.out)
    if out.exists():
        raise ConfigError(f"{out} exists; remove it or pass another --out (nothing written)")
    write_schema(
        schema,
        out,
        comment=(
            f"Drafted by `privfed schema infer` from {len(frame)} rows of {args.data} "
            f"({len(tables)} hospitals).\nReview before use: ranges are the observed ones, "
            "categories the values seen." + "".join(f"\nCHECK: {w}" for w in checks)
        ),
    )
    for check in checks:
        log.warning("%s: %s", out, check)
    log.info(
        "wrote %s: target %r (%s), %d features",
        out,
        args.target,
        schema["target"]["kind"],
        len(schema["features"]),
    )


def _add_pipeline_parser(sub: argparse._SubParsersAction) -> None:
    """``privfed pipeline compile|run-local|submit|schedule``: the Kubeflow front door."""
    pipe = sub.add_parser("pipeline", help="Kubeflow Pipelines: compile, run locally, submit")
    actions = pipe.add_subparsers(dest="action", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--params", default="params.yaml", help="defaults for the pipeline")
    common.add_argument("--project", default=".", help="PrivFed checkout with pipelines/")
    common.add_argument("--pipeline", default="main", choices=["main", "sweep"])
    comp = actions.add_parser("compile", parents=[common], help="write the IR YAML for the UI")
    comp.add_argument("--output", help="default: the committed pipelines/<name>.yaml")
    loc = actions.add_parser("run-local", parents=[common], help="KFP local runner, no cluster")
    loc.add_argument("--root", default="kfp-local", help="pipeline root for artifacts")
    loc.add_argument(
        "--out",
        default="kfp-local/outputs",
        help="copy artifacts into the DVC layout here, with the run's own MLflow store unless "
        "MLFLOW_TRACKING_URI is set (default: %(default)s, apart from `dvc repro`'s outputs; "
        "'.' writes over them)",
    )
    loc.add_argument(
        "--runner",
        default="subprocess",
        choices=["subprocess", "docker"],
        help="subprocess: components in this environment; docker: each component in its image "
        "(kubeflow.image / PRIVFED_IMAGE, `make images`), host network, --out under --root",
    )
    for name, text in (("submit", "start one run"), ("schedule", "create a recurring run")):
        p = actions.add_parser(name, parents=[common], help=text)
        p.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://localhost:8080")
        p.add_argument("--namespace", help="Kubeflow profile namespace (multi-user installs)")
        p.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="SECTION.KEY=VALUE",
            help="override a params value for this run",
        )
        p.add_argument("--name", help="run / schedule name (default: the pipeline name)")
        if name == "schedule":
            p.add_argument("--cron", required=True, help="6 fields, seconds first: '0 0 3 * * *'")


def run_pipeline_command(args: argparse.Namespace) -> None:
    from privfed.kubeflow import client, local, project

    params, proj = Path(args.params), Path(args.project)
    if args.action == "compile":
        out = Path(args.output) if args.output else proj / project.PIPELINES[args.pipeline].package
        project.compile_pipeline(args.pipeline, params, out, proj)
        log.info("compiled %s pipeline to %s", args.pipeline, out)
        return
    if args.action == "run-local":
        run_dir = local.run_local(
            params,
            root=Path(args.root),
            out=Path(args.out),
            pipeline=args.pipeline,
            project=proj,
            runner=args.runner,
        )
        log.info(
            "local run finished; KFP artifacts in %s, the DVC layout in %s, MLflow at %s",
            run_dir,
            Path(args.out).resolve(),
            local.local_tracking_uri(
                load_config(params).register_model.tracking_uri, Path(args.out)
            ),
        )
        return
    cfg = load_config(params)
    with tempfile.TemporaryDirectory() as work:
        package = project.compile_pipeline(args.pipeline, params, Path(work) / "p.yaml", proj)
        name = args.name or cfg.kubeflow.pipeline_name
        common = dict(
            host=args.host,
            package=package,
            params=params,
            overrides=args.overrides,
            experiment=cfg.kubeflow.experiment,
            service_account=cfg.kubeflow.service_account or None,
            namespace=args.namespace,
        )
        if args.action == "submit":
            done = client.submit(**common, run_name=name)
        else:
            done = client.schedule(**common, cron=args.cron, name=name)
    print(done.id)


def run_stage(stage: str, params: str, inputs: dict[str, Path], outputs: dict[str, Path]) -> dict:
    from privfed.stages import run_tracked, stage_spec

    cfg = load_config(params)
    spec = stage_spec(stage)  # imports this stage only, as DEFAULT_PATHS would not
    unknown = (set(inputs) - set(spec.inputs)) | (set(outputs) - set(spec.outputs))
    if unknown:
        raise ConfigError(f"stage {stage} has no input/output named {sorted(unknown)}")
    ins = {k: Path(v) for k, v in spec.inputs.items()} | inputs
    outs = {k: Path(v) for k, v in spec.outputs.items()} | outputs
    log.info("stage %s (task %s, profile %s)", stage, cfg.base.task, cfg.base.profile)
    return run_tracked(stage, cfg, ins, outs)


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    warnings.filterwarnings("ignore", category=UserWarning, module="opacus")
    args = build_parser().parse_args(argv)
    try:
        if args.command == "pipeline":
            run_pipeline_command(args)
            return 0
        if args.command == "example":
            from privfed.examples import write_breast_cancer_sites

            frame = write_breast_cancer_sites(Path(args.out))
            log.info("wrote %s: %s", args.out, frame["site"].value_counts().sort_index().to_dict())
            return 0
        if args.command == "schema":
            run_schema_command(args)
            return 0
        if args.command == "dashboard":
            return run_dashboard_command(args)
        if args.command == "check-params":
            cfg = load_config(args.params)
            print(cfg.model_dump_json(indent=2))
            return 0
        run_stage(
            args.command, args.params, _pairs(args.inputs, "--in"), _pairs(args.outputs, "--out")
        )
    except Exception as err:  # one readable line for the user; traceback with PRIVFED_DEBUG=1
        log.error("%s failed: %s: %s", args.command, type(err).__name__, err)
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            raise
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
