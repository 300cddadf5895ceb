"""Markdown tables, the form in which featviz prints its measurements."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def table(header: Sequence[str], rows: Iterable[Sequence[object]],
          left: int = 1) -> str:
    """A markdown table: ``header`` cells, one line per row; the first ``left`` columns are
    left-aligned (names), the others right-aligned (numbers). Cells are used as given, so
    format numbers before passing them.

    Args:
        header: The column titles.
        rows: The rows, each a sequence of cells (turned to text with ``str``).
        left: How many leading columns are left-aligned (default 1).
    """
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i < left else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
