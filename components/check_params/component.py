"""First task of every PrivFed pipeline: every params section validated together, once."""

from privfed.kubeflow.settings import component


@component
def check_params(
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
    mlflow_tracking_uri: str = "",
    pipeline_job: str = "",
) -> dict:
    """The whole config (every section; pipeline parameters and compile-time constants) that
    every stage component takes as ``config``, as ``privfed <stage>`` reads all of params.yaml.

    Fails, naming the key, when the sections contradict each other or hold a bad value. With a
    ``pipeline_job`` (the main pipeline passes its job id) every stage logs into one MLflow run
    at ``mlflow_tracking_uri`` as it runs (docs/tracking.md).
    """
    sections = dict(locals())  # first statement: the parameters, one per section, then two
    from privfed.kubeflow.adapter import check_params as check

    del sections["mlflow_tracking_uri"], sections["pipeline_job"]
    return check(sections, tracking_uri=mlflow_tracking_uri, pipeline_job=pipeline_job)
