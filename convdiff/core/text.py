"""Numbers and messages as the terminal, Markdown and JUnit outputs show them.

Why one module: percentages, short floats and one-line messages were formatted in four places
that had begun to differ; a report should read the same whichever command printed it.
"""

from __future__ import annotations


def pct(value: float | None) -> str:
    """``12.5%``; ``n/a`` when there is no value."""
    return "n/a" if value is None else f"{value:.1f}%"


def num(value: float | None) -> str:
    """Three significant digits (``0.000544``, ``1.2e+03``); ``n/a`` when there is no value."""
    return "n/a" if value is None else f"{value:.3g}"


def one_line(text: str, limit: int = 200) -> str:
    """The first non-empty line, whitespace collapsed, cut at ``limit`` characters."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    first = " ".join(first.split())
    return first if len(first) <= limit else first[: limit - 3] + "..."


__all__ = ["num", "one_line", "pct"]
