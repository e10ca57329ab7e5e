"""Exclusions over time for the console: the statistics of each of the last months (the audit's
statistics count over one period), as charts of exclusions started per month and active at each
month's end, by jurisdiction. No I/O."""

from datetime import UTC, datetime
from typing import Any

MONTHS = 6


def months(until: datetime, count: int = MONTHS) -> list[tuple[str, datetime, datetime]]:
    """The last ``count`` calendar months up to ``until``, oldest first: (label, start, end); the last ends at ``until``."""
    buckets = []
    year, month, end = until.year, until.month, until
    for _ in range(count):
        start = datetime(year, month, 1, tzinfo=UTC)
        buckets.append((f"{year:04d}-{month:02d}", start, end))
        end = start
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return buckets[::-1]


def trend_charts(periods: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Started per month (stacked bars) and active at each month's end (lines), one series per jurisdiction."""
    labels = [label for label, _ in periods]

    def by_jurisdiction(figures: dict[str, Any], section: str) -> dict[str, int]:
        return figures.get(section, {}).get("by_jurisdiction", {})

    jurisdictions = sorted({j for _, f in periods for s in ("exclusions_started", "exclusions_active") for j in by_jurisdiction(f, s)})

    def series(section: str) -> list[dict[str, Any]]:
        return [{"label": j, "data": [by_jurisdiction(f, section).get(j, 0) for _, f in periods]} for j in jurisdictions]

    return [
        {
            "id": "started-per-month",
            "title": "Exclusions started per month, by jurisdiction",
            "type": "bar",
            "stacked": True,
            "axis": "Month",
            "labels": labels,
            "series": series("exclusions_started"),
        },
        {
            "id": "active-per-month",
            "title": "Exclusions active at each month's end, by jurisdiction",
            "type": "line",
            "axis": "Month",
            "labels": labels,
            "series": series("exclusions_active"),
        },
    ]
