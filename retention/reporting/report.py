"""The HTML report: tonight's plan and a week-by-week forecast, for non-engineers.

The forecast is computed with the same evaluator as ``plan``: the count for
week *i* is what a plan at the end of that week lists minus what a plan at
its start lists, so the chart shows exactly what each week's runs will do if
the data does not change. The page is self-contained (inline CSS, SVG and a
few lines of script), so it can be mailed or archived as one file.
"""

from __future__ import annotations

import bisect
import datetime as dt
import html
import itertools
import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from retention.engine import execute
from retention.engine.plan import Batch, PlanSummary
from retention.policy import LoadedPack
from retention.reporting import forecast_sql
from retention.timing import display
from retention.timing.clock import Period

PALETTE = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
]


@dataclass(frozen=True)
class Forecast:
    """Transitions becoming due each week, per dataset and transition."""

    starts: list[dt.datetime]
    series: dict[str, list[int]]  # "dataset active->purged" -> count per week

    def as_dict(self) -> dict[str, Any]:
        return {"weeks": [s.isoformat() for s in self.starts], "series": self.series}


def week_starts(as_of: dt.datetime, horizon: Period) -> list[dt.datetime]:
    """Week boundaries from ``as_of`` until the horizon (inclusive of the last partial week)."""
    end_day = horizon.add_to(as_of.date())
    end = as_of + dt.timedelta(days=(end_day - as_of.date()).days)
    starts = [as_of]
    while starts[-1] < end:
        starts.append(starts[-1] + dt.timedelta(weeks=1))
    return starts


def forecast(engine: sa.Engine, loaded: LoadedPack, as_of: dt.datetime, horizon: Period) -> Forecast:
    """Planners at the horizon's end, each transition counted in the week its due instant falls in.

    A plan as of an instant takes every step due at or before it, so the
    difference between the plans at two week boundaries is exactly the
    steps whose due instant falls between them (:func:`forecast_by_plans`,
    one plan per week, is kept as the reference a test compares this with).
    The active pass of a dataset its clocks alone move, nearly every
    forecast step of a large table, is counted per week by one SQL
    aggregate (:mod:`~retention.reporting.forecast_sql`); the other passes
    (erasure, later states, leaders with followers, review) walk the end
    plan's batches and bucket each step by its due instant. Steps due at or
    before ``as_of`` are tonight's run, not the forecast.
    """
    boundaries = week_starts(as_of, horizon)
    weeks = len(boundaries) - 1
    end = boundaries[-1]
    counts: dict[str, list[int]] = {}

    def bucket(name: str, due: dt.datetime) -> None:
        series = counts.setdefault(name, [0] * weeks)  # named even when all due tonight, as every plan names it
        if due <= as_of or due > end:
            return
        week = bisect.bisect_left(boundaries, due) - 1  # boundaries[week] < due <= boundaries[week + 1]
        series[week] += 1

    def on_batch(batch: Batch) -> None:
        for follower in batch.followers:
            on_batch(follower)
        for move in batch.moves:
            for step in move.steps:
                bucket(f"{batch.dataset} {step.from_state}->{step.to_state}", step.due_at)
        for *_, due in batch.review:
            bucket(f"{batch.dataset} {REVIEWED}", due)

    with engine.connect() as conn:
        planners, _ = execute.planners_at(conn, loaded, end)
        for planner in planners.values():
            for origin in planner.origins():
                if origin == "active" and forecast_sql.can_count_by_week(planner):
                    for name, weekly in forecast_sql.active_by_week(conn, planner, boundaries).items():
                        series = counts.setdefault(name, [0] * weeks)
                        counts[name] = [a + b for a, b in zip(series, weekly, strict=True)]
                    continue
                for batch in planner.batches(conn, origin):
                    on_batch(batch)
        conn.rollback()
    return Forecast(boundaries[:-1], {name: counts[name] for name in sorted(counts)})


def forecast_by_plans(engine: sa.Engine, loaded: LoadedPack, as_of: dt.datetime, horizon: Period) -> Forecast:
    """Plan at every week boundary and take differences (the reference; one plan per week)."""
    boundaries = week_starts(as_of, horizon)
    plans = [_counts(execute.plan(engine, loaded, when)) for when in boundaries]
    names = sorted({f"{d} {t}" for p in plans for d, per in p.items() for t in per})
    series: dict[str, list[int]] = {name: [] for name in names}
    for before, after in itertools.pairwise(plans):
        for name in names:
            dataset, transition = name.split(" ", 1)
            series[name].append(after.get(dataset, {}).get(transition, 0) - before.get(dataset, {}).get(transition, 0))
    return Forecast(boundaries[:-1], series)


REVIEWED = "purge awaiting review"


def _counts(summary: PlanSummary) -> dict[str, dict[str, int]]:
    """A plan's counts per dataset and transition, a ``review: true`` dataset's held-back purges included.

    Those purges are not transitions of the plan (a run files them for
    review instead), but they are what that week's runs will put in front
    of an approver, so the forecast counts them under their own name.
    """
    counts = {dataset: dict(per) for dataset, per in summary.transitions.items()}
    for dataset, waiting in summary.awaiting_review.items():
        if waiting:
            counts.setdefault(dataset, {})[REVIEWED] = waiting
    return counts


