"""The console's disposition-review pages (batches, their context, decisions) and the forecast.

Apart from pages.py, which keeps the route table, so that each module stays one subject.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from retention.errors import ConfigError, RetentionError
from retention.ledger import mac as ledger_mac
from retention.ledger import pseudonyms
from retention.ledger import query as ledger_query
from retention.subjects import review
from retention.timing import display
from retention.timing.clock import AsOf, utcnow
from retention.web import accounts
from retention.web.console import Console, Viewer
from retention.web.page_tools import _loaded_pack, _pseudonym_secret, _see_other, _text

# --------------------------------------------------------------------------
# Disposition review
# --------------------------------------------------------------------------


def reviews_page(console: Console, request: Request, viewer: Viewer, form: FormData | None) -> Response:
    with console.reader.connect() as conn:
        batches = review.list_batches(conn, include_done=True)
    batches.reverse()
    return console.render(request, "reviews.html", batches=batches)


def _review_context(console: Console, batch_id: int) -> dict[str, Any] | None:
    secret = _pseudonym_secret(console)
    with console.reader.connect() as conn:
        try:
            batch, items = review.show_batch(conn, batch_id)
        except ConfigError:
            return None
        decisions = ledger_query.review_decisions(conn, batch["dataset"], batch_id)
        context = _review_records(console, conn, batch["dataset"], [str(i["record_key"]) for i in items], secret)
    transitions: dict[str, int] = {}
    for item in items:
        transitions[item["transition"]] = transitions.get(item["transition"], 0) + 1
    shown = []
    for item in items[:200]:
        record = str(item.pop("record_key"))
        item["pseudonym"] = ledger_query.pseudonym_of_record(secret, batch["dataset"], record) if secret else None
        shown.append(item)
    dues = [i["due_at"] for i in items]
    return {
        "batch": batch,
        "items": shown,
        "total": len(items),
        "transitions": transitions,
        "due_from": min(dues) if dues else None,
        "due_to": max(dues) if dues else None,
        "decisions": decisions,
        "keyed": secret is not None,
        "context": context,
    }


def _review_records(console: Console, conn: sa.Connection, dataset: str, keys: list[str], secret: bytes | None) -> Any:
    """Dates, amounts and counts per year of the batch's records (:mod:`retention.reporting.review_context`)."""
    from retention.reporting.review_context import review_context

    loaded = _loaded_pack(console)
    if loaded is None or dataset not in loaded.pack.datasets or not keys:
        return None
    return review_context(conn, loaded, dataset, keys, utcnow(), secret)


def review_page(console: Console, request: Request, viewer: Viewer, form: FormData | None) -> Response:
    context = _review_context(console, int(request.path_params["batch_id"]))
    if context is None:
        return console.render(request, "missing.html", status_code=404, what="review batch")
    return console.render(request, "review.html", error=None, **context)


def review_decision(console: Console, request: Request, viewer: Viewer, form: FormData | None) -> Response:
    batch_id = int(request.path_params["batch_id"])
    decision, reason = _text(form, "decision"), _text(form, "reason")
    context = _review_context(console, batch_id)
    if context is None:
        return console.render(request, "missing.html", status_code=404, what="review batch")
    if decision not in ("approve", "reject") or not reason:
        return console.render(request, "review.html", status_code=400, error="a decision and a reason", **context)
    approve = decision == "approve"
    try:
        # The decision's entry carries the engine's MAC: under a key the ledger's head does not verify under it
        # would be an approval no key verifies, and the check would accept that key from then on.
        secret = pseudonyms.pseudonym_secret()
        ledger_mac.refuse_other_key(console.writer, secret)
        with console.writer.begin() as conn:
            review.decide(conn, batch_id, approve=approve, by=viewer.name, reason=reason, secret=secret)
            accounts.log_access(
                conn, viewer.name, "review_approved" if approve else "review_rejected", f"batch {batch_id}"
            )
    except RetentionError as exc:
        return console.render(request, "review.html", status_code=409, error=str(exc), **context)
    return _see_other(f"/reviews/{batch_id}")


# --------------------------------------------------------------------------
# Forecast and verification
# --------------------------------------------------------------------------


def forecast_page(console: Console, request: Request, viewer: Viewer, form: FormData | None) -> Response:
    loaded = _loaded_pack(console)
    if loaded is None:
        return console.render(request, "forecast.html", forecast=None, chart="", legend=[], horizon="")
    from retention.reporting import report
    from retention.timing.clock import Period

    horizon = Period.parse(console.settings.forecast_horizon)
    # As of the start of today in the pack's zone, kept per pack digest, day and ledger head: the same
    # forecast all day (tonight's run starts a new one), and again after a run moves records.
    today = display.local(utcnow(), loaded.pack.timezone).date()
    as_of = AsOf(day=today).resolve(loaded.pack.timezone)
    with console.reader.connect() as conn:
        head_seq = ledger_query.head(conn)[0]

    def compute() -> Any:
        return report.forecast(console.reader, loaded, as_of, horizon)

    data = console.cached(f"forecast:{loaded.digest}:{today}:{head_seq}", 24 * 3600, compute)
    legend = [
        {"name": name, "colour": report.PALETTE[i % len(report.PALETTE)], "total": sum(counts)}
        for i, (name, counts) in enumerate(data.series.items())
    ]
    return console.render(
        request,
        "forecast.html",
        forecast=data,
        chart=report.chart_svg(data, console.settings.display_timezone),
        legend=legend,
        horizon=console.settings.forecast_horizon,
        pack=loaded,
        as_of=today,  # a date of the pack's zone, as the CLI's --as-of DATE reads it
    )
