"""``generate_data`` as a Kubeflow component: calls ``privfed.stages.generate_data.run``."""

from kfp.dsl import Dataset, Output

from privfed.kubeflow.settings import component


@component
def generate_data(base: dict, generate_data: dict, profiles: dict, generated: Output[Dataset]):
    """Synthetic hospital data from the seeded generator (a marker only for a user's data)."""
    from privfed.kubeflow.adapter import run_stage

    run_stage(
        "generate_data",
        {"base": base, "generate_data": generate_data, "profiles": profiles},
        inputs={},
        outputs={"generated": generated.path},
    )
