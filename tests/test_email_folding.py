"""Addresses with a non-ASCII capital: the typed side and the stored side fold alike (review of diffemail).

SQLite's built-in ``LOWER`` folds ASCII capitals only, while pseudonyms fold
with Python's ``str.lower``. The engine's SQLite connections fold addresses
with Python's too (``retention_lower``), so a live row, a state row's
pseudonym and the address an operator types agree; PostgreSQL (C.UTF-8 here)
and MariaDB fold ``É`` in their own ``LOWER``. Through the CLI, on every
database.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import sqlalchemy as sa
from click.testing import CliRunner

from retention.cli import main
from retention.engine.schema import Finding, identity_collations
from retention.policy import load_file
from retention.store import tables as store

ENV = {"RETENTION_PSEUDONYM_KEY": "email-folding-test-key"}
PACK = """\
pack: shop
version: "1"
effective_from: 2000-01-01
timezone: UTC
guard: {max_share: 1.0}
datasets:
  customers:
    table: customers
    key: id
    subject_key: id
    email: email
    basis: Account
    on_erasure: purged
    keep:
      - clock: {column: seen, type: date}
        period: P1Y
    lifecycle:
      - to: inactive
        action: deactivate
        set: {active: 0}
      - to: purged
        after: P30Y
        action: delete
"""


def _setup(engine: sa.Engine, tmp_path: Path, db_url: str, rows: dict[int, tuple[str, dt.date]]) -> list[str]:
    metadata = sa.MetaData()
    customers = sa.Table(
        "customers",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("email", sa.String(320)),
        sa.Column("seen", sa.Date),
        sa.Column("active", sa.Integer, nullable=False, server_default="1"),
    )
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(customers.insert(), [{"id": i, "email": e, "seen": s} for i, (e, s) in rows.items()])
    rules = tmp_path / "pack.yaml"
    rules.write_text(PACK)
    return ["--rules", str(rules), "--db", db_url]


def _cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), env=ENV)
    assert result.exit_code == 0, result.output
    return result.output


def _left(engine: sa.Engine) -> list[int]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT id FROM customers ORDER BY id")).scalars())


def test_request_probe_finds_a_row_typed_with_its_non_ascii_capital(
    migrated: sa.Engine, db_url: str, tmp_path: Path
) -> None:
    """``erasure add`` warns that nobody matches only when the run would erase nothing."""
    base = _setup(migrated, tmp_path, db_url, {1: ("Élodie@x.test", dt.date(2024, 1, 1))})
    out = _cli("erasure", "add", *base, "--email", "Élodie@x.test", "--received", "2024-05-02")
    assert "warning" not in out
    _cli("run", *base, "--no-progress", "--as-of", "2024-06-01")
    assert _left(migrated) == []


def test_an_address_reaches_live_rows_and_state_rows_alike(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """Typed in lower case, the address reaches the inactive record (state row) and the active one (live row)."""
    rows = {1: ("Élodie@x.test", dt.date(2020, 1, 1)), 2: (" ÉLODIE@X.test", dt.date(2024, 1, 1))}
    base = _setup(migrated, tmp_path, db_url, rows)
    _cli("run", *base, "--no-progress", "--as-of", "2023-06-01")  # record 1 leaves active
    out = _cli("erasure", "add", *base, "--email", "élodie@x.test", "--received", "2024-05-02")
    assert "warning" not in out
    out = _cli("hold", "add", *base, "--email", "ÉLODIE@x.test ", "--reason", "case 7")
    assert "warning" not in out
    plan = _cli("plan", *base, "--as-of", "2024-06-01")
    _cli("run", *base, "--no-progress", "--as-of", "2024-06-01")
    assert _left(migrated) == [1, 2], plan  # the hold keeps both
    _cli("hold", "release", "1", "--db", db_url, "--reason", "case closed")
    _cli("run", *base, "--no-progress", "--as-of", "2024-06-02")
    assert _left(migrated) == []
    with migrated.connect() as conn:
        er = store.erasure_requests
        request = conn.execute(sa.select(er.c.email, er.c.status, er.c.outcome)).one()
    assert tuple(request) == ("élodie@x.test", "processed", "erased")


def test_check_warns_of_an_email_column_that_lower_cases_otherwise(migrated: sa.Engine, tmp_path: Path) -> None:
    """PostgreSQL: a ``C`` column's ``LOWER`` leaves ``É``, the database's default folds it. Named by table and
    column; an e-mail column of the default collation, and every column on SQLite and MariaDB, get nothing."""
    c_collation = migrated.dialect.name == "postgresql"
    metadata = sa.MetaData()
    email_type = sa.String(320, collation="C") if c_collation else sa.String(320)
    sa.Table(
        "customers",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("email", email_type),
        sa.Column("seen", sa.Date),
        sa.Column("active", sa.Integer),
    )
    metadata.create_all(migrated)
    rules = tmp_path / "pack.yaml"
    rules.write_text(PACK)
    loaded = load_file(rules)
    with migrated.connect() as conn:
        found = identity_collations(conn, loaded.pack)
        metadata.drop_all(conn)
        conn.commit()
    metadata = sa.MetaData()
    sa.Table("customers", metadata, sa.Column("id", sa.Integer, primary_key=True), sa.Column("email", sa.String(320)))
    metadata.create_all(migrated)
    with migrated.connect() as conn:
        plain = identity_collations(conn, loaded.pack)
    message = (
        "e-mail column lower-cases otherwise than the database's default collation; an address with a non-ASCII "
        "capital typed for a hold or an erasure request may reach none of its live rows"
    )
    expected = [Finding("warning", "customers", "customers", "email", message)] if c_collation else []
    assert (found, plain) == (expected, [])
