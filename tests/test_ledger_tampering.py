"""Ledger tampering that a chain check alone misses: a cut ledger, and a checkpoint signed by someone else.

A ledger emptied or cut at its end is still a valid chain. The database
refuses ``TRUNCATE`` where it can (PostgreSQL's trigger, a foreign key that
MySQL/MariaDB will not truncate past); where a superuser gets round that,
``ledger verify`` compares the chain with the runs that wrote it. And a
checkpoint is trusted only against the public key the verifier configured:
whoever rewrites the chain can sign a checkpoint with a key of their own and
put that key inside it.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from scaffold import events_pack

from retention.cli import main
from retention.ledger import chain as ledger
from retention.ledger import signing
from retention.store import tables as store

ENV = {"RETENTION_PSEUDONYM_KEY": "tamper-test-key", "RETENTION_SIGNING_KEY_FILE": ""}

PACK = events_pack("tamper", batch_size=1)  # one record per batch, so one ledger entry per record


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env={**ENV, **(env or {})}, prog_name="retention")


@pytest.fixture
def two_runs(migrated: sa.Engine, db_url: str, tmp_path: Path) -> list[Any]:
    """Two runs through the CLI: 20 entries, then 10 more; returns their run records."""
    md = sa.MetaData()
    events = sa.Table(
        "events",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("collected", sa.DateTime),
    )
    md.create_all(migrated)
    with migrated.begin() as conn:
        conn.execute(
            events.insert(),
            [{"id": i, "collected": dt.datetime(2020 if i <= 20 else 2025, 3, 1)} for i in range(1, 31)],
        )
    pack = tmp_path / "tamper.yaml"
    pack.write_text(PACK, encoding="utf-8")
    for as_of in ("2025-06-01", "2026-06-01"):
        result = invoke("run", "--rules", str(pack), "--db", db_url, "--as-of", as_of)
        assert result.exit_code == 0, result.output
    with migrated.connect() as conn:
        return list(
            conn.execute(sa.select(store.runs).where(store.runs.c.mode == "run").order_by(store.runs.c.started_at))
        )


def ledger_size(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(store.ledger)).scalar_one())


def test_runs_record_the_length_of_the_ledger(two_runs: list[Any]) -> None:
    """Each run notes the ledger's last entry when it finished: 20, then 30."""
    assert [r.ledger_seq for r in two_runs] == [20, 30]


TRUNCATE = {
    "postgresql": "TRUNCATE retention_ledger",
    "mariadb": "TRUNCATE TABLE retention_ledger",
    "sqlite": "DELETE FROM retention_ledger",  # SQLite's truncate optimisation of DELETE
}


def test_the_database_refuses_truncate(migrated: sa.Engine, two_runs: list[Any], dialect: str) -> None:
    """TRUNCATE is refused: PostgreSQL by its trigger, MariaDB by the guard's foreign key, SQLite by its trigger."""
    with pytest.raises(sa.exc.DBAPIError), migrated.begin() as conn:
        conn.execute(sa.text(TRUNCATE[dialect]))
    assert ledger_size(migrated) == 30
    assert invoke("ledger", "verify", "--db", migrated.url.render_as_string(hide_password=False)).exit_code == 0


def superuser_empties(engine: sa.Engine, keep_until: int = 0) -> None:
    """What a superuser does to get round the protection, then removes entries after ``keep_until``."""
    dialect = engine.dialect.name
    with engine.begin() as conn:
        if dialect == "postgresql":
            conn.execute(sa.text("ALTER TABLE retention_ledger DISABLE TRIGGER USER"))
            if keep_until == 0:
                conn.execute(sa.text("TRUNCATE retention_ledger CASCADE"))
            else:
                conn.execute(sa.text(f"DELETE FROM retention_ledger WHERE seq > {keep_until}"))
            conn.execute(sa.text("ALTER TABLE retention_ledger ENABLE TRIGGER USER"))
        elif dialect == "mariadb":
            if keep_until == 0:  # the case: TRUNCATE with the triggers in place
                conn.execute(sa.text("SET foreign_key_checks = 0"))
                conn.execute(sa.text("TRUNCATE TABLE retention_ledger"))
                conn.execute(sa.text("SET foreign_key_checks = 1"))
            else:
                conn.execute(sa.text("DROP TRIGGER retention_ledger_no_delete"))
                conn.execute(sa.text(f"DELETE FROM retention_ledger WHERE seq > {keep_until}"))
        else:
            conn.execute(sa.text("DROP TRIGGER retention_ledger_no_delete"))
            conn.execute(sa.text(f"DELETE FROM retention_ledger WHERE seq > {keep_until}"))
        # ... and the items and blocks of the entries removed (ledger v2, format 5), so that nothing is left over.
        for table, column in (
            ("retention_ledger_items", "entry_seq"),
            ("retention_ledger_lookup", "entry_seq"),
            ("retention_ledger_blocks", "entry_seq"),
        ):
            if dialect == "postgresql":
                conn.execute(sa.text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
                conn.execute(sa.text(f"DELETE FROM {table} WHERE {column} > {keep_until}"))
                conn.execute(sa.text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))
            else:
                conn.execute(sa.text(f"DROP TRIGGER {table}_no_delete"))
                conn.execute(sa.text(f"DELETE FROM {table} WHERE {column} > {keep_until}"))


