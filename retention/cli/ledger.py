"""Reading and proving the purge ledger: ``ledger verify``, ``show``, ``export``, ``lookup``, proofs and keys."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from retention import commands
from retention.cli import params
from retention.cli.options import (
    EXIT_LEDGER,
    F,
    db_option,
    format_option,
    group,
    handled,
    rules_option,
    zone_options,
)
from retention.cli.output import console, display_zone, err_console, print_rows
from retention.commands import files
from retention.errors import ConfigError
from retention.store.config import database_url
from retention.timing.clock import AsOf


@group("ledger")
def ledger_group() -> None:
    """The purge ledger: verify, audit, show, export, look up, checkpoint, prove."""


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
    help="PEM public key of the checkpoint signer (or RETENTION_CHECKPOINT_PUBLIC_KEY / _FILE), with --checkpoint; "
    "the key inside a checkpoint is never trusted.",
)
@handled
def ledger_verify(db: str | None, checkpoint_file: Path | None, public_key: Path | None) -> None:
    """Recompute the hash chain (and a checkpoint); exit 6 naming the first broken entry."""
    verdict = commands.ledger_verify(database_url(db), checkpoint_file, public_key)
    if verdict.ok:
        extra = f", checkpoint {checkpoint_file} holds" if checkpoint_file else ""
        console.print(f"ledger verified: {verdict.entries} entries{extra}", highlight=False)
        console.print(f"entries: {verdict.authentication()}", highlight=False)
        return
    err_console.print(f"ledger verification failed: {verdict.reason}", highlight=False)
    sys.exit(EXIT_LEDGER)


@ledger_group.command("audit")
@rules_option()
@db_option
@click.option(
    "--sample",
    type=click.IntRange(1, 10**9),
    default=None,
    help="Check this many claims, chosen at random (default: every claim).",
)
@click.option("--dataset", type=params.NAME, default=None, help="Only the claims of this dataset.")
@handled
def ledger_audit(rules: Path, db: str | None, sample: int | None, dataset: str | None) -> None:
    """Check the ledger's purge and anonymisation claims against the live tables; exit 6 naming each that fails."""
    result = commands.ledger_audit(rules, database_url(db), sample=sample, dataset=dataset)
    for line in result.skipped:
        console.print(f"not checked: {line}", highlight=False)
    shown = result.problems[:50]
    for line in shown:
        err_console.print(f"claim does not hold: {line}", highlight=False)
    if len(result.problems) > len(shown):
        err_console.print(f"... and {len(result.problems) - len(shown)} more", highlight=False)
    of = f" (a sample of {result.checked} of {result.claims})" if sample is not None else ""
    if result.problems:
        err_console.print(
            f"ledger audit failed: {len(result.problems)} of {result.checked} claims checked{of} do not hold",
            highlight=False,
        )
        sys.exit(EXIT_LEDGER)
    console.print(
        f"ledger audit ok: {result.checked} claims checked{of} in {result.datasets} dataset(s), each holds",
        highlight=False,
    )


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
            click.option(
                "--transition", type=params.TRANSITION, default=None, help="Only this transition, e.g. active->purged."
            ),
            click.option(
                "--run",
                "run_id",
                type=params.RUN_ID,
                default=None,
                help="Only entries of this run: its id, or the start of it as tables show it (8 characters).",
            ),
        ]
    ):
        func = option(func)
    return func


# For people: what, when and how many; --format csv or json adds the basis,
# pseudonyms, hashes and full run ids.
LEDGER_TABLE = ["seq", "recorded_at", "dataset", "transition", "count", "due_at", "run_id"]


# A lookup lists one row per record (a v2 item, or a v1 entry): the count is always 1.
LOOKUP_TABLE = ["seq", "item", "recorded_at", "dataset", "transition", "action", "due_at", "run_id"]
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
@zone_options
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
    rules: Path | None,
    pack_id: str | None,
    utc: bool,
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
    print_rows(rows, LEDGER_TABLE if fmt == "table" else LEDGER_COLUMNS, fmt, zone=display_zone(rules, pack_id, utc))


