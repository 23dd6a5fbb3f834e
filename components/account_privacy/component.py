"""``account_privacy`` as a Kubeflow component: calls ``privfed.stages.account_privacy.run``."""

from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from privfed.kubeflow.settings import component


@component
def account_privacy(
    config: dict,
    partitions: Input[Dataset],
    federated: Input[Model],
    privacy: Output[Artifact],
    privacy_metrics: Output[Metrics],
):
    """ε per hospital over the whole run (RDP and PRV), and per patient; fails over budget."""
    from privfed.kubeflow.adapter import log_scalars, run_stage

    result = run_stage(
        "account_privacy", config, partitions=partitions, federated=federated, privacy=privacy
    )
    log_scalars(privacy_metrics, result)
