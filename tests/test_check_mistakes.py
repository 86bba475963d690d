"""`check --db` catches the mistakes real packs make (issue 23), and accepts what the docs list.

Each case plants one mistake in a small schema and asserts the one line
`check` prints for it (table and column named, no data value), on every
database; `plan` and `run` refuse what `check` calls an error.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from retention.cli import main
from retention.dialects import dialect_for
from retention.engine import execute
from retention.engine.schema import _type_ok
from retention.errors import SchemaError
from retention.policy import load_file
from retention.store import tables as store
from retention.subjects import events as subjects

UTC = dt.UTC
SECRET = b"check-mistakes-key"
ENV = {"RETENTION_PSEUDONYM_KEY": "check-mistakes-key"}
AS_OF = dt.datetime(2026, 6, 1, tzinfo=UTC)


def _check(db_url: str, pack: Path) -> tuple[int, list[str]]:
    result = CliRunner().invoke(main, ["check", "--rules", str(pack), "--db", db_url], env=ENV)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, [line for line in result.output.splitlines() if not line.startswith("ok: ")]


def _pack(tmp_path: Path, datasets: str, extra: str = "") -> Path:
    path = tmp_path / "pack.yaml"
    path.write_text(
        f'pack: shop\nversion: "1"\neffective_from: 2020-01-01\ntimezone: UTC\n'
        f"guard: {{max_share: 1.0}}\n{extra}datasets:\n{datasets}",
        encoding="utf-8",
    )
    return path


# --------------------------------------------------------------------------
# Engine tables
# --------------------------------------------------------------------------

OVER_ENGINE = """\
  requests:
    table: retention_erasure_requests
    key: id
    subject_key: subject_key
    basis: a mistake
    keep:
      - clock: {column: received_on, type: date}
        period: P1D
    lifecycle:
      - to: purged
        action: anonymise
        mask: {note: null, subject_key: hash}
"""


def test_a_dataset_over_an_engine_table_is_an_error(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """On main: `check` passed, and `run` hashed the request's subject_key and nulled its note."""
    pack = _pack(tmp_path, OVER_ENGINE)
    loaded = load_file(pack)
    with migrated.begin() as conn:
        subjects.add_request(
            conn,
            subject_key="7",
            received=dt.date(2026, 1, 5),
            pack=loaded.pack,
            note="called on the phone",
            secret=SECRET,
        )
    code, lines = _check(db_url, pack)
    assert code == 2
    assert [line for line in lines if line.startswith("error")] == [
        "error: retention_erasure_requests: is a table of the retention engine itself: a pack cannot retain it "
        "(its own records follow engine_retention); remove the dataset (dataset requests)"
    ]
    with pytest.raises(SchemaError):
        execute.plan(migrated, loaded, AS_OF)
    with pytest.raises(SchemaError):
        execute.run(migrated, loaded, AS_OF, secret=SECRET)
    with migrated.connect() as conn:
        row = conn.execute(sa.select(store.erasure_requests)).one()
    assert (row.subject_key, row.note) == ("7", "called on the phone")


def test_alembic_version_and_any_case_are_engine_tables(tmp_path: Path) -> None:
    from retention.engine.schema import refuse_engine_tables

    for table in ("alembic_version", "RETENTION_LEDGER", "retention_not_yet_created"):
        loaded = load_file(_pack(tmp_path, OVER_ENGINE.replace("retention_erasure_requests", table)))
        assert [f.table for f in refuse_engine_tables(loaded.pack)] == [table]
    loaded = load_file(_pack(tmp_path, OVER_ENGINE.replace("retention_erasure_requests", "retentions")))
    assert refuse_engine_tables(loaded.pack) == []


# --------------------------------------------------------------------------
# Epoch clocks: every numeric column type the docs list
# --------------------------------------------------------------------------

EPOCH_TYPES_ACCEPTED = [
    sa.Integer(),
    sa.BigInteger(),
    sa.SmallInteger(),
    sa.Numeric(12, 2),
    sa.DECIMAL(12, 2),
    sa.Float(),
    sa.REAL(),
    sa.Double(),
    sa.DOUBLE(),
    sa.DOUBLE_PRECISION(),
]
EPOCH_TYPES_REFUSED = [sa.String(20), sa.Text(), sa.DateTime(), sa.Date(), sa.Boolean(), sa.LargeBinary()]


@pytest.mark.parametrize("database", ["postgresql", "mysql", "sqlite"])
def test_epoch_clock_accepts_every_numeric_type(database: str) -> None:
    """The accepted type list, whichever SQLAlchemy (2.0: Float is a Numeric; 2.1: it is not)."""
    dialect = dialect_for(database)
    accepted = [
        type(t).__name__
        for t in EPOCH_TYPES_ACCEPTED
        if _type_ok("epoch", {"type": t}, dialect) is None  # type: ignore[typeddict-item]
    ]
    assert accepted == ["Integer", "BigInteger", "SmallInteger", "Numeric", "DECIMAL", "Float", "REAL", "Double",
                        "DOUBLE", "DOUBLE_PRECISION"]  # fmt: skip
    refused = [t for t in EPOCH_TYPES_REFUSED if _type_ok("epoch", {"type": t}, dialect) is None]  # type: ignore[typeddict-item]
    assert refused == []


def _float_ddl(dialect: str) -> list[str]:
    """Floating-point column types each database declares (PostgreSQL has no bare DOUBLE)."""
    return ["REAL", "DOUBLE PRECISION", "FLOAT"] + ([] if dialect == "postgresql" else ["DOUBLE"])


