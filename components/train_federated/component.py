"""``train_federated`` as a Kubeflow component: calls ``privfed.stages.train_federated.run``."""

from kfp.dsl import Dataset, Input, Metrics, Model, Output

from privfed.kubeflow.settings import component


@component
def train_federated(
    base: dict,
    generate_data: dict,
    ingest_data: dict,
    model: dict,
    train: dict,
    train_federated: dict,
    privacy: dict,
    cluster: dict,
    profiles: dict,
    partitions: Input[Dataset],
    federated: Output[Model],
    metrics: Output[Metrics],
):
    """Flower federation without and with DP-SGD (local processes or the cluster's SuperLink)."""
    from privfed.kubeflow.adapter import log_scalars, run_stage

    sections = {
        "base": base,
        "generate_data": generate_data,
        "ingest_data": ingest_data,
        "model": model,
        "train": train,
        "train_federated": train_federated,
        "privacy": privacy,
        "cluster": cluster,
        "profiles": profiles,
    }
    result = run_stage(
        "train_federated",
        sections,
        {"partitions": partitions.path},
        {"models": federated.path, "metrics": metrics.path},
    )
    log_scalars(metrics, {name: run["final_val"] for name, run in result["runs"].items()})
