"""Tables of results, as printed by the apps and written to markdown."""

from __future__ import annotations

from typing import Mapping, Sequence


def format_value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return "-" if value is None else str(value)


def format_table(rows: Mapping[str, Mapping[str, object]], columns: Sequence[str], first: str = "method") -> str:
    """A markdown table: one row per key of ``rows``, one column per name in ``columns`` (missing -> ``-``)."""
    header = f"| {first} | " + " | ".join(columns) + " |"
    rule = "|" + "---|" * (len(columns) + 1)
    body = [f"| {name} | " + " | ".join(format_value(row.get(c)) for c in columns) + " |" for name, row in rows.items()]
    return "\n".join([header, rule, *body])
