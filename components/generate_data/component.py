"""``generate_data`` as a Kubeflow component: calls ``privfed.stages.generate_data.run``."""

from kfp.dsl import Dataset, Output

from privfed.kubeflow.settings import component


@component
def generate_data(config: dict, generated: Output[Dataset]):
    """Synthetic hospital data from the seeded generator (a marker only for a user's data)."""
    from privfed.kubeflow.adapter import run_stage

    run_stage("generate_data", config, generated=generated)
