"""Figures the chaos suite reports (issue 6): one row per fault, calls tried and survived.

Tests call :func:`record`; ``tests/chaos/conftest.py`` prints the table at the end of the
run, so ``just test`` shows it without ``-s``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Figure", "FIGURES", "record", "table"]


@dataclass(frozen=True, slots=True)
class Figure:
    row: str
    tried: int
    survived: int
    numbers: dict[str, Any] = field(default_factory=dict)


FIGURES: list[Figure] = []


def record(row: str, tried: int, survived: int, **numbers: Any) -> Figure:
    fig = Figure(row, tried, survived, numbers)
    FIGURES.append(fig)
    print(f"chaos figure: {row}: {survived}/{tried} survived " + " ".join(f"{k}={_fmt(v)}" for k, v in numbers.items()))
    return fig


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def table(figures: list[Figure] | None = None) -> str:
    rows = figures if figures is not None else FIGURES
    if not rows:
        return ""
    width = max(len(f.row) for f in rows)
    lines = [f"{'fault'.ljust(width)}  tried  survived  figures"]
    for f in rows:
        extra = " ".join(f"{k}={_fmt(v)}" for k, v in f.numbers.items())
        lines.append(f"{f.row.ljust(width)}  {f.tried:5d}  {f.survived:8d}  {extra}")
    return "\n".join(lines)
