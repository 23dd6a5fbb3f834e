"""What a stage reads and writes, declared once beside its ``run()``.

Each ``privfed.stages.<stage>`` module has ``SPEC = StageSpec(...)``: the params keys DVC lists
for it, and its named inputs and outputs with their default paths in the DVC layout. Everything
else is derived from or checked against these declarations: the CLI's default paths
(:data:`privfed.stages.DEFAULT_PATHS`), ``dvc.yaml`` and the Kubeflow components' artifacts
(tests/unit/test_config.py, tests/components).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from types import MappingProxyType

__all__ = ["StageSpec"]


def _frozen(kind: str, paths: Mapping[str, str]) -> Mapping[str, str]:
    for name, path in paths.items():
        if not name.isidentifier():
            raise ValueError(f"{kind} name {name!r} is not an identifier (a KFP artifact name)")
        pure = PurePosixPath(path)
        if not path or pure.is_absolute() or ".." in pure.parts or str(pure) != path:
            raise ValueError(
                f"{kind} {name!r}: default path {path!r} must be relative to the project root, "
                "normalized and inside it"
            )
    return MappingProxyType(dict(paths))


@dataclass(frozen=True)
class StageSpec:
    """A stage's contract with its front doors.

    Attributes:
        params: The params keys the stage reads, as ``dvc.yaml`` lists them (whole sections,
            or ``section.key``), so ``dvc repro`` reruns it only when one of them changed.
        inputs: Input name -> default path (relative to the project root) in the DVC layout.
        outputs: Output name -> default path.
        alternative_inputs: An input another front door passes instead of a declared one
            (name -> the declared input it stands for): Kubeflow has no ``dvc.lock``, so
            ``register_model`` versions the validated dataset it receives as ``data``.
    """

    params: tuple[str, ...]
    inputs: Mapping[str, str] = field(default_factory=dict)
    outputs: Mapping[str, str] = field(default_factory=dict)
    alternative_inputs: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        params = tuple(self.params)
        if not params or any(not isinstance(p, str) or not p for p in params):
            raise ValueError(f"params must be non-empty params keys, got {self.params!r}")
        if len(set(params)) != len(params):
            raise ValueError(f"params lists a key twice: {params!r}")
        if not self.outputs:
            raise ValueError("a stage writes at least one output")
        both = set(self.inputs) & set(self.outputs)
        if both:
            raise ValueError(f"{sorted(both)} named both an input and an output")
        for alt, declared in self.alternative_inputs.items():
            if declared not in self.inputs or alt in self.inputs or alt in self.outputs:
                raise ValueError(
                    f"alternative input {alt!r} must stand for a declared input and not be one "
                    f"(got {alt!r} -> {declared!r}; inputs: {sorted(self.inputs)})"
                )
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "inputs", _frozen("input", self.inputs))
        object.__setattr__(self, "outputs", _frozen("output", self.outputs))
        object.__setattr__(
            self, "alternative_inputs", MappingProxyType(dict(self.alternative_inputs))
        )

    @property
    def sections(self) -> tuple[str, ...]:
        """The params sections the stage reads (``generate_data.n_genes`` -> ``generate_data``)."""
        return tuple(dict.fromkeys(p.split(".", 1)[0] for p in self.params))
