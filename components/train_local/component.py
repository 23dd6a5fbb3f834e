"""``train_local`` as a Kubeflow component: calls ``privfed.stages.train_local.run``."""

from kfp.dsl import Dataset, Input, Metrics, Model, Output

from privfed.kubeflow.settings import component


@component
def train_local(
    base: dict,
    generate_data: dict,
    ingest_data: dict,
    model: dict,
    train: dict,
    train_local: dict,
    profiles: dict,
    partitions: Input[Dataset],
    local: Output[Model],
    metrics: Output[Metrics],
):
    """One model per hospital on its own data only: the baseline federation must beat."""
    from privfed.kubeflow.adapter import log_scalars, run_stage

    sections = {
        "base": base,
        "generate_data": generate_data,
        "ingest_data": ingest_data,
        "model": model,
        "train": train,
        "train_local": train_local,
        "profiles": profiles,
    }
    result = run_stage(
        "train_local",
        sections,
        {"partitions": partitions.path},
        {"models": local.path, "metrics": metrics.path},
    )
    log_scalars(metrics, result)
