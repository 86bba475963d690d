"""The ``retention`` command line: parse, call the library, print, exit.

This is the only module that exits. It catches :class:`RetentionError`
(and maps it to the documented exit code); anything else is a bug and
shows its traceback.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from retention import commands, logs, params
from retention.clock import AsOf, Period
from retention.config import database_url, safe_url
from retention.errors import RetentionError, describe_database_error, is_database_error

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_PARTIAL = 3
EXIT_GUARD = 4
EXIT_LOCKED = 5
EXIT_LEDGER = 6

# Off a terminal (cron, pipes, tests) tables keep their full width instead of
# being squeezed to 80 columns.
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 160)


def db_option(func: F) -> F:
    return click.option(
        "--db",
        "db",
        envvar="RETENTION_DATABASE_URL",
        default=None,
        help="Database URL (default: RETENTION_DATABASE_URL, else sqlite:///retention.sqlite).",
    )(func)


def rules_option(required: bool = True) -> Callable[[F], F]:
    def decorate(func: F) -> F:
        return click.option(
            "--rules",
            "rules",
            envvar="RETENTION_RULES",
            required=required,
            type=click.Path(path_type=Path),
            help="Rule pack file or folder (or RETENTION_RULES).",
        )(func)

    return decorate


def format_option(func: F) -> F:
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(["table", "json", "csv"]),
        default="table",
        show_default=True,
        help="Output for people (table) or machines (json, csv).",
    )(func)


def handled(func: F) -> F:
    """Turn RetentionError into its message and exit code, a database error into one safe line.

    A database error (a lost connection, a full disk, a lock wait that timed
    out) ends the command with exit 1 and one line from
    :func:`describe_database_error`: the driver's message, its DETAIL and the
    statement's parameters can hold personal data, so they are shown only
    with ``--traceback``. Anything else is a bug and keeps its traceback.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        try:
            return func(*args, **kwargs)
        except RetentionError as exc:
            if ctx.find_root().params.get("traceback"):
                raise
            err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
            ctx.exit(exc.exit_code)
        except Exception as exc:
            if not is_database_error(exc) or ctx.find_root().params.get("traceback"):
                raise
            err_console.print(
                f"[red]error:[/red] {escape(describe_database_error(exc))} (the full error with --traceback)",
                highlight=False,
            )
            ctx.exit(EXIT_FAILURE)

    return wrapper  # type: ignore[return-value]


