"""``train_centralized`` as a Kubeflow component: calls ``privfed.stages.train_centralized.run``."""

from kfp.dsl import Dataset, Input, Metrics, Model, Output

from privfed.kubeflow.settings import component


@component
def train_centralized(
    base: dict,
    generate_data: dict,
    ingest_data: dict,
    model: dict,
    train: dict,
    train_centralized: dict,
    profiles: dict,
    partitions: Input[Dataset],
    centralized: Output[Model],
    metrics: Output[Metrics],
):
    """The pooled-data baseline: the upper bound federation is compared against."""
    from privfed.kubeflow.adapter import log_scalars, run_stage

    sections = {
        "base": base,
        "generate_data": generate_data,
        "ingest_data": ingest_data,
        "model": model,
        "train": train,
        "train_centralized": train_centralized,
        "profiles": profiles,
    }
    result = run_stage(
        "train_centralized",
        sections,
        {"partitions": partitions.path},
        {"model": centralized.path, "metrics": metrics.path},
    )
    log_scalars(metrics, result)
