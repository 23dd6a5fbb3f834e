"""Sweep helpers: set a params value per loop iteration, keep one result row, collect the table."""

from typing import NamedTuple

from kfp.dsl import HTML, Artifact, Input, Markdown, Output

from privfed.kubeflow.settings import component


@component
def set_params(
    section: dict,
    profiles: dict,
    name: str,
    fixed: dict,
    unset_keys: list,
    loop_keys: list,
    loop_value: float,
) -> NamedTuple("Overridden", section=dict, profiles=dict):
    """``section`` with ``fixed`` and ``loop_keys = loop_value`` set, ``unset_keys`` back to their
    defaults, and no profile overriding any of them."""
    from collections import namedtuple

    from privfed.kubeflow.adapter import override_section

    new_section, new_profiles = override_section(
        section,
        profiles,
        name,
        {**fixed, **{key: loop_value for key in loop_keys}},
        unset=unset_keys,
    )
    return namedtuple("Overridden", ["section", "profiles"])(new_section, new_profiles)


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