@click.group(cls=params.OneLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--traceback", is_flag=True, help="Show Python tracebacks for bug reports.")
@click.option(
    "--log-format",
    type=click.Choice(["auto", "json", "console"]),
    default="auto",
    show_default=True,
    help="Log format on stderr; auto means JSON unless stderr is a terminal.",
)
@click.option(
    "--log-level",
    type=params.LOG_LEVEL,
    default="info",
    show_default=True,
    help=f"Minimum log level: {', '.join(params.LOG_LEVELS)}.",
)
@click.version_option(package_name="retention")
def main(traceback: bool, log_format: str, log_level: str) -> None:
    """Retention enforcement: keep the promises of your privacy policy in your database.

    Exit codes: 0 success, 1 failure, 2 configuration error (rule pack, settings,
    schema), 3 partial failure (some datasets failed), 4 mass-deletion guard tripped,
    5 another run holds the lock, 6 ledger verification failed.
    """
    logs.configure(json=None if log_format == "auto" else log_format == "json", level=log_level)


@main.command()
@db_option
@click.option(
    "--dir",
    "folder",
    type=click.Path(path_type=Path),
    default=Path("retention-keys"),
    show_default=True,
    help="Where to create the key files (mode 0600; keep this folder out of version control).",
)
@handled
def init(db: str | None, folder: Path) -> None:
    """Create the pseudonym key and checkpoint signing key, and the engine's tables."""
    created = commands.init(database_url(db), folder)
    for path in created:
        console.print(f"created {path} (mode 0600)", highlight=False)
    console.print(
        f"export RETENTION_PSEUDONYM_KEY_FILE={folder / 'pseudonym.key'}\n"
        f"export RETENTION_SIGNING_KEY_FILE={folder / 'signing.pem'}\n"
        f"database {safe_url(database_url(db))} is ready; next: retention check --rules rules/ --db ...",
        highlight=False,
    )


@main.group()
def db() -> None:
    """The engine's own tables (Alembic migrations)."""


@db.command("upgrade")
@db_option
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@handled
def db_upgrade(db: str | None, revision: str) -> None:
    """Create or upgrade the engine's tables in the database."""
    url = database_url(db)
    before, after = commands.db_upgrade(url, revision)
    console.print(f"database {safe_url(url)}: {before or 'empty'} -> {after}", highlight=False)


@db.command("current")
@db_option
@handled
def db_current(db: str | None) -> None:
    """Show the revision of the engine's tables and the newest one shipped."""
    current, head = commands.db_current(database_url(db))
    console.print(f"current: {current or 'none (run retention db upgrade)'}; shipped head: {head}")


@db.command("downgrade")
@db_option
@click.argument("revision")
@handled
def db_downgrade(db: str | None, revision: str) -> None:
    """Downgrade the engine's tables to REVISION ('base' removes them, ledger included)."""
    commands.db_downgrade(database_url(db), revision)
    console.print(f"downgraded to {revision}")


@main.command()
@rules_option()
@click.option("--db", "db", default=None, help="Also check the pack against this database.")
@format_option
@handled
def check(rules: Path, db: str | None, fmt: str) -> None:
    """Validate rule packs; with --db, also against the live schema.

    Errors (exit 2) name the file and line, or the table and column. Warnings
    (missing indexes on clock columns, tables without primary key) do not fail.
    """
    report = commands.check(rules, db)
    if fmt == "json":
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        for loaded in report.packs:
            console.print(
                f"ok: {loaded.source}: pack {loaded.id} {loaded.pack.version} "
                f"(effective {loaded.pack.effective_from}, {len(loaded.pack.datasets)} datasets, "
                f"digest {loaded.digest[:12]})",
                highlight=False,
            )
        for finding in report.findings:
            target = err_console if finding.level == "error" else console
            target.print(str(finding), highlight=False)
    if report.errors:
        sys.exit(EXIT_CONFIG)


as_of_option = click.option(
    "--as-of",
    "as_of",
    type=params.AS_OF,
    default=None,
    help="Evaluate at this instant: YYYY-MM-DD (00:00 in the pack's timezone) or ISO 8601, "
    f"from {params.EARLIEST_DAY} to {params.LATEST_DAY}. Default: now.",
)
lock_timeout_option = click.option(
    "--lock-timeout",
    "lock_timeout",
    type=click.IntRange(1, 86_400),
    envvar="RETENTION_LOCK_TIMEOUT",
    default=None,
    help="Seconds a statement waits for a lock another session holds before that dataset fails "
    "(or RETENTION_LOCK_TIMEOUT; default 300).",
)
pack_option = click.option("--pack", "pack_id", default=None, help="Pack id, when --rules holds several packs.")


def _plan_rows(summary: Any) -> list[dict[str, Any]]:
    return list(summary.rows())


PLAN_COLUMNS = [
    "dataset",
    "transition",
    "count",
    "change",
    "due_from",
    "due_to",
    "clock_from",
    "clock_to",
    "sample_keys",
    "anomalies",
    "held_back",
]


@main.command()
@rules_option()
@db_option
@as_of_option
@pack_option
@format_option
@click.option("--no-record", is_flag=True, help="Do not keep this plan's counts for the next comparison.")
@lock_timeout_option
@handled
def plan(
    rules: Path,
    db: str | None,
    as_of: AsOf | None,
    pack_id: str | None,
    fmt: str,
    no_record: bool,
    lock_timeout: int | None,
) -> None:
    """Dry run: list every transition `run` would perform, writing nothing.

    For the same database state and --as-of, `run` performs exactly these
    transitions. Anomalies (NULL, zero, invalid or future clocks) are counted,
    never moved.
    """
    summary = commands.plan(rules, database_url(db), as_of, pack_id, record=not no_record, lock_timeout=lock_timeout)
    if fmt == "json":
        click.echo(json.dumps(summary.as_dict(), indent=2))
        return
    if fmt == "table":
        since = f"; change since the plan of {summary.previous['as_of']:%Y-%m-%d %H:%M} UTC" if summary.previous else ""
        console.print(
            f"plan for pack {summary.pack_id} ({summary.pack_digest[:12]}) as of "
            f"{summary.as_of.isoformat()}: {summary.total()} transitions{since}",
            highlight=False,
        )
    _print_rows(_plan_rows(summary), PLAN_COLUMNS + (["previous"] if fmt == "csv" else []), fmt)
    if fmt == "table":
        for dataset, dropped in summary.partitions.items():
            if dropped:
                rows = sum(d["rows"] for d in dropped)
                console.print(
                    f"{dataset}: {len(dropped)} partitions ({rows} of the records above) will be dropped whole: "
                    + ", ".join(d["partition"] for d in dropped),
                    highlight=False,
                )
        for hold in summary.held_back:
            console.print(
                f"hold {hold['hold_id']} ({hold['scope']}: {hold['reason']}) holds back {hold['count']} "
                f"due records of {hold['dataset']}",
                highlight=False,
            )


@main.command()
@rules_option()
@db_option
@as_of_option
@pack_option
@click.option(
    "--archive-db",
    "archive_url",
    envvar="RETENTION_ARCHIVE_DATABASE_URL",
    default=None,
    help="Separate database for the intermediate archive (default: the engine's tables).",
)
@click.option(
    "--allow-mass",
    "allow_mass",
    multiple=True,
    metavar="DATASET",
    help="Override the mass-deletion guard of DATASET for this run ('*' for all); recorded in the ledger.",
)
@click.option(
    "--metrics-file",
    type=params.METRICS_FILE,
    envvar="RETENTION_METRICS_FILE",
    default=None,
    help="Write Prometheus metrics here (a .prom file in node_exporter's textfile folder).",
)
@format_option
@lock_timeout_option
@handled
def run(
    rules: Path,
    db: str | None,
    as_of: AsOf | None,
    pack_id: str | None,
    archive_url: str | None,
    allow_mass: tuple[str, ...],
    metrics_file: Path | None,
    fmt: str,
    lock_timeout: int | None,
) -> None:
    """Apply every transition due, one transaction per batch, with ledger entries.

    Needs the pseudonym key (RETENTION_PSEUDONYM_KEY or RETENTION_PSEUDONYM_KEY_FILE).
    Exit 0 on success, 3 when some datasets failed (the others were applied),
    4 when a mass-deletion guard refused a dataset, 5 when another run holds the lock.
    SIGTERM stops the run after its current batch (exit 1; the next run continues).
    """
    import signal
    import threading

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    result = commands.run(
        rules,
        database_url(db),
        as_of,
        pack_id,
        archive_url,
        allow_mass=allow_mass,
        metrics_file=metrics_file,
        should_stop=stop.is_set,
        lock_timeout=lock_timeout,
    )
    rows = [{"dataset": d, "transition": t, "count": c} for d, per in result.counts.items() for t, c in per.items()]
    rows += [{"dataset": d, "transition": "FAILED", "count": 0, "error": e} for d, e in result.failures.items()]
    rows += [{"dataset": d, "transition": "GUARDED", "count": 0, "error": e} for d, e in result.guarded.items()]
    if fmt == "table":
        console.print(f"run {result.run_id}: {result.status}, {result.batches} batches", highlight=False)
    _print_rows(rows, ["dataset", "transition", "count", "error"], fmt)
    for message in result.guarded.values():
        err_console.print(message, highlight=False)
    if result.status == "interrupted":
        err_console.print("run interrupted after its current batch; the next run continues", highlight=False)
        sys.exit(EXIT_FAILURE)
    if result.failures:
        sys.exit(EXIT_PARTIAL)
    if result.guarded:
        sys.exit(EXIT_GUARD)


@main.command()
@rules_option()
@db_option
@click.option("--dataset", required=True, type=params.NAME, help="Dataset name from the pack.")
@click.option("--key", required=True, type=params.RECORD_KEY, help="The record's key (primary key value).")
@as_of_option
@pack_option
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@handled
def explain(
    rules: Path,
    db: str | None,
    dataset: str,
    key: str,
    as_of: AsOf | None,
    pack_id: str | None,
    fmt: str,
) -> None:
    """Explain one record: its clocks, due dates, state, holds and next transition."""
    result = commands.explain(rules, database_url(db), dataset, key, as_of, pack_id)
    if fmt == "json":
        click.echo(json.dumps(result.as_dict(), indent=2))
        return
    console.print(f"{dataset} {key} as of {result.as_of.isoformat()}", highlight=False)
    if not result.exists:
        console.print("  no such record in the source table, and no engine state for it")
        return
    since = f" since {result.since.isoformat()}" if result.since else ""
    console.print(f"  state: {result.state}{since}", highlight=False)
    for clock in result.clocks:
        console.print(
            f"  clock {clock['clock']} = {clock['value']} (local date {clock['local_date']}), "
            f"kept {clock['period']}{' from the financial year end' if clock['anchor'] != 'event' else ''}"
            f"{'; anomaly: ' + clock['anomaly'] if clock['anomaly'] else ''} — {clock['basis']}",
            highlight=False,
        )
    if result.anomaly:
        console.print(f"  skipped: {result.anomaly} clock; never moved by a run", highlight=False)
    for state, when in result.due.items():
        console.print(f"  due for {state}: {when.isoformat()}", highlight=False)
    for hold in result.holds:
        console.print(f"  held by hold {hold['id']} ({hold['scope']}): {hold['reason']}", highlight=False)
    for step in result.due_now:
        held = " (held: will not move)" if step["held"] else ""
        console.print(
            f"  due now: {step['transition']} (due {step['due_at'].isoformat()}){held} — {step['basis']}",
            highlight=False,
        )
    if result.next_transition:
        nxt = result.next_transition
        console.print(
            f"  next: {nxt['transition']} on {nxt['due_at'].isoformat()} ({nxt['action']}) — {nxt['basis']}",
            highlight=False,
        )
    elif not result.due_now:
        console.print("  no further transition")


def _actor() -> str:
    import getpass

    return getpass.getuser()


@main.group()
def hold() -> None:
    """Legal holds: nothing they cover moves until released (ledger entries both ways)."""


@hold.command("add")
@db_option
@rules_option(required=False)
@click.option(
    "--subject", "subject_key", type=params.SUBJECT_ID, default=None, help="Hold every record of this subject id."
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
    dataset: str | None,
    record_key: str | None,
    reason: str,
    placed_by: str | None,
) -> None:
    """Place a hold on a subject, a dataset or one record."""
    scope: Literal["subject", "dataset", "record"] = (
        "subject" if subject_key else ("record" if record_key else "dataset")
    )
    if scope == "dataset" and not dataset:
        raise click.UsageError("give --subject, --dataset, or --dataset with --key")
    if scope == "record" and not dataset:
        raise click.UsageError("--key needs --dataset")
    hold_id = commands.hold_add(
        database_url(db),
        scope=scope,
        reason=reason,
        placed_by=placed_by or _actor(),
        dataset=dataset,
        record_key=record_key,
        subject_key=subject_key,
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
    commands.hold_release(database_url(db), hold_id, reason=reason, released_by=released_by or _actor())
    console.print(f"hold {hold_id} released", highlight=False)


@hold.command("list")
@db_option
@click.option("--all", "include_released", is_flag=True, help="Include released holds.")
@format_option
@handled
def hold_list(db: str | None, include_released: bool, fmt: str) -> None:
    """List holds in place (or all with --all)."""
    rows = commands.hold_list(database_url(db), include_released=include_released)
    _print_rows(
        rows,
        [
            "id",
            "scope",
            "dataset",
            "record_key",
            "subject_key",
            "reason",
            "placed_by",
            "placed_at",
            "released_at",
        ],
        fmt,
    )


@main.group()
def erasure() -> None:
    """Erasure requests (GDPR art. 17): applied at the next run, with response deadlines."""


@erasure.command("add")
@db_option
@rules_option()
@pack_option
@click.option(
    "--subject", "subject_key", type=params.SUBJECT_ID, required=True, help="The subject's id (e.g. customer id)."
)
@click.option("--received", type=params.DAY, required=True, help="Date the request was received (YYYY-MM-DD).")
@click.option("--note", type=params.REASON, default=None, help="Free text for operators (no personal data, please).")
@handled
def erasure_add(
    db: str | None,
    rules: Path,
    pack_id: str | None,
    subject_key: str,
    received: dt.date,
    note: str | None,
) -> None:
    """Record an erasure request; the next run moves the subject's records."""
    request_id, deadline = commands.erasure_add(
        database_url(db), rules, pack_id, subject_key=subject_key, received=received, note=note
    )
    console.print(f"erasure request {request_id}: answer by {deadline.isoformat()}", highlight=False)


@erasure.command("list")
@db_option
@click.option("--all", "include_closed", is_flag=True, help="Include closed requests.")
@format_option
@handled
def erasure_list(db: str | None, include_closed: bool, fmt: str) -> None:
    """List requests with their deadline; flags those due within 7 days and overdue."""
    rows = commands.erasure_list(database_url(db), include_closed=include_closed)
    _print_rows(
        rows,
        ["id", "subject_key", "received_on", "deadline", "flag", "status", "extended_on", "note"],
        fmt,
    )


@erasure.command("extend")
@db_option
@rules_option()
@pack_option
@click.argument("request_id", type=params.ROW_ID)
@click.option("--reason", type=params.REASON, required=True, help="Why more time is needed (GDPR art. 12(3)).")
@handled
def erasure_extend(db: str | None, rules: Path, pack_id: str | None, request_id: int, reason: str) -> None:
    """Extend a request's deadline once, by 2 months."""
    deadline = commands.erasure_extend(database_url(db), rules, pack_id, request_id, reason=reason)
    console.print(f"erasure request {request_id}: answer by {deadline.isoformat()}", highlight=False)


@erasure.command("close")
@db_option
@click.argument("request_id", type=params.ROW_ID)
@handled
def erasure_close(db: str | None, request_id: int) -> None:
    """Close a request once it has been answered."""
    commands.erasure_close(database_url(db), request_id)
    console.print(f"erasure request {request_id} closed", highlight=False)


@main.command()
@click.option(
    "--db",
    "db",
    default="sqlite:///retention-demo.sqlite",
    show_default=True,
    help="Where to build the sample shop (its tables are dropped and rebuilt).",
)
@click.option(
    "--customers",
    type=click.IntRange(1, 100_000),
    default=2000,
    show_default=True,
    help="Number of synthetic customers.",
)
@click.option(
    "--seed",
    type=click.IntRange(0, 2**32 - 1),
    default=7,
    show_default=True,
    help="Random seed (the shop is reproducible).",
)
@click.option(
    "--rules",
    "rules",
    default=Path("rules/marketplace.yaml"),
    type=click.Path(path_type=Path),
    show_default=True,
    help="The pack to demonstrate.",
)
@handled
def demo(db: str, customers: int, seed: int, rules: Path) -> None:
    """Build a sample shop on SQLite and show check, plan, run and ledger verification.

    The shop has years of synthetic customers, orders, invoices, browsing and
    analytics events, review-widget access logs and payment tokens. A demo
    pseudonym key is created in .retention-demo/ unless one is configured.
    """
    import os

    if click.get_current_context().find_root().params.get("log_level") == "info":
        logs.configure(level="error")  # the demo prints its own story; keep errors only
    if not os.environ.get("RETENTION_PSEUDONYM_KEY") and not os.environ.get("RETENTION_PSEUDONYM_KEY_FILE"):
        key_file = commands.demo_key_file(Path(".retention-demo"))
        os.environ["RETENTION_PSEUDONYM_KEY_FILE"] = str(key_file)
        console.print(f"using a demo pseudonym key in {key_file} (mode 0600)", highlight=False)
    console.rule("1. build the sample shop")
    summary = commands.demo_build(db, customers=customers, seed=seed)
    console.print(
        ", ".join(f"{table} {count}" for table, count in summary.items()) + f" rows in {safe_url(db)}",
        highlight=False,
    )
    console.rule("2. check the rule pack against the schema")
    report = commands.check(rules, db)
    for finding in report.findings:
        console.print(str(finding), highlight=False)
    console.print(f"{rules}: {len(report.errors)} errors, {len(report.findings) - len(report.errors)} warnings")
    console.rule("3. plan (dry run): what tonight's run will do")
    plan_summary = commands.plan(rules, db)
    _print_rows(_plan_rows(plan_summary), PLAN_COLUMNS, "table")
    console.print(f"{plan_summary.total()} transitions planned", highlight=False)
    console.rule("4. run (the first run clears years of backlog, so guards are overridden: see the ledger)")
    result = commands.run(rules, db, allow_mass=("*",))
    rows = [{"dataset": d, "transition": t, "count": c} for d, per in result.counts.items() for t, c in per.items()]
    _print_rows(rows, ["dataset", "transition", "count"], "table")
    console.print(f"run {result.run_id}: {result.status} in {result.batches} batches", highlight=False)
    console.rule("5. run again: nothing left to do")
    again = commands.run(rules, db)
    console.print(
        f"run {again.run_id}: {again.status}, {sum(sum(v.values()) for v in again.counts.values())} transitions",
        highlight=False,
    )
    console.rule("6. verify the ledger")
    verdict = commands.ledger_verify(db)
    console.print(
        f"ledger: {verdict.entries} entries, chain {'verified' if verdict.ok else 'BROKEN: ' + verdict.reason}",
        highlight=False,
    )
    console.rule("next")
    console.print(
        f"retention explain --db {db} --rules {rules} --dataset customers --key 1\n"
        f"retention plan --db {db} --rules {rules} --as-of 2028-01-01\n"
        f"retention ledger verify --db {db}",
        highlight=False,
    )
    if not verdict.ok:
        sys.exit(EXIT_LEDGER)
    if result.failures:
        sys.exit(EXIT_PARTIAL)


@main.group("ledger")
def ledger_group() -> None:
    """The purge ledger: verify, show, export, look up, checkpoint."""


@ledger_group.command("verify")
@db_option
@click.option(
    "--checkpoint",
    "checkpoint_file",
    type=params.INPUT_FILE,
    default=None,
    help="Also check against this signed checkpoint (JSON from `ledger checkpoint`); needs the signer's public key.",
)
@click.option(
    "--public-key",
    "public_key",
    type=params.INPUT_FILE,
    default=None,
    help="PEM public key of the checkpoint signer (or RETENTION_CHECKPOINT_PUBLIC_KEY / _FILE); "
    "the key inside a checkpoint is never trusted.",
)
@handled
def ledger_verify(db: str | None, checkpoint_file: Path | None, public_key: Path | None) -> None:
    """Recompute the hash chain (and a checkpoint); exit 6 naming the first broken entry."""
    verdict = commands.ledger_verify(database_url(db), checkpoint_file, public_key)
    if verdict.ok:
        extra = f", checkpoint {checkpoint_file} holds" if checkpoint_file else ""
        console.print(f"ledger verified: {verdict.entries} entries{extra}", highlight=False)
        return
    err_console.print(f"ledger verification failed: {verdict.reason}", highlight=False)
    sys.exit(EXIT_LEDGER)


def ledger_filters(func: F) -> F:
    for option in reversed(
        [
            click.option(
                "--since", type=params.AS_OF, default=None, help="Entries recorded at or after this date/instant (UTC)."
            ),
            click.option(
                "--until", type=params.AS_OF, default=None, help="Entries recorded before this date/instant (UTC)."
            ),
            click.option("--dataset", type=params.NAME, default=None, help="Only this dataset."),
            click.option("--transition", default=None, help="Only this transition, e.g. active->purged."),
            click.option("--run", "run_id", default=None, help="Only entries of this run id."),
        ]
    ):
        func = option(func)
    return func


LEDGER_COLUMNS = [
    "seq",
    "recorded_at",
    "dataset",
    "transition",
    "action",
    "count",
    "due_at",
    "basis",
    "record_pseudonym",
    "run_id",
]


@ledger_group.command("show")
@db_option
@ledger_filters
@click.option(
    "--limit", type=click.IntRange(0, 10**9), default=100, show_default=True, help="At most this many entries (0: all)."
)
@format_option
@handled
def ledger_show(
    db: str | None,
    since: AsOf | None,
    until: AsOf | None,
    dataset: str | None,
    transition: str | None,
    run_id: str | None,
    limit: int,
    fmt: str,
) -> None:
    """Show ledger entries, oldest first, filtered by date range, dataset, transition or run."""
    rows = commands.ledger_entries(
        database_url(db),
        since=since,
        until=until,
        dataset=dataset,
        transition=transition,
        run_id=run_id,
        limit=limit,
    )
    _print_rows(rows, LEDGER_COLUMNS, fmt)


@ledger_group.command("export")
@db_option
@ledger_filters
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="jsonl", show_default=True)
@click.option(
    "--output",
    type=params.OUTPUT_FILE,
    default=None,
    help="File to write (default stdout).",
)
@handled
def ledger_export(
    db: str | None,
    since: AsOf | None,
    until: AsOf | None,
    dataset: str | None,
    transition: str | None,
    run_id: str | None,
    fmt: str,
    output: Path | None,
) -> None:
    """Export entries (every column, hashes included) for auditors as CSV or JSON lines."""
    count = commands.ledger_export(
        database_url(db),
        fmt,
        output,
        since=since,
        until=until,
        dataset=dataset,
        transition=transition,
        run_id=run_id,
    )
    if output is not None:
        console.print(f"{count} entries written to {output}", highlight=False)


@ledger_group.command("lookup")
@db_option
@click.option("--dataset", type=params.NAME, default=None, help="Dataset of the record (with --key).")
@click.option("--key", "record_key", type=params.RECORD_KEY, default=None, help="The record's key.")
@click.option(
    "--subject",
    "subject_key",
    type=params.SUBJECT_ID,
    default=None,
    help="A subject id: every entry about this person.",
)
@format_option
@handled
def ledger_lookup(
    db: str | None, dataset: str | None, record_key: str | None, subject_key: str | None, fmt: str
) -> None:
    """Find the entries of one record or subject by computing its pseudonym (needs the key)."""
    rows = commands.ledger_lookup(database_url(db), dataset=dataset, record_key=record_key, subject_key=subject_key)
    _print_rows(rows, LEDGER_COLUMNS, fmt)


@ledger_group.command("checkpoint")
@db_option
@click.option(
    "--key",
    "key_file",
    type=params.INPUT_FILE,
    default=None,
    help="Ed25519 private key (PEM, mode 0600); default RETENTION_SIGNING_KEY_FILE.",
)
@click.option(
    "--output",
    type=params.OUTPUT_FILE,
    default=None,
    help="Write the checkpoint JSON here (keep a copy outside this database).",
)
@handled
def ledger_checkpoint(db: str | None, key_file: Path | None, output: Path | None) -> None:
    """Sign the current head (sequence, hash, time) so a rewritten chain is detectable later."""
    document = commands.ledger_checkpoint(database_url(db), key_file)
    text = json.dumps(document, indent=2, sort_keys=True)
    if output is not None:
        output.write_text(text + "\n", encoding="utf-8")
        console.print(f"checkpoint of entry {document['seq']} written to {output}", highlight=False)
    else:
        click.echo(text)


@ledger_group.command("keygen")
@click.option(
    "--key",
    "key_file",
    type=params.OUTPUT_FILE,
    required=True,
    help="Where to write the new private key (created with mode 0600).",
)
@handled
def ledger_keygen(key_file: Path) -> None:
    """Create an Ed25519 signing key for checkpoints; prints the public key to give auditors."""
    click.echo(commands.ledger_keygen(key_file).decode("ascii"), nl=False)


@main.command()
@rules_option()
@db_option
@as_of_option
@pack_option
@click.option(
    "--horizon",
    type=params.PeriodType(Period(years=5)),
    default="P6M",
    show_default=True,
    help="How far the weekly forecast looks ahead (at most P5Y: one plan per week).",
)
@click.option(
    "--html",
    "html_file",
    type=params.OUTPUT_FILE,
    required=True,
    help="Write the self-contained HTML report here.",
)
@lock_timeout_option
@handled
def report(
    rules: Path,
    db: str | None,
    as_of: AsOf | None,
    pack_id: str | None,
    horizon: Period,
    html_file: Path,
    lock_timeout: int | None,
) -> None:
    """HTML report: what is due now and a chart of upcoming transitions per week."""
    summary, forecast = commands.report(
        rules, database_url(db), as_of, horizon, html_file, pack_id, lock_timeout=lock_timeout
    )
    total = sum(sum(v) for v in forecast.series.values())
    console.print(
        f"{html_file}: {summary.total()} transitions due now, {total} more over {len(forecast.starts)} weeks",
        highlight=False,
    )


@main.command()
@rules_option()
@db_option
@pack_option
@click.option(
    "--cron",
    envvar="RETENTION_SCHEDULE",
    default="30 2 * * *",
    show_default=True,
    help="When to run: 5 crontab fields (or 6 with seconds first); or RETENTION_SCHEDULE.",
)
@click.option(
    "--timezone",
    "timezone",
    envvar="RETENTION_SCHEDULE_TIMEZONE",
    default="UTC",
    show_default=True,
    help="Timezone of the cron expression; or RETENTION_SCHEDULE_TIMEZONE.",
)
@click.option(
    "--archive-db",
    "archive_url",
    envvar="RETENTION_ARCHIVE_DATABASE_URL",
    default=None,
    help="Separate database for the intermediate archive.",
)
@click.option(
    "--metrics-file",
    type=params.METRICS_FILE,
    envvar="RETENTION_METRICS_FILE",
    default=None,
    help="Prometheus textfile written after each run.",
)
@lock_timeout_option
@handled
def scheduler(
    rules: Path,
    db: str | None,
    pack_id: str | None,
    cron: str,
    timezone: str,
    archive_url: str | None,
    metrics_file: Path | None,
    lock_timeout: int | None,
) -> None:
    """Run `retention run` on a cron schedule (no overlap, missed runs coalesced) until SIGTERM."""
    commands.scheduler(
        rules, database_url(db), cron, timezone, pack_id, archive_url, metrics_file, lock_timeout=lock_timeout
    )


@main.group()
def review() -> None:
    """Disposition review: approve or reject purges of datasets declared `review: true`."""


@review.command("list")
@db_option
@click.option("--all", "include_done", is_flag=True, help="Include rejected and completed batches.")
@format_option
@handled
def review_list(db: str | None, include_done: bool, fmt: str) -> None:
    """List review batches awaiting a decision (or all with --all)."""
    rows = commands.review_list(database_url(db), include_done=include_done)
    _print_rows(rows, ["id", "dataset", "status", "items", "created_at", "decided_by", "reason"], fmt)


@review.command("show")
@db_option
@click.argument("batch_id", type=params.ROW_ID)
@format_option
@handled
def review_show(db: str | None, batch_id: int, fmt: str) -> None:
    """Show the records of review batch BATCH_ID and when each became due."""
    batch, items = commands.review_show(database_url(db), batch_id)
    if fmt == "table":
        console.print(
            f"review batch {batch['id']} of {batch['dataset']}: {batch['status']}, {len(items)} records",
            highlight=False,
        )
    _print_rows(items, ["record_key", "transition", "due_at"], fmt)


def _decision(approve: bool) -> Callable[..., None]:
    @db_option
    @click.argument("batch_id", type=params.ROW_ID)
    @click.option("--by", "by", type=params.NAME, default=None, help="Who decides (default: the OS user).")
    @click.option("--reason", type=params.REASON, required=True, help="Why; goes to the ledger.")
    @handled
    def decide(db: str | None, batch_id: int, by: str | None, reason: str) -> None:
        commands.review_decide(database_url(db), batch_id, approve=approve, by=by or _actor(), reason=reason)
        console.print(f"review batch {batch_id} {'approved' if approve else 'rejected'}", highlight=False)

    return decide


review.command("approve", help="Approve batch BATCH_ID: the next run purges what is still due and not held.")(
    _decision(True)
)
review.command("reject", help="Reject batch BATCH_ID: its records are kept and not proposed again.")(_decision(False))


def _print_rows(rows: list[dict[str, Any]], columns: list[str], fmt: str, title: str | None = None) -> None:
    """Print rows as a rich table, JSON or CSV."""
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, default=_json_default))
        return
    if fmt == "csv":
        import csv

        writer = csv.DictWriter(sys.stdout, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        return
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    console.print(table)


def _json_default(value: Any) -> Any:
    import datetime as dt

    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)


def _cell(value: Any) -> str:
    """Table cells for people: instants to the minute in UTC, nothing for None."""
    import datetime as dt

    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%MZ")
    return str(value)


if __name__ == "__main__":  # pragma: no cover
    main()
