"""StageSpec: the declaration beside each stage's run() rejects what no front door could use."""

from __future__ import annotations

import pytest

from privfed.stages.spec import StageSpec


def test_spec_is_frozen_and_names_its_sections() -> None:
    # Prepare
    spec = StageSpec(
        params=("base", "generate_data.n_genes", "generate_data.notes", "profiles"),
        inputs={"raw": "data/raw"},
        outputs={"report": "reports/validation"},
    )
    # Assert
    assert spec.sections == ("base", "generate_data", "profiles")
    with pytest.raises(TypeError):
        spec.inputs["raw"] = "elsewhere"  # type: ignore[index]
    with pytest.raises(AttributeError):
        spec.params = ()  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"params": ()}, "params"),
        ({"params": ("base", "base")}, "twice"),
        ({"outputs": {}}, "at least one output"),
        ({"inputs": {"x": "/abs/path"}}, "'/abs/path'"),
        ({"inputs": {"x": "../outside"}}, "'../outside'"),
        ({"outputs": {"my-out": "o"}}, "'my-out'"),
        ({"inputs": {"o": "a"}}, "both an input and an output"),
        ({"alternative_inputs": {"data": "lock"}}, "'data' -> 'lock'"),
    ],
)
def test_bad_declarations_are_named(kwargs: dict, needle: str) -> None:
    args = {"params": ("base",), "outputs": {"o": "out"}} | kwargs
    with pytest.raises(ValueError, match=needle.replace("(", r"\(")):
        StageSpec(**args)
