"""``ingest_data`` as a Kubeflow component: calls ``privfed.stages.ingest_data.run``."""

from kfp.dsl import Dataset, Input, Output

from privfed.kubeflow.settings import component


@component
def ingest_data(
    base: dict,
    ingest_data: dict,
    profiles: dict,
    generated: Input[Dataset],
    raw: Output[Dataset],
):
    """The synthetic data, or the consortium's own (``ingest_data.path`` on the ingest volume)."""
    from privfed.kubeflow.adapter import run_stage

    run_stage(
        "ingest_data",
        {"base": base, "ingest_data": ingest_data, "profiles": profiles},
        inputs={"generated": generated.path},
        outputs={"raw": raw.path},
    )
