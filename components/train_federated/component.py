"""``train_federated`` as a Kubeflow component: calls ``privfed.stages.train_federated.run``."""

from kfp.dsl import Dataset, Input, Metrics, Model, Output

from privfed.kubeflow.settings import component


@component
def train_federated(
    config: dict, partitions: Input[Dataset], models: Output[Model], metrics: Output[Metrics]
):
    """Flower federation without and with DP-SGD (local processes or the cluster's SuperLink)."""
    from privfed.kubeflow.adapter import log_scalars, run_stage

    result = run_stage(
        "train_federated", config, partitions=partitions, models=models, metrics=metrics
    )
    log_scalars(metrics, {name: run["final_val"] for name, run in result["runs"].items()})