def test_an_emptied_ledger_fails_verify(migrated: sa.Engine, db_url: str, two_runs: list[Any]) -> None:
    """A truncated ledger is a valid chain of 0 entries; verify still fails, naming the run that saw 30."""
    superuser_empties(migrated)
    assert ledger_size(migrated) == 0
    result = invoke("ledger", "verify", "--db", db_url)
    assert result.exit_code == 6
    last = two_runs[-1]
    assert result.output.splitlines() == [
        f"ledger verification failed: the ledger ends at entry 0, but it had 30 entries when run {last.id} "
        f"finished ({last.finished_at:%Y-%m-%d %H:%M} UTC): entries were removed from its end"
    ]


def test_a_shortened_ledger_fails_verify(migrated: sa.Engine, db_url: str, two_runs: list[Any], tmp_path: Path) -> None:
    """The last 5 entries removed: the chain of 25 verifies alone, but the second run saw 30; nothing signs it."""
    superuser_empties(migrated, keep_until=25)
    assert ledger_size(migrated) == 25
    result = invoke("ledger", "verify", "--db", db_url)
    assert result.exit_code == 6
    last = two_runs[-1]
    assert result.output.splitlines() == [
        f"ledger verification failed: the ledger ends at entry 25, but it had 30 entries when run {last.id} "
        f"finished ({last.finished_at:%Y-%m-%d %H:%M} UTC): entries were removed from its end"
    ]
    private, _ = keys(tmp_path, "auditor")
    refused = invoke("ledger", "checkpoint", "--db", db_url, "--key", str(private))
    assert refused.exit_code == 6
    assert refused.output.splitlines()[0].startswith(
        "error: refusing to sign a broken ledger: the ledger ends at entry"
    )


def test_runs_without_a_recorded_length_still_expose_an_empty_ledger(
    migrated: sa.Engine, db_url: str, two_runs: list[Any]
) -> None:
    """Runs from before the length was recorded: a run that moved records but has no entry fails verify."""
    with migrated.begin() as conn:
        conn.execute(store.runs.update().values(ledger_seq=None, ledger_last=None))
    superuser_empties(migrated)
    result = invoke("ledger", "verify", "--db", db_url)
    assert result.exit_code == 6
    first = two_runs[0]
    assert result.output.splitlines() == [
        f"ledger verification failed: run {first.id} ({first.started_at:%Y-%m-%d %H:%M} UTC) moved 20 records, "
        "but the ledger holds none of its entries (0 entries in all): entries were removed"
    ]


