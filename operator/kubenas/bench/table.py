"""Benchmark figures as a plain-text table: a label column, then one right-aligned column per
run, so ratios read side by side."""

from __future__ import annotations

from collections.abc import Sequence


def side_by_side(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )
