"""Personal data and its copies: ``coverage`` and the crypto-shredded ``archive`` (docs/backups.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.markup import escape

from retention import commands
from retention.cli import params
from retention.cli.options import EXIT_FAILURE, command, db_option, group, handled, pack_option, rules_option
from retention.cli.output import console
from retention.store.config import database_url


@command()
@rules_option()
@db_option
@pack_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Output for people (table) or CI (json).",
)
@click.option("--strict", is_flag=True, help="Exit 1 when a personal-looking column is covered by no dataset.")
@handled
def coverage(rules: Path, db: str | None, pack_id: str | None, fmt: str, strict: bool) -> None:
    """List personal-looking columns no dataset of the pack reaches, with the dataset they would belong to.

    Reads table and column names, types, foreign keys and at most 200 values
    of each short text column (never printed). A column is covered when a
    dataset deletes its rows, masks it or reads it as a clock; partly covered
    when those datasets limit their rows with 'where'. With --strict, exit 1
    while any column is not covered at all (partly covered ones do not fail).
    """
    report = commands.coverage(rules, database_url(db), pack_id)
    if fmt == "json":
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        for title, columns in (
            ("not covered", report.uncovered),
            ("partly covered", report.partial),
            ("covered", report.covered),
        ):
            if columns:
                console.print(f"{title}:", highlight=False)
                for column in columns:
                    console.print(f"  {escape(column.describe())}", highlight=False)
        console.print(report.summary(), highlight=False)
    if strict and report.uncovered:
        sys.exit(EXIT_FAILURE)


@group()
def archive() -> None:
    """The intermediate archive: encrypted payloads and their keys (docs/backups.md)."""


@archive.command("keygen")
@click.option(
    "--key-file",
    "key_file",
    required=True,
    type=params.OUTPUT_FILE,
    help="Where to create the key-encryption key (mode 0600, never overwritten).",
)
@handled
def archive_keygen(key_file: Path) -> None:
    """Create the archive's key-encryption key; point RETENTION_ARCHIVE_KEY_FILE at it to encrypt payloads."""
    key_id = commands.archive_keygen(key_file)
    console.print(f"created {key_file} (key id {key_id})", highlight=False)


@archive.command("show")
@db_option
@click.option("--dataset", required=True, type=params.NAME, help="Dataset of the archived record.")
@click.option("--key", "record_key", required=True, type=params.RECORD_KEY, help="The record's key.")
@handled
def archive_show(db: str | None, dataset: str, record_key: str) -> None:
    """Print one archived payload (JSON), decrypted under the live keys; a shredded one is an error."""
    click.echo(commands.archive_show(database_url(db), dataset, record_key))


@archive.command("encrypt")
@db_option
@handled
def archive_encrypt(db: str | None) -> None:
    """Encrypt the payloads archived before RETENTION_ARCHIVE_KEY_FILE was set (plain ones stay readable until then)."""
    count = commands.archive_encrypt(database_url(db))
    console.print(f"{count} payloads encrypted", highlight=False)


@archive.command("rotate-key")
@db_option
@handled
def archive_rotate_key(db: str | None) -> None:
    """Replace the key-encryption key: data keys are rewrapped, payloads untouched, the old key erased."""
    key_id = commands.archive_rotate_key(database_url(db))
    console.print(f"archive key rotated; new key id {key_id}", highlight=False)
