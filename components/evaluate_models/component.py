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
    config: dict,
    partitions: Input[Dataset],
    centralized: Input[Model],
    local: Input[Model],
    federated: Input[Model],
    privacy: Input[Artifact],
    metrics: Output[Artifact],
    report: Output[Artifact],
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
        config,
        partitions=partitions,
        centralized=centralized,
        local=local,
        federated=federated,
        privacy=privacy,
        metrics=metrics,
        report=report,
        plots=plots,
    )
    shutil.copyfile(Path(report.path) / "comparison.md", comparison.path)
    plots_html(plots.path, plots_page.path, title="PrivFed evaluation")
    log_scalars(summary, result["summary"])
    log_confusion(federated_confusion, Path(report.path), "federated")
