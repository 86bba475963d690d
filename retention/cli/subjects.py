"""What people ask of the engine: legal ``hold``s, ``erasure`` requests and disposition ``review``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import click

from retention import commands
from retention.cli import params
from retention.cli.options import (
    actor,
    db_option,
    format_option,
    group,
    handled,
    pack_option,
    rules_option,
    zone_options,
)
from retention.cli.output import console, display_zone, err_console, print_rows
from retention.store.config import database_url
from retention.timing import display


@group()
def hold() -> None:
    """Legal holds: nothing they cover moves until released (ledger entries both ways)."""


@hold.command("add")
@db_option
@rules_option(required=False)
@click.option(
    "--subject", "subject_key", type=params.SUBJECT_ID, default=None, help="Hold every record of this subject id."
)
@click.option(
    "--email",
    type=params.EMAIL,
    default=None,
    help="Hold every record of this e-mail address (trimmed, lower-cased), guest rows too.",
)
@click.option("--dataset", type=params.NAME, default=None, help="Hold a whole dataset, or with --key one record.")
@click.option("--key", "record_key", type=params.RECORD_KEY, default=None, help="Hold one record of --dataset.")
@click.option("--reason", type=params.REASON, required=True, help="Why (case number, authority request, ...).")
@click.option("--by", "placed_by", type=params.NAME, default=None, help="Who places it (default: the OS user).")
@handled
def hold_add(
    db: str | None,
    rules: Path | None,
    subject_key: str | None,
    email: str | None,
    dataset: str | None,
    record_key: str | None,
    reason: str,
    placed_by: str | None,
) -> None:
    """Place a hold on a subject (by id, e-mail address or both), a dataset or one record."""
    scope: Literal["subject", "dataset", "record"] = (
        "subject" if subject_key or email else ("record" if record_key else "dataset")
    )
    if scope == "dataset" and not dataset:
        raise click.UsageError("give --subject, --email, --dataset, or --dataset with --key")
    if scope == "record" and not dataset:
        raise click.UsageError("--key needs --dataset")
    hold_id = commands.hold_add(
        database_url(db),
        scope=scope,
        reason=reason,
        placed_by=placed_by or actor(),
        dataset=dataset,
        record_key=record_key,
        subject_key=subject_key,
        email=email,
        rules=rules,
    )
    console.print(f"hold {hold_id} placed ({scope})", highlight=False)


@hold.command("release")
@db_option
@click.argument("hold_id", type=params.ROW_ID)
@click.option("--reason", type=params.REASON, required=True, help="Why the hold ends.")
@click.option("--by", "released_by", type=params.NAME, default=None, help="Who releases it (default: the OS user).")
@handled
def hold_release(db: str | None, hold_id: int, reason: str, released_by: str | None) -> None:
    """Release hold HOLD_ID; the next run moves what it held back if still due."""
    commands.hold_release(database_url(db), hold_id, reason=reason, released_by=released_by or actor())
    console.print(f"hold {hold_id} released", highlight=False)


@hold.command("list")
@db_option
@click.option("--all", "include_released", is_flag=True, help="Include released holds.")
@format_option
@zone_options
@handled
def hold_list(
    db: str | None, include_released: bool, fmt: str, rules: Path | None, pack_id: str | None, utc: bool
) -> None:
    """List holds in place (or all with --all)."""
    rows = commands.hold_list(database_url(db), include_released=include_released)
    print_rows(
        rows,
        _email_column(
            rows,
            fmt,
            HOLD_COLUMNS,
        ),
        fmt,
        zone=display_zone(rules, pack_id, utc),
        drop_order=HOLD_DROP_ORDER,
    )


# What a narrow terminal leaves out first (a line under the table names it).
HOLD_DROP_ORDER = ["released_at", "placed_by", "scope", "placed_at"]
ERASURE_DROP_ORDER = ["note", "extended_on", "outcome", "status", "received_on"]
HOLD_COLUMNS = [
    "id",
    "scope",
    "dataset",
    "record_key",
    "subject_key",
    "email",
    "reason",
    "placed_by",
    "placed_at",
    "released_at",
]


def _email_column(rows: list[dict[str, Any]], fmt: str, columns: list[str]) -> list[str]:
    """A table shows the e-mail column only when some row has an address (CSV and JSON always do)."""
    if fmt == "table" and not any(row.get("email") for row in rows):
        return [c for c in columns if c != "email"]
    return columns


@group()
def erasure() -> None:
    """Erasure requests (GDPR article 17): applied at the next run, with response deadlines."""


@erasure.command("add")
@db_option
@rules_option()
@pack_option
@click.option(
    "--subject", "subject_key", type=params.SUBJECT_ID, default=None, help="The subject's id (e.g. customer id)."
)
@click.option(
    "--email",
    type=params.EMAIL,
    default=None,
    help="The person's e-mail address (trimmed, lower-cased): reaches guest rows known only by it.",
)
@click.option("--received", type=params.DAY, required=True, help="Date the request was received (YYYY-MM-DD).")
@click.option("--note", type=params.REASON, default=None, help="Free text for operators (no personal data, please).")
@handled
def erasure_add(
    db: str | None,
    rules: Path,
    pack_id: str | None,
    subject_key: str | None,
    email: str | None,
    received: dt.date,
    note: str | None,
) -> None:
    """Record an erasure request; the next run moves the person's records.

    Name the person by --subject, --email or both: the request reaches every
    record carrying either (a customer's account records by id, their guest
    orders by e-mail address). The deadline is 1 month after receipt, moved
    to the next working day when it ends on a weekend or a public holiday of
    the pack's country.
    """
    if not subject_key and not email:
        raise click.UsageError("give --subject, --email, or both")
    request_id, deadline, moved = commands.erasure_add(
        database_url(db), rules, pack_id, subject_key=subject_key, received=received, note=note, email=email
    )
    why = f" (moved from {moved})" if moved else ""
    console.print(f"erasure request {request_id}: answer by {deadline.isoformat()}{why}", highlight=False)
    if commands.subject_known(database_url(db), rules, pack_id, subject_key, email) is False:
        err_console.print(
            f"warning: no dataset holds a record of this {'person' if email else 'subject'}; request {request_id} "
            f"will be processed with the outcome 'no records found' (check the {'id or address' if email else 'id'})",
            highlight=False,
        )


@erasure.command("list")
@db_option
@rules_option(required=False)
@pack_option
@click.option("--all", "include_closed", is_flag=True, help="Include closed requests.")
@format_option
@handled
def erasure_list(db: str | None, rules: Path | None, pack_id: str | None, include_closed: bool, fmt: str) -> None:
    """List requests with their deadline; flags those due within 7 days and overdue.

    With --rules (or RETENTION_RULES), the moved column names the weekend days
    and public holidays of the pack's country that pushed each deadline back.
    """
    from retention.timing.clock import utcnow

    today = display.local(utcnow(), display_zone(rules, pack_id, utc=False)).date()
    rows = commands.erasure_list(
        database_url(db), include_closed=include_closed, rules=rules, pack_id=pack_id, today=today
    )
    columns = [
        "id",
        "subject_key",
        "email",
        "received_on",
        "deadline",
        "flag",
        "status",
        "outcome",
        "extended_on",
        "note",
    ]
    columns = _email_column(rows, fmt, columns)
    if fmt != "table":
        after = columns.index("deadline") + 1
        print_rows(rows, columns[:after] + (["moved"] if rules is not None else []) + columns[after:], fmt)
        return
    print_rows(rows, columns, fmt, drop_order=ERASURE_DROP_ORDER)
    for row in rows:
        if row.get("moved"):
            console.print(f"request {row['id']}: deadline moved from {row['moved']}", highlight=False, soft_wrap=False)


@erasure.command("extend")
@db_option
@rules_option()
@pack_option
@click.argument("request_id", type=params.ROW_ID)
@click.option("--reason", type=params.REASON, required=True, help="Why more time is needed (GDPR art. 12(3)).")
@handled
def erasure_extend(db: str | None, rules: Path, pack_id: str | None, request_id: int, reason: str) -> None:
    """Extend a request's deadline once, by 2 months (then moved off weekends and public holidays)."""
    deadline, moved = commands.erasure_extend(database_url(db), rules, pack_id, request_id, reason=reason)
    why = f" (moved from {moved})" if moved else ""
    console.print(f"erasure request {request_id}: answer by {deadline.isoformat()}{why}", highlight=False)


