"""``train_centralized`` as a Kubeflow component: calls ``privfed.stages.train_centralized.run``."""

from kfp.dsl import Dataset, Input, Metrics, Model, Output

from privfed.kubeflow.settings import component


@component
def train_centralized(
    config: dict, partitions: Input[Dataset], model: Output[Model], metrics: Output[Metrics]
):
    """The pooled-data baseline: the upper bound federation is compared against."""
    from privfed.kubeflow.adapter import log_scalars, run_stage

    result = run_stage(
        "train_centralized", config, partitions=partitions, model=model, metrics=metrics
    )
    log_scalars(metrics, result)
