"""A dataset's ``where``: only matching rows are its records, in every pass, on every database.

Expected sets are computed in this file from the rows it writes, with a
plain Python predicate (:func:`is_record`), never by the engine's filter.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from retention.cli import main
from retention.commands import explain
from retention.engine import execute
from retention.errors import PackError
from retention.policy import LoadedPack, load_file
from retention.store import tables as store
from retention.subjects import events as subjects

UTC = dt.UTC
SECRET = b"where-test-key"

PACK = """\
pack: where
version: "1"
effective_from: 2020-01-01
timezone: UTC
guard: {max_share: 1.0}
datasets:
  accounts:
    table: accounts
    key: id
    subject_key: id
    basis: policy
    where:
      kind: {not: admin}
      score: {ge: 10}
      related:
        table: account_meta
        on: account_id
        where: {meta_key: role, meta_value: {contains: '"customer"'}}
    keep:
      - clock: {column: last_seen, type: timestamptz}
        period: P1Y
    on_erasure: purged
    lifecycle:
      - to: inactive
        action: deactivate
        set: {disabled: 1}
      - to: purged
        after: P10Y
        action: delete
"""

CUSTOMER = 'a:1:{s:8:"customer";b:1;}'
OLD = dt.datetime(2020, 5, 1, 12, tzinfo=UTC)
FUTURE = dt.datetime(2060, 1, 1, tzinfo=UTC)
# id, kind, score, (meta_key, meta_value) or None, last_seen
ROWS: list[tuple[int, str | None, int | None, tuple[str, str] | None, dt.datetime | None]] = [
    (1, "customer", 10, ("role", CUSTOMER), OLD),  # a record: every condition holds (score at the bound)
    (2, "admin", 50, ("role", CUSTOMER), OLD),  # kind admin
    (3, None, 20, ("role", CUSTOMER), OLD),  # NULL kind: `not: admin` keeps NULL
    (4, "customer", 9, ("role", CUSTOMER), OLD),  # score below 10
    (5, "customer", None, ("role", CUSTOMER), OLD),  # NULL score: no comparison holds
    (6, "customer", 30, ("role", 'a:1:{s:12:"shop_manager";b:1;}'), OLD),  # another role
    (7, "customer", 30, ("nickname", CUSTOMER), OLD),  # the text under another meta key
    (8, "customer", 30, None, OLD),  # no meta row at all
    (9, "customer", 30, ("role", CUSTOMER), None),  # a record with a NULL clock: an anomaly
    (10, "admin", 30, ("role", CUSTOMER), None),  # NULL clock, but not a record: no anomaly
    (11, "customer", 40, ("role", CUSTOMER), FUTURE),  # a record, a future clock
    (12, "customer", 40, ("role", CUSTOMER), FUTURE),  # a record, erased in run 1
    (13, "admin", 40, ("role", CUSTOMER), FUTURE),  # not a record, erasure has no effect
]


def is_record(kind: str | None, score: int | None, meta: tuple[str, str] | None) -> bool:
    """The pack's where, read by hand."""
    return (
        kind != "admin"
        and score is not None
        and score >= 10
        and meta is not None
        and meta[0] == "role"
        and '"customer"' in meta[1]
    )


def create(engine: sa.Engine) -> None:
    md = sa.MetaData()
    accounts = sa.Table(
        "accounts",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(20)),
        sa.Column("score", sa.Integer),
        sa.Column("disabled", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_seen", sa.DateTime(timezone=True), index=True),
    )
    meta = sa.Table(
        "account_meta",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("account_id", sa.Integer, index=True),
        sa.Column("meta_key", sa.String(255)),
        sa.Column("meta_value", sa.Text),
    )
    md.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            accounts.insert(),
            [{"id": i, "kind": k, "score": s, "disabled": 0, "last_seen": seen} for i, k, s, _, seen in ROWS],
        )
        conn.execute(
            meta.insert(),
            [
                {"id": i, "account_id": i, "meta_key": m[0], "meta_value": m[1]}
                for i, _, _, m, _ in ROWS
                if m is not None
            ],
        )


def write(tmp_path: Path, text: str = PACK) -> Path:
    path = tmp_path / "where.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def plan_and_run(engine: sa.Engine, loaded: LoadedPack, as_of: dt.datetime) -> tuple[Any, Any, dict[str, list[str]]]:
    """(plan summary, run result, keys plan listed per transition)."""
    listed: dict[str, list[str]] = {}

    def collect(batch: execute.Batch) -> None:
        for b in [batch, *batch.followers]:
            for frm, to, moves in b.transitions():
                listed.setdefault(f"{frm}->{to}", []).extend(m.record_key for m in moves)

    summary = execute.plan(engine, loaded, as_of)
    execute.plan(engine, loaded, as_of, on_batch=collect)
    result = execute.run(engine, loaded, as_of, secret=SECRET)
    return summary, result, {k: sorted(v, key=int) for k, v in listed.items()}


