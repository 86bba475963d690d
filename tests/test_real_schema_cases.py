"""Issue 10, cases 1 to 9: one failing-first test per case, on every database where it applies.

Each test builds the smallest schema that shows the case, written the way a
new user's database looks (no date column on customers, epoch strings in a
meta table, SQLite text datetimes with a 'T', a MariaDB database with a
non-default collation), and asserts what docs/rules.md and the issue say
must happen. Expected values are worked out by hand in the comments, never
taken from the engine. Each docstring quotes the symptom from the issue.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from retention.cli import main
from retention.commands import check as check_command
from retention.commands import explain
from retention.engine import execute
from retention.engine.plan import Batch
from retention.policy import load_file
from retention.store import migrate
from retention.store import tables as store
from retention.store.config import create_engine

SECRET = b"real-schema-cases-key"
ENV = {"RETENTION_PSEUDONYM_KEY": SECRET.decode()}
UTC = dt.UTC

TYPES = {  # {ID} is WordPress's upper-case key column, which PostgreSQL folds unless quoted
    "sqlite": {"ts": "DATETIME", "tstz": "DATETIME", "bool": "BOOLEAN", "text": "TEXT", "ID": '"ID"'},
    "postgresql": {"ts": "TIMESTAMP", "tstz": "TIMESTAMPTZ", "bool": "BOOLEAN", "text": "TEXT", "ID": '"ID"'},
    "mariadb": {"ts": "DATETIME", "tstz": "DATETIME(6)", "bool": "BOOLEAN", "text": "LONGTEXT", "ID": "ID"},
}


def _dialect(engine: sa.Engine) -> str:
    return "mariadb" if engine.dialect.name in ("mysql", "mariadb") else engine.dialect.name


def ddl(engine: sa.Engine, *statements: str) -> None:
    """Run DDL with {ts}, {tstz}, {bool}, {text} and {ID} replaced by this database's spelling."""
    types = TYPES[_dialect(engine)]
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement.format(**types)))


def insert(engine: sa.Engine, table: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    target = sa.table(table, *(sa.column(name) for name in rows[0]))  # quotes "ID" where it must
    with engine.begin() as conn:
        conn.execute(target.insert(), rows)


def write_pack(tmp_path: Path, text: str) -> Path:
    path = tmp_path / f"pack-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(text)
    return path


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=ENV)


def paris(day: str) -> dt.datetime:
    """00:00 Europe/Paris of ``day`` (what ``--as-of YYYY-MM-DD`` means for these packs)."""
    return dt.datetime.fromisoformat(day).replace(tzinfo=ZoneInfo("Europe/Paris")).astimezone(UTC)


def counts(summary_or_result: Any) -> dict[str, dict[str, int]]:
    raw = summary_or_result.transitions if hasattr(summary_or_result, "transitions") else summary_or_result.counts
    return {d: {t: n for t, n in per.items() if n} for d, per in raw.items() if any(per.values())}


def states(engine: sa.Engine, dataset: str) -> dict[str, str]:
    rs = store.record_states
    with engine.connect() as conn:
        return {
            r.record_key: r.state
            for r in conn.execute(sa.select(rs.c.record_key, rs.c.state).where(rs.c.dataset == dataset))
        }


def column(engine: sa.Engine, sql: str) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text(sql)).scalars())


# --------------------------------------------------------------------------
# The shop of cases 1, 2 and 8: customers without dates, invoices, lines
# --------------------------------------------------------------------------

SHOP_DDL = (
    "CREATE TABLE customers (id INTEGER NOT NULL PRIMARY KEY, email VARCHAR(100), name VARCHAR(100),"
    " is_active {bool} NOT NULL)",
    "CREATE TABLE invoices (id INTEGER NOT NULL PRIMARY KEY, customer_id INTEGER NOT NULL, invoice_date DATE NOT NULL,"
    " FOREIGN KEY (customer_id) REFERENCES customers (id))",
    "CREATE INDEX ix_invoices_customer ON invoices (customer_id, invoice_date)",
    "CREATE TABLE invoice_lines (id INTEGER NOT NULL PRIMARY KEY, invoice_id INTEGER NOT NULL, label VARCHAR(100),"
    " FOREIGN KEY (invoice_id) REFERENCES invoices (id))",
    "CREATE INDEX ix_lines_invoice ON invoice_lines (invoice_id)",
)