@ledger_group.command("export")
@db_option
@ledger_filters
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="jsonl", show_default=True)
@click.option(
    "--output",
    type=params.OUTPUT_FILE,
    default=None,
    help="File to write (default stdout); a new or regular file is written beside it and renamed once complete, "
    "a FIFO, symlink or device is written through.",
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
@click.option(
    "--email",
    type=params.EMAIL,
    default=None,
    help="An e-mail address (trimmed, lower-cased): every entry about records carrying it.",
)
@format_option
@zone_options
@handled
def ledger_lookup(
    db: str | None,
    dataset: str | None,
    record_key: str | None,
    subject_key: str | None,
    email: str | None,
    fmt: str,
    rules: Path | None,
    pack_id: str | None,
    utc: bool,
) -> None:
    """Find the entries of one record, subject or e-mail address by computing its pseudonym (needs the key).

    Give one of: --subject, --email, or --dataset with --key.
    """
    rows = commands.ledger_lookup(
        database_url(db), dataset=dataset, record_key=record_key, subject_key=subject_key, email=email
    )
    horizons = [(row["seq"], row.pop("backups")) for row in rows]
    if fmt != "table":
        for row, (_, found) in zip(rows, horizons, strict=True):
            row["backups"] = None if found is None else found.as_dict()
    print_rows(
        rows,
        LOOKUP_TABLE if fmt == "table" else ["seq", "item", *LEDGER_COLUMNS[1:], "request_id", "review_id"],
        fmt,
        zone=display_zone(rules, pack_id, utc),
        drop_order=LOOKUP_DROP_ORDER,
    )
    if fmt == "table":
        for seq, found in dict(horizons).items():  # an entry listed once per item says it once
            if found is not None:
                console.print(f"entry {seq}: {found.sentence()}", highlight=False)


# What a narrow terminal leaves out of a lookup first (a line under the table names it).
LOOKUP_DROP_ORDER = ["action", "item", "run_id", "recorded_at"]


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
        files.write_text(output, text + "\n")
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
@click.option(
    "--public",
    "public_file",
    type=params.OUTPUT_FILE,
    default=None,
    help="Also write the public key (PEM) to this file, for auditors.",
)
@handled
def ledger_keygen(key_file: Path, public_file: Path | None) -> None:
    """Create an Ed25519 signing key for checkpoints; prints the public key to give auditors."""
    public = commands.ledger_keygen(key_file)
    if public_file is not None:
        try:
            files.write_bytes(public_file, public)
        except ConfigError:
            key_file.unlink(missing_ok=True)  # a private key whose public half was not delivered: keygen again
            raise
    click.echo(public.decode("ascii"), nl=False)


@ledger_group.command("prove")
@db_option
@click.option("--dataset", type=params.NAME, default=None, help="Dataset of the record (with --key).")
@click.option("--key", "record_key", type=params.RECORD_KEY, default=None, help="The record's key.")
@click.option(
    "--subject", "subject_key", type=params.SUBJECT_ID, default=None, help="A subject id: every record of this person."
)
@click.option(
    "--checkpoint",
    "checkpoint_file",
    type=params.INPUT_FILE,
    required=True,
    help="A signed checkpoint (from `ledger checkpoint`) at or after the record's entries.",
)
@click.option("--output", type=params.OUTPUT_FILE, default=None, help="Write the proof here (default stdout).")
@handled
def ledger_prove(
    db: str | None,
    dataset: str | None,
    record_key: str | None,
    subject_key: str | None,
    checkpoint_file: Path,
    output: Path | None,
) -> None:
    """Write a self-contained proof that a record (or a subject's records) was moved, checkable offline.

    Give --subject, or --dataset with --key, not both.
    """
    document = commands.ledger_prove(
        database_url(db), checkpoint_file, dataset=dataset, record_key=record_key, subject_key=subject_key
    )
    text = json.dumps(document, indent=1, sort_keys=True)
    if output is None:
        click.echo(text)
        return
    files.write_text(output, text + "\n")
    console.print(
        f"proof of {len(document['records'])} ledger record(s), chain of {len(document['chain'])} entries to "
        f"the checkpoint of entry {document['checkpoint']['seq']}, written to {output}",
        highlight=False,
    )


@ledger_group.command("verify-proof")
@click.argument("proof_file", type=params.INPUT_FILE)
@click.option(
    "--public-key",
    "public_key",
    type=params.INPUT_FILE,
    default=None,
    help="PEM public key of the checkpoint signer (or RETENTION_CHECKPOINT_PUBLIC_KEY / _FILE).",
)
@click.option("--dataset", type=params.NAME, default=None, help="With --key: check the proof is about this record.")
@click.option(
    "--key", "record_key", type=params.RECORD_KEY, default=None, help="The record's key (needs the pseudonym key)."
)
@click.option(
    "--db",
    "db",
    default=None,
    help="With --rules: also check the proof's purge claims against this database's live tables "
    "(never read from RETENTION_DATABASE_URL: the check is offline unless asked).",
)
@click.option("--rules", "rules", type=click.Path(path_type=Path), default=None, help="The rule packs (with --db).")
@handled
def ledger_verify_proof(
    proof_file: Path,
    public_key: Path | None,
    dataset: str | None,
    record_key: str | None,
    db: str | None,
    rules: Path | None,
) -> None:
    """Check a proof from `ledger prove` offline (or, with --db, against the live data too); exit 6 if it fails."""
    verdict = commands.ledger_verify_proof(
        proof_file, public_key, dataset=dataset, record_key=record_key, db_url=db, rules=rules
    )
    if not verdict.ok:
        err_console.print(f"proof rejected: {verdict.reason}", highlight=False)
        sys.exit(EXIT_LEDGER)
    console.print("proof ok", highlight=False)
    for line in verdict.lines:
        console.print(f"  {line}", highlight=False)
