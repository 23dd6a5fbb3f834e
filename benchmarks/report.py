"""Refresh the result tables in BENCHMARKS.md and README.md from ``benchmarks/results/<name>.md``.

The documents hold the prose (what each figure means, targets, bottlenecks); each table sits
between ``<!-- results:<name> -->`` and ``<!-- /results:<name> -->`` markers and is replaced by
the latest run's Markdown, so neither shows a table typed by hand (README's comparison tables
come from ``python -m benchmarks comparison``).

    python -m benchmarks report
"""

from __future__ import annotations

import argparse
import re

from benchmarks.common import RESULTS, ROOT

__all__ = ["refresh"]

_BLOCK = re.compile(
    r"(<!-- results:(?P<name>[\w-]+) -->\n)(.*?)(<!-- /results:(?P=name) -->)", re.S
)


def refresh(text: str, tables: dict[str, str]) -> str:
    """``text`` with every marked block whose table exists replaced by that table."""

    def swap(match: re.Match[str]) -> str:
        table = tables.get(match.group("name"))
        if table is None:
            return match.group(0)
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
