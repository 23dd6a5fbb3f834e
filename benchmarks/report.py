"""Refresh the result tables in BENCHMARKS.md and README.md from ``benchmarks/results/<name>.md``.

The documents hold the prose (what each figure means, targets, bottlenecks); each table sits
between ``<!-- results:<name> -->`` and ``<!-- /results:<name> -->`` markers and is replaced by
the latest run's Markdown, so neither shows a table typed by hand (README's comparison tables
come from ``python -m benchmarks comparison``). Headings inside a result's Markdown (a
standalone page, so it may start at ``##``) are nested under the heading that holds the block.

    python -m benchmarks report
"""

from __future__ import annotations

import argparse
import re

from benchmarks.common import RESULTS, ROOT

__all__ = ["nest_headings", "refresh"]

_BLOCK = re.compile(
    r"(<!-- results:(?P<name>[\w-]+) -->\n)(.*?)(<!-- /results:(?P=name) -->)", re.S
)
_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_HEADING = re.compile(r"^(#+) ", re.M)


def _parent_level(before: str) -> int:
    """Level of the last heading in ``before``, outside result blocks and code fences (0: none)."""
    levels = _HEADING.findall(_FENCE.sub("", _BLOCK.sub("", before)))
    return len(levels[-1]) if levels else 0


def nest_headings(table: str, parent: int) -> str:
    """``table`` with its headings shifted so the shallowest sits one level below ``parent``."""
    levels = [len(h) for h in _HEADING.findall(table)]  # result Markdown has no code fences
    shift = parent + 1 - min(levels) if levels else 0
    if shift <= 0:
        return table
    return _HEADING.sub(lambda m: "#" * (len(m.group(1)) + shift) + " ", table)


def refresh(text: str, tables: dict[str, str]) -> str:
    """``text`` with every marked block whose table exists replaced by that table."""

    def swap(match: re.Match[str]) -> str:
        table = tables.get(match.group("name"))
        if table is None:
            return match.group(0)
        table = nest_headings(table, _parent_level(text[: match.start()]))
        return f"{match.group(1)}{table.rstrip()}\n{match.group(4)}"

    return _BLOCK.sub(swap, text)


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(prog="python -m benchmarks report").parse_args(argv)
    tables = {p.stem: p.read_text() for p in RESULTS.glob("*.md")}
    for doc in (ROOT / "BENCHMARKS.md", ROOT / "README.md"):
        doc.write_text(refresh(doc.read_text(), tables))
        print(f"refreshed {doc} from {len(tables)} result tables")


if __name__ == "__main__":
    main()