CUSTOMERS = """
  customers:
    table: customers
    key: id
    subject_key: id
    basis: customer relationship
    keep:
      - clock: {aggregate: max, table: invoices, on: customer_id, column: invoice_date, type: date}
        period: P3Y
    lifecycle:
      - to: inactive
        action: deactivate
        set: {is_active: false}
      - to: archived
        action: archive
        columns: [id, email]
        then: anonymise
        mask: {email: null, name: {strategy: fixed, value: anonymous}}
      - to: purged
        after: P5Y
"""
INVOICES = """
  invoices:
    table: invoices
    key: id
    subject_key: customer_id
    basis: French Code de commerce art. L123-22
    keep:
      - clock: {column: invoice_date, type: date}
        period: P10Y
        anchor: financial_year_end
    lifecycle:
      - to: purged
        action: delete
"""
LINES_VIA = """
  invoice_lines:
    table: invoice_lines
    key: id
    basis: lines go with their invoice
    follows: {dataset: invoices, via: invoice_id, on: {purged: purged}}
    lifecycle:
      - to: purged
        action: delete
"""
HEADER = """
pack: shop
version: "1"
effective_from: 2000-01-01
timezone: Europe/Paris
guard: {max_share: 1.0}
batch_size: 1
datasets:
"""


def build_shop(engine: sa.Engine, *, lines: bool = True) -> None:
    """Four customers and their invoices (and the invoices' lines); no date column on customers.

    customer 1: invoices 2012-03-10 and 2013-07-01 (latest 2013-07-01)
    customer 2: invoice 2020-02-29
    customer 3: no invoice (its clock is NULL)
    customer 4: invoice 2022-06-30
    """
    ddl(engine, *(SHOP_DDL if lines else SHOP_DDL[:3]))
    insert(
        engine,
        "customers",
        [{"id": i, "email": f"c{i}@shop.test", "name": f"Customer {i}", "is_active": True} for i in range(1, 5)],
    )
    insert(
        engine,
        "invoices",
        [
            {"id": 10, "customer_id": 1, "invoice_date": dt.date(2012, 3, 10)},
            {"id": 11, "customer_id": 1, "invoice_date": dt.date(2013, 7, 1)},
            {"id": 20, "customer_id": 2, "invoice_date": dt.date(2020, 2, 29)},
            {"id": 40, "customer_id": 4, "invoice_date": dt.date(2022, 6, 30)},
        ],
    )
    if not lines:
        return
    # Line ids 1..4 equal customer ids on purpose: a follow through the subject
    # key instead of invoice_id would pick lines by customer.
    insert(
        engine,
        "invoice_lines",
        [
            {"id": 1, "invoice_id": 10, "label": "a"},
            {"id": 2, "invoice_id": 10, "label": "b"},
            {"id": 3, "invoice_id": 11, "label": "c"},
            {"id": 4, "invoice_id": 20, "label": "d"},
            {"id": 5, "invoice_id": 40, "label": "e"},
        ],
    )


# --------------------------------------------------------------------------
# Case 1
# --------------------------------------------------------------------------


