"""Exit handler of the PrivFed pipeline: a run that did not succeed is recorded in MLflow."""

from kfp import dsl

from privfed.kubeflow.settings import component


@component
def record_pipeline_status(
    status: dsl.PipelineTaskFinalStatus,
    base: dict,
    register_model: dict,
    profiles: dict,
    mlflow_tracking_uri: str,
) -> str:
    """Runs after the DAG whatever happened; returns the pipeline's final state."""
    from privfed.kubeflow.adapter import record_pipeline_status as record

    record(
        state=status.state,
        job=status.pipeline_job_resource_name,
        error=status.error_message or "",
        sections={"base": base, "register_model": register_model, "profiles": profiles},
        tracking_uri=mlflow_tracking_uri,
    )
    return status.state
