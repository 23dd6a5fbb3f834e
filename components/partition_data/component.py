"""``partition_data`` as a Kubeflow component: calls ``privfed.stages.partition_data.run``."""

from kfp.dsl import Artifact, Dataset, Input, Metrics, Output

from privfed.kubeflow.settings import component


@component
def partition_data(
    base: dict,
    partition_data: dict,
    profiles: dict,
    validated: Input[Dataset],
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
        {"base": base, "partition_data": partition_data, "profiles": profiles},
        {"raw": validated.path, "validation": validation.path},
        {"partitions": partitions.path, "stats": stats.path},
    )
    log_scalars(stats, json.loads(Path(stats.path).read_text()))
