"""The small HTML renderers that :mod:`edgescale.report.html` and :mod:`edgescale.report.sections`
share: escaping, a formatted cell, a table. Every piece of text goes through ``html.escape``."""

from __future__ import annotations

from collections.abc import Iterable
from html import escape
from typing import Any


def _e(value: Any) -> str:
    return escape(str(value))


def _fmt(value: Any, fmt: str = "{}") -> str:
    """``value`` formatted and escaped; "–" where it is missing."""
    return "–" if value is None else escape(fmt.format(value))


def _td(value: Any, fmt: str = "{}") -> str:
    return f"<td>{_fmt(value, fmt)}</td>"


def _table(headers: list[str], rows: Iterable[str]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    return f'<div class="scroll"><table><tr>{head}</tr>{"".join(rows)}</table></div>'
