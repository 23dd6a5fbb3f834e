"""Sweep helpers: set a params value per loop iteration, keep one result row, collect the table."""

from kfp.dsl import HTML, Artifact, Input, Markdown, Output

from privfed.kubeflow.settings import component


@component
def set_params(
    config: dict,
    name: str,
    fixed: dict,
    unset_keys: list,
    loop_keys: list,
    loop_value: float,
) -> dict:
    """The whole config with ``fixed`` and ``loop_keys = loop_value`` set in section ``name``,
    ``unset_keys`` back to their defaults, and no profile overriding any of them."""
    from privfed.kubeflow.adapter import override_config

    return override_config(
        config, name, {**fixed, **{key: loop_value for key in loop_keys}}, unset=unset_keys
    )


@component
def sweep_point(
    variable: str,
    value: float,
    evaluation: Input[Artifact],
    accounting: Input[Artifact],
    point: Output[Artifact],
):
    """One row of the sweep table: the swept value and the evaluation summary."""
    from privfed.kubeflow.adapter import sweep_row

    sweep_row(variable, value, evaluation.path, accounting.path, point.path)


@component
def collect_sweep(
    epsilon_points: Input[list[Artifact]],
    size_points: Input[list[Artifact]],
    results: Output[Artifact],
    table: Output[Markdown],
    plot: Output[HTML],
):
    """The privacy-utility and federation-size tables and plots from every sweep point."""
    from privfed.kubeflow.adapter import collect_sweep_points

    paths = [p.path for p in [*epsilon_points, *size_points]]
    collect_sweep_points(paths, results.path, table.path, plot.path)
