"""Markdown tables, as every benchmark prints them: a header line, a ``|---|`` rule, one line per row."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def markdown_row(cells: Sequence[object]) -> str:
    """One table line: ``| a | b | c |`` (each cell as ``str`` gives it)."""
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def markdown_table(header: Sequence[object], rows: Iterable[Sequence[object]]) -> str:
    """The header line, the rule under it and a line per row, joined by newlines (no trailing newline)."""
    lines = [markdown_row(header), "|" + "---|" * len(header)]
    lines += [markdown_row(row) for row in rows]
    return "\n".join(lines)
