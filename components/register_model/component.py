"""``register_model`` as a Kubeflow component: calls ``privfed.stages.register_model.run``."""

from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output

from privfed.kubeflow.settings import component


@component
def register_model(
    config: dict,
    mlflow_tracking_uri: str,
    data: Input[Dataset],
    validation: Input[Artifact],
    centralized: Input[Model],
    federated: Input[Model],
    privacy: Input[Artifact],
    evaluation: Input[Artifact],
    report: Input[Artifact],
    plots: Input[Artifact],
    registration: Output[Artifact],
    model_card: Output[Markdown],
):
    """MLflow run + registered version; alias ``champion`` only through the promotion gate.

    ``data`` (the validated dataset) stands in for DVC's ``dvc.lock``: its hash versions the data.
    """
    import os
    import shutil
    from pathlib import Path

    from privfed.kubeflow.adapter import run_stage

    if mlflow_tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_tracking_uri
    run_stage(
        "register_model",
        config,
        data=data,
        validation=validation,
        centralized=centralized,
        federated=federated,
        privacy=privacy,
        evaluation=evaluation,
        report=report,
        plots=plots,
        registration=registration,
    )
    shutil.copyfile(Path(registration.path) / "model_card.md", model_card.path)
