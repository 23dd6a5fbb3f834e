"""``validate_data`` as a Kubeflow component: calls ``privfed.stages.validate_data.run``."""

from kfp.dsl import HTML, Artifact, Dataset, Input, Output

from privfed.kubeflow.settings import component


@component
def validate_data(
    base: dict,
    generate_data: dict,
    ingest_data: dict,
    validate_data: dict,
    profiles: dict,
    raw: Input[Dataset],
    validated: Output[Dataset],
    validation: Output[Artifact],
    validation_report: Output[HTML],
):
    """Great Expectations on every table; only data that passed flows on as ``validated``."""
    from privfed.kubeflow.adapter import copy_tree, run_stage, validation_html

    sections = {
        "base": base,
        "generate_data": generate_data,
        "ingest_data": ingest_data,
        "validate_data": validate_data,
        "profiles": profiles,
    }
    run_stage("validate_data", sections, {"raw": raw.path}, {"report": validation.path})
    validation_html(validation.path, validation_report.path)
    copy_tree(raw.path, validated.path)  # reached only when every expectation passed
