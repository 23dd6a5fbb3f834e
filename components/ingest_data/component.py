"""``ingest_data`` as a Kubeflow component: calls ``privfed.stages.ingest_data.run``."""

from kfp.dsl import Dataset, Input, Output

from privfed.kubeflow.settings import component


@component
def ingest_data(config: dict, generated: Input[Dataset], raw: Output[Dataset]):
    """The synthetic data, or the consortium's own (``ingest_data.path`` on the ingest volume)."""
    from privfed.kubeflow.adapter import run_stage

    run_stage("ingest_data", config, generated=generated, raw=raw)