def keys(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A signing key and its public PEM, through the CLI."""
    private = tmp_path / f"{name}.pem"
    result = invoke("ledger", "keygen", "--key", str(private))
    assert result.exit_code == 0, result.output
    public = tmp_path / f"{name}.pub.pem"
    public.write_text(result.output, encoding="utf-8")
    return private, public


def test_a_checkpoint_needs_a_configured_public_key(db_url: str, two_runs: list[Any], tmp_path: Path) -> None:
    """Without --public-key or RETENTION_CHECKPOINT_PUBLIC_KEY(_FILE), verify --checkpoint refuses in one line."""
    private, public = keys(tmp_path, "auditor")
    checkpoint = tmp_path / "cp.json"
    assert (
        invoke("ledger", "checkpoint", "--db", db_url, "--key", str(private), "--output", str(checkpoint)).exit_code
        == 0
    )
    result = invoke("ledger", "verify", "--db", db_url, "--checkpoint", str(checkpoint))
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        "error: a checkpoint is trusted only against its signer's public key: pass --public-key PEM or set "
        "RETENTION_CHECKPOINT_PUBLIC_KEY or RETENTION_CHECKPOINT_PUBLIC_KEY_FILE (the key inside the checkpoint "
        "proves nothing)"
    ]
    ok = [f"ledger verified: 30 entries, checkpoint {checkpoint} holds", "entries: 30 authenticated"]
    flag = invoke("ledger", "verify", "--db", db_url, "--checkpoint", str(checkpoint), "--public-key", str(public))
    assert (flag.exit_code, flag.output.splitlines()) == (0, ok)
    from_file = invoke(
        "ledger", "verify", "--db", db_url, "--checkpoint", str(checkpoint),
        env={"RETENTION_CHECKPOINT_PUBLIC_KEY_FILE": str(public)},
    )  # fmt: skip
    assert (from_file.exit_code, from_file.output.splitlines()) == (0, ok)
    from_text = invoke(
        "ledger", "verify", "--db", db_url, "--checkpoint", str(checkpoint),
        env={"RETENTION_CHECKPOINT_PUBLIC_KEY": public.read_text(encoding="utf-8")},
    )  # fmt: skip
    assert (from_text.exit_code, from_text.output.splitlines()) == (0, ok)


def test_a_rewritten_chain_signed_with_another_key_fails(
    migrated: sa.Engine, db_url: str, two_runs: list[Any], tmp_path: Path
) -> None:
    """The attacker empties the ledger, writes a chain of their own and signs it with their key
    (which the checkpoint carries): against the auditor's configured key it fails."""
    _, auditor_public = keys(tmp_path, "auditor")
    attacker_private, _ = keys(tmp_path, "attacker")
    superuser_empties(migrated)
    with migrated.begin() as conn:  # a plausible chain of one entry, written by hand
        ledger.append(
            conn,
            [ledger.EntryDraft(None, None, None, "events", "hold_placed", None, "forged", None, None, None)],
            dt.datetime(2026, 6, 2, tzinfo=dt.UTC),
            secret=b"not the engine's key",
        )
        conn.execute(store.runs.update().values(ledger_seq=None, ledger_last=None, counts=None))  # runs hidden
    forged = tmp_path / "forged.json"
    document = ledger.checkpoint(
        migrated, ledger.load_signing_key(attacker_private), dt.datetime.now(dt.UTC), secret=b"not the engine's key"
    )
    forged.write_text(json.dumps(document), encoding="utf-8")
    alone = invoke("ledger", "verify", "--db", db_url)  # the chain alone: the entry's MAC is not the engine's
    assert (alone.exit_code, alone.output.splitlines()) == (
        6,
        [
            "ledger verification failed: entry 1: its MAC is not valid for the configured pseudonym key: it was not "
            "written by the engine (or the key is not the engine's)"
        ],
    )
    result = invoke(
        "ledger", "verify", "--db", db_url, "--checkpoint", str(forged), "--public-key", str(auditor_public)
    )
    assert result.exit_code == 6
    auditor_id = signing._key_id(ledger.load_public_key(auditor_public.read_bytes()))
    assert result.output.splitlines() == [
        f"ledger verification failed: checkpoint of entry 1 signed {document['signed_at']}: the signature is not "
        f"valid for the configured public key (it names key {document['key_id']}, the configured key is {auditor_id})"
    ]


def test_a_checkpoint_of_a_longer_chain_exposes_the_cut(
    migrated: sa.Engine, db_url: str, two_runs: list[Any], tmp_path: Path
) -> None:
    """With the run records hidden too, the auditor's checkpoint of entry 30 still names the missing entry."""
    private, public = keys(tmp_path, "auditor")
    checkpoint = tmp_path / "cp.json"
    assert (
        invoke("ledger", "checkpoint", "--db", db_url, "--key", str(private), "--output", str(checkpoint)).exit_code
        == 0
    )
    superuser_empties(migrated, keep_until=25)
    with migrated.begin() as conn:
        conn.execute(store.runs.update().values(ledger_seq=None, ledger_last=None))
    result = invoke("ledger", "verify", "--db", db_url, "--checkpoint", str(checkpoint), "--public-key", str(public))
    assert result.exit_code == 6
    assert result.output.splitlines()[0].startswith(
        "ledger verification failed: ledger rewritten: entry 30 of the checkpoint of entry 30 signed "
    )
    assert result.output.splitlines()[0].endswith(" is gone")
