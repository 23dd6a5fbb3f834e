"""``account_privacy`` as a Kubeflow component: calls ``privfed.stages.account_privacy.run``."""

from kfp.dsl import Artifact, Input, Metrics, Model, Output

from privfed.kubeflow.settings import component


@component
def account_privacy(
    config: dict,
    federated: Input[Model],
    privacy: Output[Artifact],
    privacy_metrics: Output[Metrics],
):
    """ε per hospital over the whole run (RDP and PRV); fails when over budget."""
    from privfed.kubeflow.adapter import log_scalars, run_stage

    result = run_stage("account_privacy", config, federated=federated, privacy=privacy)
    log_scalars(privacy_metrics, result)
