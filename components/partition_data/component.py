"""``partition_data`` as a Kubeflow component: calls ``privfed.stages.partition_data.run``."""

from kfp.dsl import Artifact, Dataset, Input, Metrics, Output

from privfed.kubeflow.settings import component


@component
def partition_data(
    config: dict,
    raw: Input[Dataset],
    validation: Input[Artifact],
    partitions: Output[Dataset],
    stats: Output[Metrics],
):
    """Per-hospital train/val/test splits (origin or Dirichlet label skew)."""
    import json
    from pathlib import Path

    from privfed.kubeflow.adapter import log_scalars, run_stage

    run_stage(
        "partition_data",
        config,
        raw=raw,
        validation=validation,
        partitions=partitions,
        stats=stats,
    )
    log_scalars(stats, json.loads(Path(stats.path).read_text()))