def states(engine: sa.Engine) -> dict[str, str]:
    rs = store.record_states
    with engine.connect() as conn:
        rows = conn.execute(sa.select(rs.c.record_key, rs.c.state).where(rs.c.dataset == "accounts")).all()
    return {r.record_key: r.state for r in rows}


def test_only_matching_rows_move_and_count(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """Excluded rows never move, are no anomaly, resist erasure; a record that stops matching stays."""
    create(migrated)
    loaded = load_file(write(tmp_path))
    with migrated.begin() as conn:
        for subject in ("12", "13"):
            subjects.add_request(conn, subject_key=subject, received=dt.date(2024, 1, 1), pack=loaded.pack)
    as_of = dt.datetime(2024, 6, 1, tzinfo=UTC)
    records = {str(i) for i, k, s, m, _ in ROWS if is_record(k, s, m)}
    due = {str(i) for i, _, _, _, seen in ROWS if seen is not None and seen + dt.timedelta(days=366) < as_of}
    erased = {"12", "13"} & records
    moved = sorted((records & due) | erased, key=int)
    assert moved == ["1", "3", "12"]  # the hand reading of the table above

    summary, result, listed = plan_and_run(migrated, loaded, as_of)
    expected = {"active->inactive": len(moved), "inactive->purged": len(erased)}
    assert summary.transitions["accounts"] == expected
    assert result.counts["accounts"] == expected
    assert listed == {"active->inactive": moved, "inactive->purged": sorted(erased)}
    # null: 9, not 10; future: 11 and 12 (still active when plan counts), not 13.
    assert {k: v for k, v in summary.anomalies["accounts"].items() if v} == {"null": 1, "future": 2}
    assert states(migrated) == {"1": "inactive", "3": "inactive"}
    with migrated.connect() as conn:
        left = set(conn.execute(sa.text("SELECT id FROM accounts")).scalars())
        disabled = set(conn.execute(sa.text("SELECT id FROM accounts WHERE disabled = 1")).scalars())
    assert left == {i for i, *_ in ROWS} - {12}
    assert disabled == {1, 3}

    # Record 1 stops matching (it becomes an administrator); record 4 starts to.
    with migrated.begin() as conn:
        conn.execute(sa.text("UPDATE accounts SET kind = 'admin' WHERE id = 1"))
        conn.execute(sa.text("UPDATE accounts SET score = 15 WHERE id = 4"))
    later = dt.datetime(2040, 1, 1, tzinfo=UTC)
    summary, result, listed = plan_and_run(migrated, loaded, later)
    # 3 is purged 10 years after entering inactive (2021-05-02); 1 stays inactive although its
    # 10 years are over too; 4, due since 2021-05-02 by its clock, goes through both states now.
    expected = {"active->inactive": 1, "inactive->purged": 2}
    assert summary.transitions["accounts"] == expected
    assert result.counts["accounts"] == expected
    assert listed == {"active->inactive": ["4"], "inactive->purged": ["3", "4"]}
    assert states(migrated) == {"1": "inactive"}

    admin = explain(write(tmp_path), db_url, "accounts", "2", "2040-01-01")
    assert admin.excluded and admin.state == "active" and not admin.due_now and admin.next_transition is None
    stuck = explain(write(tmp_path), db_url, "accounts", "1", "2040-01-01")
    assert stuck.excluded and stuck.state == "inactive" and stuck.next_transition is None
    assert not explain(write(tmp_path), db_url, "accounts", "11", "2040-01-01").excluded
    out = CliRunner().invoke(
        main,
        ["explain", "--rules", str(write(tmp_path)), "--db", db_url, "--dataset", "accounts", "--key", "1"],
    )
    assert out.exit_code == 0, out.output
    assert "excluded by where: not a record of dataset accounts; stays inactive" in out.output


def test_contains_is_a_bound_pattern(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """``contains`` treats % and _ as text, and a quote in a value is only a value."""
    create(migrated)
    with migrated.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO account_meta (id, account_id, meta_key, meta_value) VALUES (101, 1, 'x', '50%')")
        )
        conn.execute(
            sa.text("INSERT INTO account_meta (id, account_id, meta_key, meta_value) VALUES (102, 3, 'x', '500')")
        )
    text = PACK.replace(
        "where: {meta_key: role, meta_value: {contains: '\"customer\"'}}",
        "where: {meta_key: \"x'); DROP TABLE accounts; --\", meta_value: {contains: '0%'}}",
    )
    assert text != PACK
    loaded = load_file(write(tmp_path, text))
    summary = execute.plan(migrated, loaded, dt.datetime(2024, 6, 1, tzinfo=UTC))
    assert summary.transitions["accounts"] == {}
    text = text.replace("DROP TABLE accounts; --", "").replace('"x\'); "', "x")
    text = text.replace('meta_key: "x\'); ", ', "meta_key: x, ")
    loaded = load_file(write(tmp_path, text))
    summary = execute.plan(migrated, loaded, dt.datetime(2024, 6, 1, tzinfo=UTC))
    assert summary.transitions["accounts"] == {"active->inactive": 1}  # 1 ('50%'), not 3 ('500')
    with migrated.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM accounts")).scalar_one() == len(ROWS)


@pytest.mark.parametrize(
    ("where", "line", "message"),
    [
        ("{kind: {like: x}}", 12, "datasets.accounts.where.kind.like: unknown operator 'like'; valid: not, lt, le"),
        ("{kind: []}", 12, "datasets.accounts.where.kind: an empty list matches no row"),
        ("{score: {lt: true}}", 12, "datasets.accounts.where.score.lt: a boolean has no order"),
        ("{kind: {contains: 5}}", 12, "datasets.accounts.where.kind.contains: 'contains' takes a non-empty text"),
        ("{related: {table: m}}", 12, "datasets.accounts.where.related: a related condition needs 'on'"),
        (
            "{related: [{table: m, on: a, when: {}}]}",
            12,
            "where.related[0].when: unknown key 'when'; valid: table, on, references, where, exists",
        ),
        ("{}", 12, "datasets.accounts.where: an empty 'where' selects every row; remove it"),
    ],
)
def test_grammar_errors_name_file_and_line(tmp_path: Path, where: str, line: int, message: str) -> None:
    """A malformed ``where`` is refused at load time with the pack's file and line."""
    text = PACK.replace(PACK[PACK.index("    where:\n") : PACK.index("    keep:\n")], f"    where: {where}\n")
    path = write(tmp_path, text)
    with pytest.raises(PackError) as err:
        load_file(path)
    assert str(err.value).startswith(f"{path}:{line}: "), str(err.value)
    assert message in str(err.value)


def test_block_style_errors_point_at_the_condition(tmp_path: Path) -> None:
    """In block style the line is the condition's own line."""
    path = write(tmp_path, PACK.replace("score: {ge: 10}", "score: {ge: [1, 2]}"))
    with pytest.raises(PackError) as err:
        load_file(path)
    assert str(err.value) == (
        f"{path}:14: datasets.accounts.where.score.ge: expected a text, number, boolean or date, not list"
    )


def test_where_leaves_digest_of_old_packs_alone(tmp_path: Path) -> None:
    """A pack without ``where`` keeps its digest (the key is left out of the dump while unset)."""
    text = PACK.replace(PACK[PACK.index("    where:\n") : PACK.index("    keep:\n")], "")
    loaded = load_file(write(tmp_path, text))
    assert "where" not in loaded.pack.model_dump(by_alias=True)["datasets"]["accounts"]


def test_drop_partition_refuses_where(tmp_path: Path) -> None:
    """A partition drop removes every row, so it cannot honour a row filter."""
    text = PACK.replace("    lifecycle:\n", "    partitioned: true\n    lifecycle:\n").replace(
        "        after: P10Y\n        action: delete\n", "        after: P10Y\n        action: drop_partition\n"
    )
    with pytest.raises(PackError, match="'drop_partition' drops every row of a partition, so it cannot honour"):
        load_file(write(tmp_path, text))


def check(db_url: str, pack: Path) -> tuple[int, list[str]]:
    result = CliRunner().invoke(main, ["check", "--rules", str(pack), "--db", db_url])
    return result.exit_code, [line for line in result.output.splitlines() if not line.startswith("ok: ")]


def test_check_db_accepts_the_pack(engine: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """Tables, columns and typed values all fit: no finding."""
    create(engine)
    assert check(db_url, write(tmp_path)) == (0, [])


@pytest.mark.parametrize(
    ("old", "new", "finding"),
    [
        ("kind: {not: admin}", "kynd: {not: admin}", "error: accounts.kynd: no such column (where); columns: id, kind"),
        (
            "score: {ge: 10}",
            "score: {ge: ten}",
            "error: accounts.score: where: is INTEGER; the value 'ten' does not fit",
        ),
        ("kind: {not: admin}", "kind: 5", "error: accounts.kind: where: is VARCHAR(20); the value 5 does not fit"),
        ("score: {ge: 10}", "score: {contains: '1'}", "'contains' applies to text columns only"),
        ("table: account_meta", "table: account_metas", "error: account_metas: table does not exist (where related)"),
        ("on: account_id", "on: account", "error: account_meta.account: no such column (where related on)"),
        ("meta_key: role,", "meta_kee: role,", "error: account_meta.meta_kee: no such column (where)"),
        ("set: {disabled: 1}", "set: {kind: retired}", "warning: accounts.kind: a lifecycle step changes this column"),
    ],
)
def test_check_db_names_table_and_column(
    engine: sa.Engine, db_url: str, tmp_path: Path, old: str, new: str, finding: str
) -> None:
    """Each schema problem of a ``where`` is one finding naming table.column."""
    create(engine)
    assert old in PACK
    code, lines = check(db_url, write(tmp_path, PACK.replace(old, new, 1)))
    assert any(line.startswith(finding) or finding in line for line in lines), lines
    assert code == (0 if finding.startswith("warning") else 2)
