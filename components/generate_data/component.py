"""``generate_data`` as a Kubeflow component: calls ``privfed.stages.generate_data.run``."""

from kfp.dsl import Dataset, Output

from privfed.kubeflow.settings import component


@component
def generate_data(base: dict, generate_data: dict, profiles: dict, raw: Output[Dataset]):
    """Synthetic hospital data (one folder per hospital) from the seeded generator."""
    from privfed.kubeflow.adapter import run_stage

    run_stage(
        "generate_data",
        {"base": base, "generate_data": generate_data, "profiles": profiles},
        inputs={},
        outputs={"raw": raw.path},
    )
