"""``register_model`` as a Kubeflow component: calls ``privfed.stages.register_model.run``."""

from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output

from privfed.kubeflow.settings import component


@component
def register_model(
    base: dict,
    generate_data: dict,
    ingest_data: dict,
    validate_data: dict,
    partition_data: dict,
    model: dict,
    train: dict,
    train_centralized: dict,
    train_local: dict,
    train_federated: dict,
    privacy: dict,
    account_privacy: dict,
    evaluate_models: dict,
    register_model: dict,
    cluster: dict,
    profiles: dict,
    mlflow_tracking_uri: str,
    validated: Input[Dataset],
    validation: Input[Artifact],
    centralized: Input[Model],
    federated: Input[Model],
    accounting: Input[Artifact],
    evaluation: Input[Artifact],
    evaluation_report: Input[Artifact],
    plots: Input[Artifact],
    registration: Output[Artifact],
    model_card: Output[Markdown],
):
    """MLflow run + registered version; alias ``champion`` only through the promotion gate.

    Takes every params section: the MLflow run logs the whole configuration of the pipeline.
    """
    import os
    import shutil
    from pathlib import Path

    from privfed.kubeflow.adapter import run_stage

    if mlflow_tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_tracking_uri
    sections = {
        "base": base,
        "generate_data": generate_data,
        "ingest_data": ingest_data,
        "validate_data": validate_data,
        "partition_data": partition_data,
        "model": model,
        "train": train,
        "train_centralized": train_centralized,
        "train_local": train_local,
        "train_federated": train_federated,
        "privacy": privacy,
        "account_privacy": account_privacy,
        "evaluate_models": evaluate_models,
        "register_model": register_model,
        "cluster": cluster,
        "profiles": profiles,
    }
    run_stage(
        "register_model",
        sections,
        {
            "validation": validation.path,
            "centralized": centralized.path,
            "federated": federated.path,
            "privacy": accounting.path,
            "evaluation": evaluation.path,
            "report": evaluation_report.path,
            "plots": plots.path,
            "data": validated.path,
        },
        {"registration": registration.path},
    )
    shutil.copyfile(Path(registration.path) / "model_card.md", model_card.path)