def test_epoch_clocks_on_floating_point_columns(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """On main (SQLAlchemy 2.1): 'clock column is REAL, which cannot hold a epoch clock' from check, plan and run."""
    dialect = migrated.dialect.name
    old = dt.datetime(2020, 1, 1, tzinfo=UTC).timestamp()
    recent = (AS_OF - dt.timedelta(days=10)).timestamp()
    datasets = ""
    for i, ddl in enumerate(_float_ddl(dialect)):
        table = f"epochs_{i}"
        with migrated.begin() as conn:
            conn.execute(sa.text(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, seen {ddl})"))
            conn.execute(sa.text(f"CREATE INDEX ix_{table} ON {table} (seen)"))
            conn.execute(
                sa.text(f"INSERT INTO {table} (id, seen) VALUES (1, :old), (2, :half), (3, :recent)"),
                {"old": old, "half": old + 0.5, "recent": recent},
            )
        datasets += (
            f"  {table}:\n    table: {table}\n    key: id\n    basis: sessions\n    keep:\n"
            f"      - clock: {{column: seen, type: epoch}}\n        period: P1Y\n"
            f"    lifecycle:\n      - to: purged\n        action: delete\n"
        )
    pack = _pack(tmp_path, datasets)
    assert _check(db_url, pack) == (0, [])
    loaded = load_file(pack)
    tables = [f"epochs_{i}" for i in range(len(_float_ddl(dialect)))]
    planned = execute.plan(migrated, loaded, AS_OF).transitions
    assert {t: dict(planned[t]) for t in tables} == {t: {"active->purged": 2} for t in tables}
    result = execute.run(migrated, loaded, AS_OF, secret=SECRET)
    assert result.status == "succeeded", result.failures
    with migrated.connect() as conn:
        for table in tables:
            assert conn.execute(sa.text(f"SELECT id FROM {table}")).scalars().all() == [3], table


# --------------------------------------------------------------------------
# Mistakes on a WooCommerce-shaped schema (acceptance check 3)
# --------------------------------------------------------------------------

WOO_PACK = """\
  users:
    table: wp_users
    key: ID
    subject_key: ID
    email: user_email
    basis: account
    keep:
      - clock: {aggregate: max, table: wp_usermeta, on: user_id, column: meta_value, type: epoch_text,
                where: {meta_key: META_KEY}}
        period: P2Y
    on_erasure: purged
    lifecycle:
      - to: purged
        action: anonymise
        mask: {user_login: null, user_email: {strategy: fixed, value: deleted@example.invalid}}
  reviews:
    table: wp_comments
    key: comment_ID
    subject_key: user_id
    basis: reviews
    keep:
      - clock: {column: comment_date, type: timestamptz}
        period: P2Y
    on_erasure: purged
    lifecycle:
      - to: purged
        action: delete
  customers:
    table: wp_wc_customer_lookup
    key: customer_id
    subject_key: user_id
    email: email
    where: {user_id: {not: null}}
    basis: customers
    keep:
      - clock: {column: date_last_active, type: timestamp}
        period: P2Y
    on_erasure: purged
    lifecycle:
      - to: purged
        action: delete
"""


def test_check_db_names_each_mistake_planted_in_a_woocommerce_schema(
    engine: sa.Engine, db_url: str, tmp_path: Path
) -> None:
    """On main `check --db` printed none of these lines (only index warnings) and exited 0."""
    from test_schemas import create_schema

    create_schema(engine, "woocommerce")
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO wp_usermeta (umeta_id, user_id, meta_key, meta_value) VALUES (1, 1, :key, :value)"),
            {"key": "wc_last_active", "value": "1600000000"},
        )
    code, lines = _check(db_url, _pack(tmp_path, WOO_PACK.replace("META_KEY", "wc_last_activ")))
    assert code == 2
    local = (
        "error: wp_comments.comment_date: clock column is TIMESTAMP WITHOUT TIME ZONE; declare the clock 'timestamp' "
        "with its timezone (dataset reviews)"
        if engine.dialect.name == "postgresql"
        else "warning: wp_comments.comment_date: declared timestamptz but the column has no time zone and "
        "comment_date_gmt stands beside it: it likely holds local time, read as UTC; use comment_date_gmt, or "
        "declare the clock 'timestamp' with its timezone (dataset reviews)"
    )
    expected = [
        "error: wp_users.user_login: mask 'null' on a NOT NULL column: the run would fail on it; mask it with "
        "'fixed', 'hash' or 'redact', or make the column nullable (dataset users)",
        "warning: wp_usermeta.meta_key: the aggregate clock's where meta_key = 'wc_last_activ' matches none of the "
        "table's rows: the clock is NULL for every record (a NULL anomaly); check the value's spelling (dataset users)",
        local,
        "warning: wp_usermeta.user_id: looks related to wp_users by its name, but no foreign key says so and no "
        "dataset handles wp_usermeta: its rows stay when a person's users records go; add a dataset for "
        "wp_usermeta (follows: {dataset: users}), or a foreign key (dataset users)",
        "warning: wp_wc_customer_lookup.user_id: where user_id is not null: rows where it is NULL are records of "
        "no dataset, so an erasure request never reaches them; add a dataset for them with on_erasure "
        "(dataset customers)",
    ]
    for line in expected:
        assert line in lines, "\n".join(lines)
    assert not any("1600000000" in line for line in lines)  # no value read from the data
    # The correct spelling matches a row: no such warning.
    _, lines = _check(db_url, _pack(tmp_path, WOO_PACK.replace("META_KEY", "wc_last_active")))
    assert not any("matches none" in line for line in lines)