@erasure.command("close")
@db_option
@click.argument("request_id", type=params.ROW_ID)
@handled
def erasure_close(db: str | None, request_id: int) -> None:
    """Close an open request once it has been answered (a closed one is refused, its date kept)."""
    commands.erasure_close(database_url(db), request_id)
    console.print(f"erasure request {request_id} closed", highlight=False)


@group()
def review() -> None:
    """Disposition review: approve or reject purges of datasets declared `review: true`."""


@review.command("list")
@db_option
@click.option("--all", "include_done", is_flag=True, help="Include rejected and completed batches.")
@format_option
@zone_options
@handled
def review_list(
    db: str | None, include_done: bool, fmt: str, rules: Path | None, pack_id: str | None, utc: bool
) -> None:
    """List review batches awaiting a decision (or all with --all)."""
    rows = commands.review_list(database_url(db), include_done=include_done)
    columns = ["id", "dataset", "status", "items", "created_at", "decided_by", "reason"]
    print_rows(rows, columns, fmt, zone=display_zone(rules, pack_id, utc))


@review.command("show")
@db_option
@click.argument("batch_id", type=params.ROW_ID)
@format_option
@zone_options
@handled
def review_show(db: str | None, batch_id: int, fmt: str, rules: Path | None, pack_id: str | None, utc: bool) -> None:
    """Show the records of review batch BATCH_ID and when each became due."""
    batch, items = commands.review_show(database_url(db), batch_id)
    if fmt == "table":
        console.print(
            f"review batch {batch['id']} of {batch['dataset']}: {batch['status']}, {len(items)} records",
            highlight=False,
        )
    print_rows(items, ["record_key", "transition", "due_at"], fmt, zone=display_zone(rules, pack_id, utc))


def _decision(approve: bool) -> Callable[..., None]:
    @db_option
    @click.argument("batch_id", type=params.ROW_ID)
    @click.option("--by", "by", type=params.NAME, default=None, help="Who decides (default: the OS user).")
    @click.option("--reason", type=params.REASON, required=True, help="Why; goes to the ledger.")
    @handled
    def decide(db: str | None, batch_id: int, by: str | None, reason: str) -> None:
        commands.review_decide(database_url(db), batch_id, approve=approve, by=by or actor(), reason=reason)
        console.print(f"review batch {batch_id} {'approved' if approve else 'rejected'}", highlight=False)

    return decide


review.command("approve", help="Approve batch BATCH_ID: the next run purges what is still due and not held.")(
    _decision(True)
)


review.command("reject", help="Reject batch BATCH_ID: its records are kept and not proposed again.")(_decision(False))
