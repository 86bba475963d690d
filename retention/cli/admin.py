"""Setting up: ``init``, ``db``, ``check``, ``pack history`` and the ``demo`` shop."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from retention import commands
from retention.cli.options import (
    EXIT_CONFIG,
    EXIT_LEDGER,
    EXIT_PARTIAL,
    command,
    configure_logs,
    db_option,
    format_option,
    group,
    handled,
    log_settings,
    rules_option,
)
from retention.cli.output import console, display_zone, err_console, print_plan_table, print_rows
from retention.store.config import database_url, safe_url
from retention.timing.clock import AsOf


@command()
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
        if path.name == commands.PUBLIC_KEY_FILE:
            console.print(f"created {path} (mode 0644): the public key to give auditors", highlight=False)
        else:
            console.print(f"created {path} (mode 0600)", highlight=False)
    console.print(
        f"export RETENTION_PSEUDONYM_KEY_FILE={folder / 'pseudonym.key'}\n"
        f"export RETENTION_SIGNING_KEY_FILE={folder / 'signing.pem'}\n"
        f"database {safe_url(database_url(db))} is ready; next: retention check --rules PACK.yaml --db URL "
        "(--rules builtin:marketplace tries a reference pack)",
        highlight=False,
    )


@group()
def db() -> None:
    """The engine's own tables (Alembic migrations)."""


@db.command("upgrade")
@db_option
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@handled
def db_upgrade(db: str | None, revision: str) -> None:
    """Create or upgrade the engine's tables in the database.

    A --revision older than the tables' is refused (use db downgrade); at the revision asked for, it says so.
    """
    url = database_url(db)
    before, after = commands.db_upgrade(url, revision)
    if before == after:
        console.print(f"database {safe_url(url)}: already at {after}; nothing to upgrade", highlight=False)
    else:
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
    """Downgrade the engine's tables to REVISION ('base' removes them, ledger included).

    A REVISION later than the tables' is refused (use db upgrade); at REVISION already, it says so.
    """
    url = database_url(db)
    before, after = commands.db_downgrade(url, revision)
    if before == after:
        console.print(f"database {safe_url(url)}: already at {after or 'base'}; nothing to downgrade", highlight=False)
    else:
        console.print(f"database {safe_url(url)}: {before} -> {after or 'base (no engine tables)'}", highlight=False)


@command()
@rules_option()
@click.option("--db", "db", default=None, help="Also check the pack against this database.")
@format_option
@handled
def check(rules: Path, db: str | None, fmt: str) -> None:
    """Validate rule packs; with --db, also against the live schema.

    Errors (exit 2) name the file and line, or the table and column. Warnings
    (missing indexes on clock columns, tables without primary key) do not fail.
    CSV has one row per finding (a header only when there is none).
    """
    report = commands.check(rules, db)
    if fmt == "json":
        click.echo(json.dumps(report.as_dict(), indent=2))
    elif fmt == "csv":
        rows = report.as_dict()["findings"]
        empty = {"dataset": None, "table": None, "column": None}
        rows += [{"level": "warning", **empty, "message": w.removeprefix("warning: ")} for w in report.pack_warnings]
        print_rows(rows, ["level", "dataset", "table", "column", "message"], fmt)
    else:
        for loaded in report.packs:
            console.print(
                f"ok: {loaded.source}: pack {loaded.id} {loaded.pack.version} "
                f"(effective {loaded.pack.effective_from}, {len(loaded.pack.datasets)} datasets, "
                f"digest {loaded.digest[:12]})",
                highlight=False,
            )
        for line in report.pack_warnings:
            console.print(line, highlight=False)
        for finding in report.findings:
            target = err_console if finding.level == "error" else console
            target.print(str(finding), highlight=False)
        for line in report.notices:
            console.print(line, highlight=False)
    if report.errors:
        sys.exit(EXIT_CONFIG)


@group()
def pack() -> None:
    """Pack versions: when each was first seen, and whether it gave its notice."""


@pack.command("history")
@rules_option()
@db_option
@format_option
@handled
def pack_history(rules: Path, db: str | None, fmt: str) -> None:
    """List every version under --rules: digest, first seen, effective from, notice status.

    Seeing a version records its first sighting, as check, plan and run do.
    Status: ok; short (takes effect less than the pack's notice after it was
    first seen, or announced when that is later) or back-dated (takes effect before it was first seen), which
    run refuses until the notice has run out, unless --accept-short-notice;
    first version (nothing to give notice of); no notice (the pack sets none).
    """
    rows = [
        {
            "pack": v.loaded.id,
            "version": v.loaded.pack.version,
            "digest": v.loaded.digest if fmt != "table" else v.loaded.digest[:12],
            "first_seen": v.first_seen_at,
            "effective_from": v.loaded.pack.effective_from,
            "announced": v.loaded.pack.announced,
            "notice": str(v.loaded.pack.notice) if v.loaded.pack.notice is not None else None,
            "status": v.status,
            "not_before": v.not_before,
        }
        for v in commands.pack_history(rules, database_url(db))
    ]
    print_rows(
        rows,
        ["pack", "version", "digest", "first_seen", "effective_from", "announced", "notice", "status", "not_before"],
        fmt,
        zone=display_zone(rules, None, utc=False),
    )


@command()
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
    default=Path("builtin:marketplace"),
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

    if log_settings()["level"] == "info":
        log_settings()["level"] = "error"  # the demo prints its own story; keep errors only
        configure_logs()
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
    # One as-of for plan and both runs: read again, the second run could start after midnight in the pack's
    # zone and find that day's records due, where the demo says it finds nothing left to do.
    as_of = AsOf.now()
    console.rule("2. check the rule pack against the schema")
    report = commands.check(rules, db)
    for finding in report.findings:
        console.print(str(finding), highlight=False)
    console.print(f"{rules}: {len(report.errors)} errors, {len(report.findings) - len(report.errors)} warnings")
    console.rule("3. plan (dry run): what tonight's run will do")
    plan_summary = commands.plan(rules, db, as_of)
    print_plan_table(plan_summary, display_zone(rules, plan_summary.pack_id, utc=False))
    console.print(f"{plan_summary.total()} transitions planned", highlight=False)
    console.rule("4. run (the first run clears years of backlog, so guards are overridden: see the ledger)")
    result = commands.run(rules, db, as_of, allow_mass=("*",))
    rows = [{"dataset": d, "transition": t, "count": c} for d, per in result.counts.items() for t, c in per.items()]
    print_rows(rows, ["dataset", "transition", "count"], "table")
    console.print(f"run {result.run_id}: {result.status} in {result.batches} batches", highlight=False)
    console.rule("5. run again: nothing left to do")
    again = commands.run(rules, db, as_of)
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