def test_case1_single_aggregate_clock_plans_and_runs(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """Case 1: "A dataset whose only keep rule is aggregate: max over a related table ... makes plan and run
    exit 1 with KeyError: 'inactive' ... it takes the max over the whole related table"."""
    build_shop(migrated)
    rules = write_pack(tmp_path, HEADER + CUSTOMERS)
    # As of 2024-06-01 (Paris): customer 1's latest invoice 2013-07-01 + P3Y -> inactive and archived
    # due 2016-07-02; purged 5 years after archiving: 2021-07-02. Customer 2: 2020-02-29 + P3Y -> due
    # 2023-03-01 (inactive, archived). Customer 3 has no invoice; customer 4 is due on 2025-07-01.
    # A max over the whole invoices table (2022-06-30) would make nobody due.
    expected = {"customers": {"active->inactive": 2, "inactive->archived": 2, "archived->purged": 1}}
    result = invoke("plan", "--rules", str(rules), "--db", db_url, "--as-of", "2024-06-01", "--format", "json")
    assert result.exit_code == 0, f"plan exited {result.exit_code}: {result.output[-500:]} {result.exception!r}"
    planned = {
        name: {t: v["count"] for t, v in entry["transitions"].items() if v["count"]}
        for name, entry in json.loads(result.output)["datasets"].items()
        if any(v["count"] for v in entry["transitions"].values())
    }
    assert planned == expected
    result = invoke("run", "--rules", str(rules), "--db", db_url, "--as-of", "2024-06-01")
    assert result.exit_code == 0, f"run exited {result.exit_code}: {result.output[-500:]} {result.exception!r}"
    assert states(migrated, "customers") == {"1": "purged", "2": "archived"}


# --------------------------------------------------------------------------
# Case 2
# --------------------------------------------------------------------------


def test_case2_run_applies_the_plan_when_the_clock_table_is_purged(migrated: sa.Engine, tmp_path: Path) -> None:
    """Case 2: "plan says every customer goes active -> inactive -> archived -> purged; run purges the invoices
    first, then sees NULL clocks, moves 0 customers ... and the customer rows stay un-anonymised for ever"."""
    build_shop(migrated, lines=False)
    loaded = load_file(write_pack(tmp_path, HEADER + INVOICES + CUSTOMERS))
    as_of = paris("2031-01-01")
    # Customer 1 (latest invoice 2013-07-01): inactive and archived 2016-07-02, purged 2021-07-02.
    # Customer 2 (2020-02-29): inactive and archived 2023-03-01; the archive's event day is 2023-02-28,
    # + P5Y = 2028-02-28, so purged 2028-02-29. Customer 4 (2022-06-30): inactive and archived
    # 2025-07-01, purged 2030-07-01. Invoices, 10 years from the close of the financial year: 2012 and
    # 2013 -> due 2023-01-01 and 2024-01-01; 2020 -> 2031-01-01; 2022 -> 2033-01-01. So at 2031-01-01
    # invoices 10, 11 and 20 go, and every customer with an invoice is purged.
    expected = {
        "customers": {"active->inactive": 3, "inactive->archived": 3, "archived->purged": 3},
        "invoices": {"active->purged": 3},
    }
    assert counts(execute.plan(migrated, loaded, as_of)) == expected
    result = execute.run(migrated, loaded, as_of, secret=SECRET)
    assert result.status == "succeeded", result.failures
    assert counts(result) == expected
    assert states(migrated, "customers") == {"1": "purged", "2": "purged", "4": "purged"}
    assert column(migrated, "SELECT id FROM customers WHERE email IS NOT NULL ORDER BY id") == [3]
    assert column(migrated, "SELECT id FROM invoices ORDER BY id") == [40]


def test_case2_new_activity_during_the_run_wins(migrated: sa.Engine, tmp_path: Path) -> None:
    """Case 2: "a record which stopped being due while the run was going (the customer logged in or ordered
    at 02:15) must not move: new activity always wins over an older reading"."""
    build_shop(migrated)
    loaded = load_file(write_pack(tmp_path, HEADER + CUSTOMERS))
    as_of = paris("2024-06-01")
    # Customers 1 and 2 are due when the run starts (see case 1). After the run's first batch,
    # customer 2 orders again (an invoice dated on the as-of day): it is no longer due.
    assert counts(execute.plan(migrated, loaded, as_of))["customers"]["active->inactive"] == 2
    ordered: list[int] = []

    def order_again(batch: Batch) -> None:
        if not ordered:
            insert(migrated, "invoices", [{"id": 99, "customer_id": 2, "invoice_date": dt.date(2024, 6, 1)}])
            ordered.append(99)

    result = execute.run(migrated, loaded, as_of, secret=SECRET, on_batch=order_again)
    assert ordered, "the run applied no batch"
    assert result.status == "succeeded", result.failures
    assert states(migrated, "customers") == {"1": "purged"}
    assert column(migrated, "SELECT email FROM customers WHERE id = 2") == ["c2@shop.test"]


def test_case2_check_warns_about_a_clock_read_from_a_purged_table(
    migrated: sa.Engine, db_url: str, tmp_path: Path
) -> None:
    """Case 2: "after such a purge the clock is gone for good, check warns where a dataset's clock reads a table
    another dataset deletes from, and suggests a fallback clock"."""
    build_shop(migrated, lines=False)
    rules = write_pack(tmp_path, HEADER + INVOICES + CUSTOMERS)
    report = check_command(rules, db_url)
    warnings = [
        f
        for f in report.findings
        if f.level == "warning" and f.dataset == "customers" and "invoices" in f"{f.table} {f.message}"
    ]
    assert warnings, [str(f) for f in report.findings]
    assert any("fallback" in f.message.lower() for f in warnings), [str(f) for f in warnings]


# --------------------------------------------------------------------------
# Case 3
# --------------------------------------------------------------------------

CASE3 = """
pack: case3
version: "1"
effective_from: 2000-01-01
timezone: Europe/Paris
guard: {max_share: 1.0}
datasets:
  accounts:
    table: accounts
    key: id
    subject_key: id
    basis: account
    keep:
      - clock: {column: last_seen, type: date}
        period: P1Y
    lifecycle:
      - to: inactive
        action: deactivate
        set: {is_active: false}
  orders:
    table: orders
    key: id
    subject_key: account_id
    basis: orders
    keep:
      - clock: {column: created_on, type: date}
        period: P1Y
    follows: {dataset: accounts, on: {inactive: purged}}
    lifecycle:
      - to: purged
        action: delete
"""


def test_case3_keep_and_follows_count_each_record_once(migrated: sa.Engine, tmp_path: Path) -> None:
    """Case 3: "plan over-counts a dataset that has both keep and follows: rows due both ways are counted
    twice (2051 planned vs 1082 moved at one as-of)"."""
    ddl(
        migrated,
        "CREATE TABLE accounts (id INTEGER NOT NULL PRIMARY KEY, last_seen DATE, is_active {bool} NOT NULL)",
        "CREATE TABLE orders (id INTEGER NOT NULL PRIMARY KEY, account_id INTEGER, created_on DATE)",
    )
    insert(
        migrated,
        "accounts",
        [
            {"id": 1, "last_seen": dt.date(2020, 1, 15), "is_active": True},  # inactive 2021-01-16
            {"id": 2, "last_seen": dt.date(2024, 5, 1), "is_active": True},  # not due
        ],
    )
    insert(
        migrated,
        "orders",
        [
            {"id": 1, "account_id": 1, "created_on": dt.date(2019, 3, 1)},  # due by its clock and by follow
            {"id": 2, "account_id": 1, "created_on": dt.date(2024, 4, 1)},  # due by follow only
            {"id": 3, "account_id": 1, "created_on": dt.date(2018, 7, 7)},  # due both ways
            {"id": 4, "account_id": 2, "created_on": dt.date(2020, 8, 8)},  # due by its clock only
            {"id": 5, "account_id": 2, "created_on": dt.date(2024, 4, 2)},  # not due
        ],
    )
    loaded = load_file(write_pack(tmp_path, CASE3))
    as_of = paris("2024-06-01")
    expected = {"accounts": {"active->inactive": 1}, "orders": {"active->purged": 4}}
    assert counts(execute.plan(migrated, loaded, as_of)) == expected
    result = execute.run(migrated, loaded, as_of, secret=SECRET)
    assert counts(result) == expected
    assert column(migrated, "SELECT id FROM orders") == [5]


# --------------------------------------------------------------------------
# Case 4
# --------------------------------------------------------------------------

WOO_USERS = """
pack: woo
version: "1"
effective_from: 2000-01-01
timezone: Europe/Amsterdam
guard: {max_share: 1.0}
datasets:
  users:
    table: wp_users
    key: ID
    subject_key: ID
    basis: customer relationship
    keep:
      - clock:
          aggregate: max
          table: wp_usermeta
          on: user_id
          column: meta_value
          type: epoch_text
          where: {meta_key: wc_last_active}
        period: P2Y
      - clock: {column: user_registered, type: timestamp}
        period: P2Y
    lifecycle:
      - to: purged
        action: anonymise
        mask: {user_email: {strategy: fixed, value: deleted@invalid}, display_name: {strategy: fixed, value: deleted}}
"""
WP_DDL = (
    "CREATE TABLE wp_users ({ID} BIGINT NOT NULL PRIMARY KEY, user_login VARCHAR(60) NOT NULL,"
    " user_email VARCHAR(100) NOT NULL, user_registered {ts} NOT NULL, display_name VARCHAR(250) NOT NULL)",
    "CREATE TABLE wp_usermeta (umeta_id BIGINT NOT NULL PRIMARY KEY, user_id BIGINT NOT NULL,"
    " meta_key VARCHAR(255), meta_value {text})",
    "CREATE INDEX ix_usermeta_user ON wp_usermeta (user_id)",
)


def test_case4_invalid_value_inside_an_aggregate_clock_is_an_anomaly(
    migrated: sa.Engine, db_url: str, tmp_path: Path
) -> None:
    """Case 4: "a user whose only meta value is garbage reads as NULL and is moved by the record's other clock
    (deleted on the lookup date alone)"; it must be an `invalid` anomaly that never moves, counted by plan,
    and explain shows the offending value's kind (not the value)."""
    ddl(migrated, *WP_DDL)
    insert(
        migrated,
        "wp_users",
        [
            {
                "ID": i,
                "user_login": f"user{i}",
                "user_email": f"u{i}@shop.test",
                "user_registered": dt.datetime(2015, 3, 10, 10),
                "display_name": f"User {i}",
            }
            for i in (1, 2)
        ],
    )
    insert(
        migrated,
        "wp_usermeta",
        [
            {"umeta_id": 1, "user_id": 1, "meta_key": "wc_last_active", "meta_value": "not-a-timestamp"},
            {"umeta_id": 2, "user_id": 1, "meta_key": "wp_capabilities", "meta_value": 'a:1:{s:8:"customer";b:1;}'},
            {"umeta_id": 3, "user_id": 2, "meta_key": "wc_last_active", "meta_value": "1483228800"},  # 2017-01-01
        ],
    )
    rules = write_pack(tmp_path, WOO_USERS)
    loaded = load_file(rules)
    as_of = paris("2024-06-01")
    summary = execute.plan(migrated, loaded, as_of)
    # User 2: max(2017-01-01 + P2Y, 2015-03-10 + P2Y) -> due 2019-01-02. User 1: invalid, never moves.
    assert counts(summary) == {"users": {"active->purged": 1}}
    assert summary.anomalies["users"].get("invalid") == 1, summary.anomalies
    result = invoke("explain", "--rules", str(rules), "--db", db_url, "--dataset", "users", "--key", "1")
    assert result.exit_code == 0, result.output
    assert "invalid" in result.output
    assert "not-a-timestamp" not in result.output
    run = execute.run(migrated, loaded, as_of, secret=SECRET)
    assert counts(run) == {"users": {"active->purged": 1}}
    assert states(migrated, "users") == {"2": "purged"}


# --------------------------------------------------------------------------
# Case 5
# --------------------------------------------------------------------------

CASE5 = """
pack: case5
version: "1"
effective_from: 2000-01-01
timezone: Europe/Paris
guard: {max_share: 1.0}
datasets:
  visits:
    table: visits
    key: id
    basis: visits
    keep:
      - clock: {column: at, type: timestamptz}
        period: P3Y
    lifecycle:
      - to: purged
        action: delete
"""


@pytest.mark.only_on("sqlite")
def test_case5_sqlite_text_datetimes_evaluate_as_explain_does(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """Case 5: "SQLite text datetimes with a T separator (2020-02-29T09:00:00, with or without an offset) are
    compared as strings: plan/run fall due one day late while explain is right"."""
    ddl(migrated, "CREATE TABLE visits (id INTEGER NOT NULL PRIMARY KEY, at DATETIME)")
    # Local date in Europe/Paris (UTC+1 in winter) of each value:
    values = {
        1: "2020-02-29T09:00:00",  # 09:00 UTC -> 29 Feb
        2: "2020-02-29 09:00:00",  # 29 Feb
        3: "2020-02-29T22:30:00Z",  # 23:30 Paris -> 29 Feb
        4: "2020-02-29T23:30:00+01:00",  # 22:30 UTC -> 23:30 Paris -> 29 Feb
        5: "2020-02-29T23:30:00-02:00",  # 01:30 UTC on 1 Mar -> 02:30 Paris -> 1 Mar
        6: "2020-02-29T23:30",  # 23:30 UTC -> 00:30 Paris on 1 Mar
        7: "2020-02-29T09:00:00.250",  # 29 Feb
    }
    insert(migrated, "visits", [{"id": k, "at": v} for k, v in values.items()])
    # 29 Feb 2020 + P3Y: kept through 28 Feb 2023, due 1 Mar 2023 00:00 Paris; 1 Mar is due a day later.
    rules = write_pack(tmp_path, CASE5)
    loaded = load_file(rules)
    as_of = paris("2023-03-01") + dt.timedelta(minutes=1)
    assert counts(execute.plan(migrated, loaded, as_of)) == {"visits": {"active->purged": 5}}
    for key in values:
        due_now = explain(rules, db_url, "visits", str(key), as_of.isoformat()).due_now
        assert [d["transition"] for d in due_now] == ([] if key in (5, 6) else ["active->purged"]), key
    result = execute.run(migrated, loaded, as_of, secret=SECRET)
    assert counts(result) == {"visits": {"active->purged": 5}}
    assert sorted(column(migrated, "SELECT id FROM visits")) == [5, 6]


# --------------------------------------------------------------------------
# Case 6
# --------------------------------------------------------------------------


@pytest.mark.only_on("mariadb")
def test_case6_non_default_collation_plans_and_runs(collated_db_url: str, tmp_path: Path) -> None:
    """Case 6: "A database created with COLLATE utf8mb4_unicode_520_ci ... makes plan exit 1 with Illegal mix
    of collations (1267) ... run applies its moves, then reports every dataset FAILED (exit 3) on every run"."""
    engine = create_engine(collated_db_url)
    try:
        migrate.upgrade(engine)
        build_shop(engine, lines=False)
        rules = write_pack(tmp_path, HEADER + INVOICES + CUSTOMERS)
        with engine.begin() as conn:  # a hold and an erasure request: string comparisons with engine tables
            conn.execute(
                store.holds.insert().values(
                    scope="subject", subject_key="4", reason="case", placed_by="t", placed_at=dt.datetime.now(UTC)
                )
            )
        for as_of in ("2024-06-01", "2031-01-01"):
            result = invoke("plan", "--rules", str(rules), "--db", collated_db_url, "--as-of", as_of)
            assert result.exit_code == 0, f"plan {as_of}: {result.output[-800:]} {result.exception!r}"
            assert "Illegal mix" not in result.output
            result = invoke("run", "--rules", str(rules), "--db", collated_db_url, "--as-of", as_of)
            assert result.exit_code == 0, f"run {as_of}: {result.output[-800:]} {result.exception!r}"
        # 2024-06-01: customers 1 (purged) and 2 (archived); invoices 10 and 11 (2012, 2013).
        # 2031-01-01: customer 2 purged, invoice 20 purged; customer 4 is held.
        assert states(engine, "customers") == {"1": "purged", "2": "purged"}
        assert column(engine, "SELECT id FROM invoices ORDER BY id") == [40]
    finally:
        engine.dispose()


# --------------------------------------------------------------------------
# Case 7
# --------------------------------------------------------------------------

CASE7 = """
pack: case7
version: "1"
effective_from: 2000-01-01
timezone: Europe/Paris
guard: {max_share: 1.0}
datasets:
  accounts:
    table: accounts
    key: id
    subject_key: id
    basis: account
    keep:
      - clock: {column: last_seen, type: timestamp}
        period: P1Y
    lifecycle:
      - to: inactive
        action: deactivate
        set: {is_active: false}
  sessions:
    table: sessions
    key: id
    subject_key: account_id
    basis: sessions
    follows: {dataset: accounts, on: {inactive: purged}}
    lifecycle:
      - to: purged
        action: delete
"""


def _case7_schema(engine: sa.Engine) -> None:
    ddl(
        engine,
        "CREATE TABLE accounts (id INTEGER NOT NULL PRIMARY KEY, last_seen {ts}, is_active {bool} NOT NULL)",
        "CREATE TABLE sessions (id INTEGER NOT NULL PRIMARY KEY, account_id INTEGER NOT NULL)",
    )


@pytest.mark.only_on("sqlite")  # MariaDB returns zero dates as text, which explain already reads
def test_case7_explain_a_zero_date(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """Case 7: "explain crashes with a raw ValueError: year 0 is out of range on a SQLite zero date (even
    without --traceback)"."""
    _case7_schema(migrated)
    with migrated.begin() as conn:
        conn.execute(sa.text("INSERT INTO accounts VALUES (1, '0000-00-00 00:00:00', 1)"))
    rules = write_pack(tmp_path, CASE7)
    result = invoke("explain", "--rules", str(rules), "--db", db_url, "--dataset", "accounts", "--key", "1")
    assert result.exit_code == 0, f"{result.output[-500:]} {result.exception!r}"
    assert "Traceback" not in result.output
    assert "zero" in result.output


def test_case7_explain_a_follower_record(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """Case 7: explain "answers 'no such record in the source table' for every record of a follows dataset"."""
    _case7_schema(migrated)
    insert(migrated, "accounts", [{"id": 1, "last_seen": dt.datetime(2024, 1, 1, 12), "is_active": True}])
    insert(migrated, "sessions", [{"id": 7, "account_id": 1}])
    rules = write_pack(tmp_path, CASE7)
    result = invoke(
        "explain", "--rules", str(rules), "--db", db_url, "--dataset", "sessions", "--key", "7", "--as-of", "2024-06-01"
    )
    assert result.exit_code == 0, f"{result.output[-500:]} {result.exception!r}"
    assert "no such record" not in result.output
    assert "state: active" in result.output


# --------------------------------------------------------------------------
# Case 8
# --------------------------------------------------------------------------


def test_case8_lines_follow_their_invoice_via_its_column(migrated: sa.Engine, tmp_path: Path) -> None:
    """Case 8: "follows can only join on subject_key. A child that follows a non-person parent (invoice lines
    follow their invoice) has to misuse subject_key; ... plan lists the wrong lines"."""
    build_shop(migrated)
    loaded = load_file(write_pack(tmp_path, HEADER + INVOICES + LINES_VIA))
    as_of = paris("2024-06-01")
    # Invoices 10 (2012) and 11 (2013) are due on 2023-01-01 and 2024-01-01: their lines 1, 2 and 3 go.
    expected = {"invoices": {"active->purged": 2}, "invoice_lines": {"active->purged": 3}}
    assert counts(execute.plan(migrated, loaded, as_of)) == expected
    result = execute.run(migrated, loaded, as_of, secret=SECRET)
    assert result.status == "succeeded", result.failures
    assert counts(result) == expected
    assert column(migrated, "SELECT id FROM invoice_lines ORDER BY id") == [4, 5]


def test_case8_check_verifies_via_against_live_foreign_keys(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """Case 8: `via` is "checked against the live foreign keys by check --db" (a warning when no constraint exists)."""
    build_shop(migrated)
    ddl(migrated, "CREATE TABLE loose_lines (id INTEGER NOT NULL PRIMARY KEY, invoice_id INTEGER NOT NULL)")
    rules = write_pack(tmp_path, HEADER + INVOICES + LINES_VIA + LINES_VIA.replace("invoice_lines", "loose_lines"))
    report = check_command(rules, db_url)
    assert not report.errors, [str(f) for f in report.errors]
    about_via = [f for f in report.findings if f.level == "warning" and "foreign key" in f.message.lower()]
    assert [f.dataset for f in about_via] == ["loose_lines"], [str(f) for f in report.findings]


# --------------------------------------------------------------------------
# Case 9
# --------------------------------------------------------------------------


def test_case9_erasure_for_an_unknown_subject_says_so(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """Case 9: "erasure add for a subject found in no dataset is accepted and later marked processed without a
    word: warn when the request is added (with --db), and record 'no records found' on the request and in its
    ledger entry"."""
    build_shop(migrated, lines=False)
    rules = write_pack(tmp_path, HEADER + INVOICES + CUSTOMERS)
    result = invoke(
        "erasure", "add", "--rules", str(rules), "--db", db_url, "--subject", "999", "--received", "2024-05-02"
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == (
        "warning: no dataset holds a record of this subject; request 1 will be processed with the outcome "
        "'no records found' (check the id)"
    )
    assert "999" not in result.output  # the id is not echoed back
    assert invoke("run", "--rules", str(rules), "--db", db_url, "--as-of", "2024-06-01").exit_code == 0
    er, lg = store.erasure_requests, store.ledger
    with migrated.connect() as conn:
        request = conn.execute(sa.select(er)).one()
        entries = [
            r for r in conn.execute(sa.select(lg.c.transition, lg.c.detail)) if r.detail and "erasure" in r.detail
        ]
    assert (request.status, request.outcome) == ("processed", "no records found"), dict(request._mapping)
    assert any(
        json.loads(e.detail).get("erasure_request") == request.id and "no records found" in e.detail.lower()
        for e in entries
    ), entries
