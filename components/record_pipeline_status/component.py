"""Exit handler of the PrivFed pipeline: a run that did not succeed is recorded in MLflow."""

from kfp import dsl

from privfed.kubeflow.settings import component


@component
def record_pipeline_status(
    status: dsl.PipelineTaskFinalStatus,
    mlflow_tracking_uri: str,
    pipeline_job: str,
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
    profiles: dict,
    cluster: dict,
    kubeflow: dict,
) -> str:
    """Runs after the DAG whatever happened; returns the pipeline's final state.

    Takes every section itself (an exit handler can read no task's output): a run that failed
    at ``check-params`` is recorded too.
    """
    sections = dict(locals())  # first statement: the parameters; the sections follow status
    from privfed.kubeflow.adapter import record_pipeline_status as record

    del sections["status"], sections["mlflow_tracking_uri"], sections["pipeline_job"]
    record(
        state=status.state,
        job=status.pipeline_job_resource_name,
        error=status.error_message or "",
        sections=sections,
        tracking_uri=mlflow_tracking_uri,
        pipeline_job=pipeline_job,
    )
    return status.state
