"""The PrivFed DAG for Kubeflow Pipelines v2, and its privacy-utility / federation-size sweep.

Every node is a component in ``components/<stage>/`` that calls the same ``run()`` DVC calls.
Pipeline parameters are the params.yaml sections (one dict parameter each, defaults from the
file at compile time), so a run started in the Kubeflow UI can change any of them. The first
task, ``check-params``, validates them together and hands every stage the whole config, as
``privfed <stage>`` reads the whole params.yaml. The ``kubeflow`` and ``cluster`` sections are
fixed at compile time: images, resources, GPUs, retries, caching, volumes.

Compiled by ``python -m pipelines compile`` run in the checkout (``privfed pipeline compile``
starts it there): the installed package never imports this folder.
"""

# No `from __future__ import annotations`: KFP reads the pipeline signatures as real types.

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from components.account_privacy.component import account_privacy as account_privacy_op
from components.check_params.component import check_params as check_params_op
from components.evaluate_models.component import evaluate_models as evaluate_models_op
from components.generate_data.component import generate_data as generate_data_op
from components.ingest_data.component import ingest_data as ingest_data_op
from components.partition_data.component import partition_data as partition_data_op
from components.record_pipeline_status.component import (
    record_pipeline_status as record_pipeline_status_op,
)
from components.register_model.component import register_model as register_model_op
from components.sweep.component import collect_sweep, set_params, sweep_point
from components.train_centralized.component import train_centralized as train_centralized_op
from components.train_federated.component import train_federated as train_federated_op
from components.train_local.component import train_local as train_local_op
from components.validate_data.component import validate_data as validate_data_op
from kfp import dsl

from privfed.config import ConfigError, PrivFedConfig
from privfed.kubeflow.parameters import COMPILE_TIME_SECTIONS, PIPELINE_SECTIONS, load_params
from privfed.kubeflow.settings import configure_task

__all__ = ["build_pipeline", "build_sweep_pipeline"]

#: Every params.yaml section: what check-params validates and every stage then receives.
SECTIONS = (*PIPELINE_SECTIONS, *COMPILE_TIME_SECTIONS)


def _check_params(p: dict[str, Any], cfg: PrivFedConfig, *, live: bool = False) -> Any:
    """The task whose output, the whole config, every stage component takes as ``config``.

    ``live``: the stages log into one MLflow run, keyed by this pipeline job, as they run.
    """
    tracking = (
        {"mlflow_tracking_uri": p["mlflow_tracking_uri"], "pipeline_job": PIPELINE_JOB}
        if live
        else {}
    )
    return configure_task(
        check_params_op(**{s: p[s] for s in SECTIONS}, **tracking), "check_params", cfg
    )


#: What identifies a run of the pipeline: the pipeline run's key in MLflow (docs/tracking.md)
PIPELINE_JOB = dsl.PIPELINE_JOB_ID_PLACEHOLDER


def _stage_chain(config: Any, cfg: PrivFedConfig) -> dict[str, Any]:
    """generate → ingest → validate → partition → the three trainings → ε → evaluation."""
    t = _data_and_baselines(config, cfg)
    return t | _federation_chain(config, cfg, t["partition"], t["centralized"], t["local"])


def _data_and_baselines(config: Any, cfg: PrivFedConfig) -> dict[str, Any]:
    """generate → ingest → validate → partition → centralized and local-only training.

    Artifact names are the stages' input and output names (their ``SPEC``); only data that
    passed validation (``validated``) reaches ``partition_data`` as its ``raw`` input.
    """

    def conf(task: Any, stage: str) -> Any:
        return configure_task(task, stage, cfg)

    gen = conf(generate_data_op(config=config), "generate_data")
    ing = conf(ingest_data_op(config=config, generated=gen.outputs["generated"]), "ingest_data")
    val = conf(validate_data_op(config=config, raw=ing.outputs["raw"]), "validate_data")
    part = conf(
        partition_data_op(
            config=config, raw=val.outputs["validated"], validation=val.outputs["report"]
        ),
        "partition_data",
    )
    partitions = part.outputs["partitions"]
    cen = conf(train_centralized_op(config=config, partitions=partitions), "train_centralized")
    loc = conf(train_local_op(config=config, partitions=partitions), "train_local")
    return {"validate": val, "partition": part, "centralized": cen, "local": loc}


def _federation_chain(config: Any, cfg: PrivFedConfig, part: Any, cen: Any, loc: Any) -> dict:
    """train_federated → account_privacy → evaluate_models on given data and baselines.

    The ε sweep reruns only this part, with its own ``config`` (another ``privacy``).
    """

    def conf(task: Any, stage: str) -> Any:
        return configure_task(task, stage, cfg)

    partitions = part.outputs["partitions"]
    fed = conf(train_federated_op(config=config, partitions=partitions), "train_federated")
    acc = conf(
        account_privacy_op(config=config, partitions=partitions, federated=fed.outputs["models"]),
        "account_privacy",
    )
    ev = conf(
        evaluate_models_op(
            config=config,
            partitions=partitions,
            centralized=cen.outputs["model"],
            local=loc.outputs["models"],
            federated=fed.outputs["models"],
            privacy=acc.outputs["privacy"],
        ),
        "evaluate_models",
    )
    return {"federated": fed, "account": acc, "evaluate": ev}


