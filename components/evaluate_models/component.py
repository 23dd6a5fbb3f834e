"""``evaluate_models`` as a Kubeflow component: calls ``privfed.stages.evaluate_models.run``."""

from kfp.dsl import (
    HTML,
    Artifact,
    ClassificationMetrics,
    Dataset,
    Input,
    Markdown,
    Metrics,
    Model,
    Output,
)

from privfed.kubeflow.settings import component


@component
def evaluate_models(
    base: dict,
    generate_data: dict,
    ingest_data: dict,
    model: dict,
    evaluate_models: dict,
    profiles: dict,
    partitions: Input[Dataset],
    centralized: Input[Model],
    local: Input[Model],
    federated: Input[Model],
    accounting: Input[Artifact],
    evaluation: Output[Artifact],
    evaluation_report: Output[Artifact],
    plots: Output[Artifact],
    comparison: Output[Markdown],
    plots_page: Output[HTML],
    summary: Output[Metrics],
    federated_confusion: Output[ClassificationMetrics],
):
    """Every model on every hospital's test split and on the pooled test set."""
    import shutil
    from pathlib import Path

    from privfed.kubeflow.adapter import log_confusion, log_scalars, plots_html, run_stage

    result = run_stage(
        "evaluate_models",
        {
            "base": base,
            "generate_data": generate_data,
            "ingest_data": ingest_data,
            "model": model,
            "evaluate_models": evaluate_models,
            "profiles": profiles,
        },
        {
            "partitions": partitions.path,
            "centralized": centralized.path,
            "local": local.path,
            "federated": federated.path,
            "privacy": accounting.path,
        },
        {"metrics": evaluation.path, "report": evaluation_report.path, "plots": plots.path},
    )
    shutil.copyfile(Path(evaluation_report.path) / "comparison.md", comparison.path)
    plots_html(plots.path, plots_page.path, title="PrivFed evaluation")
    log_scalars(summary, result["summary"])
    log_confusion(federated_confusion, Path(evaluation_report.path), "federated")
