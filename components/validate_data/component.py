"""``validate_data`` as a Kubeflow component: calls ``privfed.stages.validate_data.run``."""

from kfp.dsl import HTML, Artifact, Dataset, Input, Output

from privfed.kubeflow.settings import component


@component
def validate_data(
    config: dict,
    raw: Input[Dataset],
    report: Output[Artifact],
    validated: Output[Dataset],
    validation_report: Output[HTML],
):
    """Great Expectations on every table; only data that passed flows on as ``validated``."""
    from privfed.kubeflow.adapter import copy_tree, run_stage, validation_html

    run_stage("validate_data", config, raw=raw, report=report)
    validation_html(report.path, validation_report.path)
    copy_tree(raw.path, validated.path)  # reached only when every expectation passed
