"""Reading params and schema YAML strictly: a key written twice is an error, not "last wins".

PyYAML keeps the last of two equal keys without a word, so a params.yaml edited in two places
silently ran with whichever came later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = ["DuplicateKeyError", "read_yaml"]


class DuplicateKeyError(yaml.YAMLError):
    """A mapping holds the same key twice."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with a repeated key, naming both lines."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in first:
                raise DuplicateKeyError(
                    f"key {key!r} appears twice in one mapping (lines {first[key]} and {line}); "
                    "keep one"
                )
            first[key] = line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> Any:
    """The document in ``path``, with duplicate keys refused.

    Raises:
        yaml.YAMLError: not valid YAML, or a repeated key (:class:`DuplicateKeyError`).
    """
    return yaml.load(Path(path).read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 (safe loader)
