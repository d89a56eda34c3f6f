"""The overview's charts: per region, what static/charts.js hands to uPlot.

Each chart is the times, then its series (label, colour, axis, values), with a
summary in words for those who do not see the drawing.
"""

from __future__ import annotations

from typing import Any

from ppos.portal.series import Series
from ppos.portal.upstreams import READINESS_SHOWN

READINESS_COLOURS = ("#137333", "#b06000", "#0b57d0", "#7627bb", "#a50e0e")


def _line(label: str, stroke: str, values: list[float], axis: str = "left") -> dict[str, Any]:
    return {"label": label, "stroke": stroke, "axis": axis, "values": values}


def _minutes(times: list[float]) -> str:
    return f"{(times[-1] - times[0]) / 60:.0f} min" if times else "0 min"


def sync_charts(region: str, series: Series) -> list[dict[str, Any]]:
    """Records and quarantined (their own axes), and the sync lag."""
    times, (records, quarantined, lag) = series.columns(region)
    span = _minutes(times)
    growth = {
        "kind": "growth",
        "region": region,
        "title": f"Records synced and quarantined in {region}",
        "t": times,
        "series": [
            _line("records", "#0b57d0", records),
            _line("quarantined", "#a50e0e", quarantined, "right"),
        ],
        "summary": f"{records[-1]:.0f} records (+{records[-1] - records[0]:.0f}), "
        f"{quarantined[-1]:.0f} quarantined (+{quarantined[-1] - quarantined[0]:.0f}) "
        f"in the last {span}",
    }
    lagging = {
        "kind": "lag",
        "region": region,
        "title": f"Sync lag of {region} in seconds",
        "t": times,
        "series": [_line("lag (s)", "#b06000", lag)],
        "summary": f"lag now {lag[-1]:.0f} s, at most {max(lag):.0f} s in the last {span}",
    }
    return [growth, lagging]


def readiness_chart(region: str, series: Series) -> dict[str, Any]:
    """Nodes of each readiness over time."""
    times, columns = series.columns(region)
    now = ", ".join(
        f"{count[-1]:.0f} {name}" for name, count in zip(READINESS_SHOWN, columns, strict=True)
    )
    return {
        "kind": "readiness",
        "region": region,
        "title": f"Nodes of {region} by readiness",
        "t": times,
        "series": [
            _line(name, colour, values)
            for name, colour, values in zip(
                READINESS_SHOWN, READINESS_COLOURS, columns, strict=True
            )
        ],
        "summary": f"now {now}; over the last {_minutes(times)}",
    }


def region_charts(sync: Series, readiness: Series) -> list[dict[str, Any]]:
    """Per region (sorted), its sync charts then its readiness chart."""
    drawn: list[dict[str, Any]] = []
    for region in sorted(set(sync.points) | set(readiness.points)):
        if sync.points.get(region):
            drawn.extend(sync_charts(region, sync))
        if readiness.points.get(region):
            drawn.append(readiness_chart(region, readiness))
    return drawn
