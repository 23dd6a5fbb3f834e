"""``train_local`` as a Kubeflow component: calls ``privfed.stages.train_local.run``."""

from kfp.dsl import Dataset, Input, Metrics, Model, Output

from privfed.kubeflow.settings import component


@component
def train_local(
    config: dict, partitions: Input[Dataset], models: Output[Model], metrics: Output[Metrics]
):
    """One model per hospital on its own data only: the baseline federation must beat."""
    from privfed.kubeflow.adapter import log_scalars, run_stage

    result = run_stage("train_local", config, partitions=partitions, models=models, metrics=metrics)
    log_scalars(metrics, result)