def _pipeline(
    body: Callable[[dict[str, Any]], None],
    parameters: list[tuple[str, type, Any]],
    constants: dict[str, Any],
    *,
    name: str,
    description: str,
) -> Any:
    """A KFP pipeline whose parameters are generated, not typed out once per pipeline.

    KFP reads a pipeline's parameters from ``inspect.signature`` and calls the function with one
    channel per parameter, in order; ``body`` receives them as a dict by name, beside the
    compile-time ``constants`` (sections a run cannot change).
    """
    names = [n for n, _, _ in parameters]

    def pipeline_func(*channels: Any) -> None:
        body({**constants, **dict(zip(names, channels, strict=True))})

    pipeline_func.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=v, annotation=t)
            for n, t, v in parameters
        ]
    )
    pipeline_func.__name__ = name.replace("-", "_")
    return dsl.pipeline(name=name, description=description)(pipeline_func)


def _section_parameters(params_path: str | Path) -> tuple[list, dict[str, Any], PrivFedConfig]:
    """One dict parameter per params.yaml section (defaults from the file), then the MLflow URI;
    and the compile-time sections as constants."""
    d, cfg = load_params(params_path)
    if cfg.train_federated.launcher == "docker":
        raise ConfigError(
            "train_federated.launcher=docker starts containers on this machine's Docker daemon, "
            "which a Kubeflow pod does not have: compile with launcher local or kubernetes"
        )
    parameters = [(s, dict, d[s]) for s in PIPELINE_SECTIONS]
    parameters.append(("mlflow_tracking_uri", str, cfg.kubeflow.mlflow_tracking_uri))
    return parameters, {s: d[s] for s in COMPILE_TIME_SECTIONS}, cfg


def build_pipeline(params_path: str | Path = "params.yaml") -> Any:
    """The main DAG, with parameter defaults and task settings from ``params_path``."""
    parameters, constants, cfg = _section_parameters(params_path)

    def body(p: dict[str, Any]) -> None:
        exit_task = configure_task(
            record_pipeline_status_op(
                mlflow_tracking_uri=p["mlflow_tracking_uri"],
                pipeline_job=PIPELINE_JOB,
                **{s: p[s] for s in SECTIONS},
            ),
            "record_pipeline_status",
            cfg,
        )
        with dsl.ExitHandler(exit_task, name="privfed-run"):
            config = _check_params(p, cfg, live=True).output
            t = _stage_chain(config, cfg)
            configure_task(register_model_task(config, p, t), "register_model", cfg)

    return _pipeline(
        body,
        parameters,
        constants,
        name=cfg.kubeflow.pipeline_name,
        description="PrivFed: federated, differentially private training across hospitals "
        "(generate → validate → partition → baselines → Flower → ε → evaluate → MLflow).",
    )


def register_model_task(config: Any, p: dict[str, Any], t: dict[str, Any]) -> Any:
    """The registry step; the validated dataset versions the data (DVC hashes dvc.lock)."""
    ev = t["evaluate"]
    return register_model_op(
        config=config,
        mlflow_tracking_uri=p["mlflow_tracking_uri"],
        data=t["validate"].outputs["validated"],
        validation=t["validate"].outputs["report"],
        centralized=t["centralized"].outputs["model"],
        federated=t["federated"].outputs["models"],
        privacy=t["account"].outputs["privacy"],
        evaluation=ev.outputs["metrics"],
        report=ev.outputs["report"],
        plots=ev.outputs["plots"],
    )


def build_sweep_pipeline(params_path: str | Path = "params.yaml") -> Any:
    """Privacy-utility (ε) and federation-size sweeps, run in parallel, collected into one table.

    The ε loop reuses one dataset and the baselines and retrains only the federation; the size
    loop runs the whole chain per federation size (the data differ with the number of hospitals).
    """
    parameters, constants, cfg = _section_parameters(params_path)
    kf = cfg.kubeflow
    if cfg.train_federated.launcher == "kubernetes":
        raise ConfigError(
            "the sweep runs federations of several sizes, two at a time: it needs "
            "train_federated.launcher=local (the cluster has one SuperNode per enrolled hospital)"
        )
    parameters += [
        ("epsilons", list, list(kf.sweep_epsilons)),
        ("hospital_counts", list, list(kf.sweep_hospitals)),
    ]

    def body(p: dict[str, Any]) -> None:
        config = _check_params(p, cfg).output
        base_chain = _data_and_baselines(config, cfg)
        with dsl.ParallelFor(p["epsilons"], parallelism=2) as eps:
            priv = set_params(
                config=config,
                name="privacy",
                fixed={"enabled": True},
                unset_keys=["noise_multiplier"],
                loop_keys=["target_epsilon", "epsilon_budget"],
                loop_value=eps,
            ).set_display_name("set epsilon")
            fed_chain = _federation_chain(
                priv.output,
                cfg,
                base_chain["partition"],
                base_chain["centralized"],
                base_chain["local"],
            )
            eps_point = sweep_point(
                variable="epsilon",
                value=eps,
                evaluation=fed_chain["evaluate"].outputs["metrics"],
                accounting=fed_chain["account"].outputs["privacy"],
            )
        with dsl.ParallelFor(p["hospital_counts"], parallelism=1) as n:
            sized = set_params(
                config=config,
                name="base",
                fixed={},
                unset_keys=[],
                loop_keys=["num_hospitals"],
                loop_value=n,
            ).set_display_name("set hospitals")
            chain = _stage_chain(sized.output, cfg)
            size_point = sweep_point(
                variable="hospitals",
                value=n,
                evaluation=chain["evaluate"].outputs["metrics"],
                accounting=chain["account"].outputs["privacy"],
            )
        collect_sweep(
            epsilon_points=dsl.Collected(eps_point.outputs["point"]),
            size_points=dsl.Collected(size_point.outputs["point"]),
        )

    return _pipeline(
        body,
        parameters,
        constants,
        name=f"{kf.pipeline_name}-sweep",
        description="PrivFed privacy-utility (ε) and federation-size sweeps.",
    )