def chart_svg(data: Forecast, zone: str = display.UTC) -> str:
    """A stacked bar chart, one bar per week, one colour per dataset and transition (weeks dated in ``zone``)."""
    weeks = len(data.starts)
    totals = [sum(s[i] for s in data.series.values()) for i in range(weeks)]
    top = max([*totals, 1])
    width, height, left, bottom = 900, 320, 50, 40
    bar = (width - left - 10) / max(weeks, 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 -20 {width} {height + bottom + 20}" '
        f'role="img" aria-label="Upcoming transitions per week">'
    ]
    for tick in range(5):
        value = top * tick / 4
        y = height - height * tick / 4
        parts.append(f'<line x1="{left}" x2="{width}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{value:.0f}</text>')
    for i in range(weeks):
        y = height
        x = left + i * bar
        for index, (name, counts) in enumerate(data.series.items()):
            if not counts[i]:
                continue
            h = height * counts[i] / top
            y -= h
            parts.append(
                f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{max(bar - 2, 1):.1f}" height="{h:.1f}" '
                f'fill="{PALETTE[index % len(PALETTE)]}"><title>{html.escape(name)}: {counts[i]} in the '
                f"week of {display.day(data.starts[i], zone)}</title></rect>"
            )
        if i % max(1, weeks // 8) == 0:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{height + 16}" text-anchor="middle" font-size="11">'
                f"{display.local(data.starts[i], zone):%d %b}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def render(
    summary: PlanSummary, data: Forecast, horizon: Period, basis: dict[str, str], zone: str = display.UTC
) -> str:
    """The whole page, its dates in ``zone`` (the display zone, as the CLI and the console show them)."""
    legend = "".join(
        f'<li><span class="swatch" style="background:{PALETTE[i % len(PALETTE)]}"></span>{html.escape(name)}</li>'
        for i, name in enumerate(data.series)
    )
    rows = []
    for row in summary.rows():
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{html.escape(_text(row.get(c), zone))}</td>"
                for c in (
                    "dataset",
                    "transition",
                    "count",
                    "change",
                    "due_from",
                    "due_to",
                    "anomalies",
                )
            )
            + f"<td>{html.escape(basis.get(row['dataset'], ''))}</td></tr>"
        )
    payload = json.dumps(data.as_dict(), sort_keys=True).replace("</", "<\\/")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Retention report — {html.escape(summary.pack_id)} — {display.day(summary.as_of, zone)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; max-width: 1000px; }}
table {{ border-collapse: collapse; width: 100%; font-size: 14px; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }}
th {{ background: #f4f4f4; }} .swatch {{ display: inline-block; width: 12px; height: 12px; margin-right: 6px; }}
ul.legend {{ list-style: none; padding: 0; columns: 2; font-size: 13px; }} .muted {{ color: #666; }}
</style></head><body>
<h1>Retention report</h1>
<p class="muted">Pack <b>{html.escape(summary.pack_id)}</b> (digest {summary.pack_digest[:12]}),
as of {html.escape(display.when(summary.as_of, zone))}; dates in {html.escape(zone)}.
Generated by <code>retention report</code>.</p>
<h2>Due now: what the next run will do</h2>
<p>{summary.total()} transitions. Records with a missing, zero or future date are never moved;
they are counted under anomalies.</p>
<table><thead><tr><th>Dataset</th><th>Transition</th><th>Records</th><th>Change since last plan</th>
<th>Due from</th><th>Due to</th><th>Anomalies</th><th>Legal basis</th></tr></thead>
<tbody>{"".join(rows)}</tbody></table>
<h2>Coming up: transitions per week over {html.escape(_horizon_text(horizon))}</h2>
<p>Each bar counts the records that become due during that week, if the data stays as it is now.</p>
<figure>{chart_svg(data, zone)}</figure>
<ul class="legend">{legend}</ul>
<p id="forecast-total" class="muted"></p>
<script type="application/json" id="forecast-data">{payload}</script>
<script>
(function () {{
  var data = JSON.parse(document.getElementById("forecast-data").textContent);
  var total = 0;
  Object.keys(data.series).forEach(function (name) {{
    data.series[name].forEach(function (n) {{ total += n; }});
  }});
  document.getElementById("forecast-total").textContent =
    total + " transitions forecast over " + data.weeks.length + " weeks.";
}})();
</script>
</body></html>
"""


def _horizon_text(horizon: Period) -> str:
    parts = [(horizon.years, "year"), (horizon.months, "month"), (horizon.days, "day")]
    words = [f"{n} {unit}{'s' if n != 1 else ''}" for n, unit in parts if n]
    return f"the next {' '.join(words) or '0 days'} ({horizon})"


def _text(value: Any, zone: str) -> str:
    """A cell: an instant as its calendar date in ``zone``, the date the CLI's plan shows."""
    return display.day(value, zone)
