"""A separate archive store: bound to its main database, and nothing leaves it without a ledger entry.

The adversarial review pointed a run with ``--archive-db`` at the wrong main
database (one never run): its sweep saw every payload as an orphan and
deleted the whole shared archive before the guard stopped the run. Now the
store is bound to the main database on first use and refuses another, the
binding is checked before any payload moves, and the sweep removes only
payloads whose purge the main database's ledger records.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from conftest import MARIADB_COLLATION, isolated_database, migrate_isolated
from sqlalchemy.engine import make_url

from retention.cli import main
from retention.engine import execute
from retention.engine.archive import SeparateArchive, archive_owner
from retention.errors import ConfigError
from retention.policy import load_file
from retention.store import tables as store
from retention.store.config import create_engine

SECRET = "archive-test-key"
ENV = {"RETENTION_PSEUDONYM_KEY": SECRET}


def archive_pack(name: str, dataset: str, columns: str, head: str = "") -> str:
    """A pack whose one dataset (its table of the same name, key ``id``) is archived a year after ``seen``, the
    ``columns`` kept and the row deleted, and its payload purged a year after that; ``head``: more top-level lines.
    """
    return f"""
pack: {name}
version: "1"
effective_from: 2020-01-01
timezone: UTC
guard: {{max_share: 1.0}}
{head}datasets:
  {dataset}:
    table: {dataset}
    key: id
    basis: policy
    keep:
      - clock: {{column: seen, type: timestamp}}
        period: P1Y
    lifecycle:
      - to: archived
        action: archive
        columns: [{columns}]
        then: delete
      - to: purged
        after: P1Y
"""


PACK = archive_pack("archive", "customers", "id, email")


def build(engine: sa.Engine, customers: int = 10) -> None:
    """Customers last seen in 2020: archived at 2021-06-01, their payloads purged at 2023-01-01."""
    migrate_isolated(engine)
    md = sa.MetaData()
    table = sa.Table(
        "customers",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("email", sa.String(100)),
        sa.Column("seen", sa.DateTime),
    )
    md.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            table.insert(),
            [{"id": i, "email": f"c{i}@example.com", "seen": dt.datetime(2020, 3, 1)} for i in range(1, customers + 1)],
        )


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, ["--log-format", "json", *args], env=ENV, prog_name="retention")


def payloads(url: str) -> list[tuple[str, str]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return sorted((r.dataset, r.record_key) for r in conn.execute(sa.select(store.archive)))
    finally:
        engine.dispose()


def test_an_archive_store_refuses_another_main_database(
    migrated: sa.Engine, db_url: str, dialect: str, tmp_path: Path
) -> None:
    """The store is bound to the main database that used it first; a run on another (never run) is refused
    with one line and exit 2, and every payload is still there."""
    build(migrated)
    pack = tmp_path / "archive.yaml"
    pack.write_text(PACK, encoding="utf-8")
    with isolated_database(dialect, tmp_path) as archive_url, isolated_database(dialect, tmp_path) as other_url:
        first = invoke(
            "run", "--rules", str(pack), "--db", db_url, "--archive-db", archive_url, "--as-of", "2021-06-01"
        )
        assert first.exit_code == 0, first.output
        kept = payloads(archive_url)
        assert kept == [("customers", str(i)) for i in sorted(range(1, 11), key=str)]

        other = create_engine(other_url)
        build(other)
        with other.connect() as conn:
            other_id = conn.execute(sa.select(store.identity.c.value)).scalar()
        assert other_id is None  # never run
        wrong = invoke(
            "run", "--rules", str(pack), "--db", other_url, "--archive-db", archive_url, "--as-of", "2023-01-01"
        )
        assert wrong.exit_code == 2
        with migrated.connect() as conn:
            main_id = conn.execute(sa.select(store.identity.c.value)).scalar_one()
        with other.connect() as conn:
            other_id = conn.execute(sa.select(store.identity.c.value)).scalar_one()
        shown = make_url(archive_url).render_as_string(hide_password=True)
        # With --log-format json the error is a log event like every other line.
        failed = [json.loads(line) for line in wrong.stderr.splitlines() if '"command_failed"' in line]
        assert [(e["error"], e["exit_code"]) for e in failed] == [
            (
                f"the archive database {shown} belongs to another main database (id {main_id[:12]}, this one "
                f"is {other_id[:12]}); refusing to use it",
                2,
            )
        ]
        assert payloads(archive_url) == kept  # nothing left the archive
        other.dispose()

        right = invoke(
            "run", "--rules", str(pack), "--db", db_url, "--archive-db", archive_url, "--as-of", "2023-01-01"
        )
        assert right.exit_code == 0, right.output
        assert payloads(archive_url) == []


class CrashBeforeArchiveCleanup(SeparateArchive):
    """The process dies after the purge committed and before the payloads were deleted."""

    def after_commit(self) -> None:
        self._pending.clear()


def test_the_sweep_removes_only_payloads_whose_purge_the_ledger_records(
    migrated: sa.Engine, db_url: str, dialect: str, tmp_path: Path
) -> None:
    """Payloads left behind by a purge that committed are swept after the datasets; a payload the ledger
    never purged stays, run after run, and is counted in the log."""
    build(migrated, customers=6)
    loaded = load_file(_pack(tmp_path))
    with isolated_database(dialect, tmp_path) as archive_url:
        archive_engine = create_engine(archive_url)
        execute.run(migrated, loaded, dt.datetime(2021, 6, 1, tzinfo=dt.UTC), secret=SECRET.encode(),
                    archive=SeparateArchive(archive_engine))  # fmt: skip
        with archive_engine.begin() as conn:  # a payload no purge of this database accounts for
            conn.execute(
                store.archive.insert().values(
                    dataset="customers", record_key="999", payload="{}", archived_at=dt.datetime.now(dt.UTC),
                    run_id="elsewhere",
                )
            )  # fmt: skip
        crashed = CrashBeforeArchiveCleanup(archive_engine)
        result = execute.run(
            migrated, loaded, dt.datetime(2023, 1, 1, tzinfo=dt.UTC), secret=SECRET.encode(), archive=crashed
        )
        assert result.counts["customers"]["archived->purged"] == 6
        # The crash left the six purged payloads; this run's own sweep, after its datasets, removes them.
        assert payloads(archive_url) == [("customers", "999")]
        with migrated.connect() as conn:
            purges = conn.execute(
                sa.select(sa.func.sum(store.ledger.c.count)).where(store.ledger.c.transition == "archived->purged")
            ).scalar_one()
        assert purges == 6

        again = invoke("run", "--rules", str(_pack(tmp_path)), "--db", db_url, "--archive-db", archive_url)
        assert again.exit_code == 0, again.output
        assert payloads(archive_url) == [("customers", "999")]
        kept = [json.loads(line) for line in again.stderr.splitlines() if '"archive_payloads_kept"' in line]
        assert [(e["event"], e["count"]) for e in kept] == [("archive_payloads_kept", 1)]
        archive_engine.dispose()


def test_an_unbound_store_refuses_to_move_payloads(tmp_path: Path) -> None:
    """Library callers that skip the binding cannot write or delete payloads."""
    engine = create_engine(f"sqlite:///{tmp_path / 'store.sqlite'}")
    separate = SeparateArchive(engine)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(archive_owner)).scalar_one() == 0
    with pytest.raises(ConfigError, match="before it was bound"):
        separate.delete(None, "customers", ["1"])  # type: ignore[arg-type]
    engine.dispose()


def _pack(tmp_path: Path) -> Path:
    path = tmp_path / "archive.yaml"
    path.write_text(PACK, encoding="utf-8")
    return path


TWO_DATASETS = (
    PACK
    + """
  visits:
    table: visits
    key: id
    basis: policy
    keep:
      - clock: {column: seen, type: timestamp}
        period: P1Y
    lifecycle:
      - to: purged
        action: delete
"""
)

REFUSE_CUSTOMERS_PURGE = {
    "sqlite": [
        "CREATE TRIGGER refuse_customers_purge BEFORE DELETE ON retention_record_states "
        "WHEN OLD.dataset = 'customers' BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION refuse_customers_purge() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF OLD.dataset = 'customers' THEN RAISE EXCEPTION 'refused by the test'; END IF; RETURN OLD; END $$",
        "CREATE TRIGGER refuse_customers_purge BEFORE DELETE ON retention_record_states "
        "FOR EACH ROW EXECUTE FUNCTION refuse_customers_purge()",
    ],
    "mariadb": [
        "CREATE TRIGGER refuse_customers_purge BEFORE DELETE ON retention_record_states FOR EACH ROW BEGIN "
        "IF OLD.dataset = 'customers' THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by the test'; "
        "END IF; END"
    ],
}


def test_a_rolled_back_purge_keeps_its_payloads_when_a_later_dataset_commits(
    migrated: sa.Engine, db_url: str, dialect: str, tmp_path: Path
) -> None:
    """The customers' purge batch fails (a constraint of the test refuses it) and rolls back; the visits'
    batch then commits. Before: that commit deleted the rolled-back batch's payloads (SeparateArchive._pending
    outlived the rollback), leaving 6 customers archived with no payload and no ledger entry."""
    build(migrated, customers=6)
    md = sa.MetaData()
    visits = sa.Table(
        "visits", md, sa.Column("id", sa.Integer, primary_key=True, autoincrement=False), sa.Column("seen", sa.DateTime)
    )
    md.create_all(migrated)
    with migrated.begin() as conn:
        conn.execute(visits.insert(), [{"id": i, "seen": dt.datetime(2021, 6, 1)} for i in range(1, 5)])
    pack = tmp_path / "two.yaml"
    pack.write_text(TWO_DATASETS, encoding="utf-8")
    with isolated_database(dialect, tmp_path) as archive_url:
        first = invoke(
            "run", "--rules", str(pack), "--db", db_url, "--archive-db", archive_url, "--as-of", "2021-06-01"
        )
        assert first.exit_code == 0, first.output
        archived = [("customers", str(i)) for i in range(1, 7)]
        assert payloads(archive_url) == archived
        with migrated.begin() as conn:
            for statement in REFUSE_CUSTOMERS_PURGE[dialect]:
                conn.execute(sa.text(statement))
        second = invoke(
            "run", "--rules", str(pack), "--db", db_url, "--archive-db", archive_url, "--as-of", "2023-01-01"
        )
        assert second.exit_code == 3, second.output  # the customers dataset failed, the visits went on
        with migrated.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(visits)).scalar_one() == 0
            still = conn.execute(
                sa.select(sa.func.count())
                .select_from(store.record_states)
                .where(store.record_states.c.dataset == "customers", store.record_states.c.state == "archived")
            ).scalar_one()
        assert still == 6
        assert payloads(archive_url) == archived  # every archived record keeps its payload


def test_an_archive_database_equal_to_the_main_one_is_refused(db_url: str, migrated: sa.Engine, tmp_path: Path) -> None:
    """--archive-db naming the main database: one line, exit 2, before anything moves."""
    build(migrated, customers=2)
    result = CliRunner().invoke(
        main,
        ["run", "--rules", str(_pack(tmp_path)), "--db", db_url, "--archive-db", db_url, "--as-of", "2021-06-01"],
        env=ENV,
        prog_name="retention",
    )
    assert (result.exit_code, result.output.splitlines()) == (
        2,
        ["error: --archive-db names the main database (--db): a separate archive store must be another database"],
    )
    with migrated.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(store.ledger)).scalar_one() == 0


TWINS_PACK = archive_pack("archive-twins", "twins", "id, note", head="batch_size: 1\n")


def _twins(engine: sa.Engine) -> sa.Table:
    """'A' and 'a' (and 'B'), the key column compared byte by byte (MariaDB: utf8mb4_bin whatever the default).

    'A' and 'B' are archived at 2021-03-01 and purged at 2022-03-01; 'a' is archived at 2021-09-01 and purged at
    2022-09-01.
    """
    maria = engine.dialect.name in ("mysql", "mariadb")
    name = engine.dialect.name  # a "mariadb" dialect reads only "mariadb_" options
    options = {f"{name}_charset": "utf8mb4", f"{name}_collate": "utf8mb4_bin"} if maria else {}
    md = sa.MetaData()
    table = sa.Table(
        "twins",
        md,
        sa.Column("id", sa.String(30), primary_key=True),
        sa.Column("note", sa.String(60)),
        sa.Column("seen", sa.DateTime),
        **options,
    )
    md.create_all(engine)
    seen = {"A": dt.datetime(2020, 3, 1), "B": dt.datetime(2020, 3, 1), "a": dt.datetime(2020, 9, 1)}
    with engine.begin() as conn:
        conn.execute(table.insert(), [{"id": k, "note": f"note of {k}", "seen": s} for k, s in seen.items()])
    return table


def _stored(url: str) -> dict[str, str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {r.record_key: json.loads(r.payload)["note"] for r in conn.execute(sa.select(store.archive))}
    finally:
        engine.dispose()


def test_keys_that_differ_only_in_case_keep_their_own_payloads_in_a_separate_store(
    migrated: sa.Engine, db_url: str, dialect: str, tmp_path: Path
) -> None:
    """'A' and 'a' are two records with two payloads in an --archive-db store; purging 'A' leaves 'a''s payload.

    On MariaDB a store made before migrations 0020_keycase and 0021_keypad keeps ``record_key`` in the database's
    case-insensitive default: there, one batch a record, writing 'a''s payload deleted 'A''s and the run
    succeeded. Such a store is refused (one line, exit 2) before anything moves; after the statement the
    message names, run on the store, the run keeps both.
    """
    source = _twins(migrated)
    pack = tmp_path / "twins.yaml"
    pack.write_text(TWINS_PACK, encoding="utf-8")
    with isolated_database(dialect, tmp_path) as archive_url:
        if dialect == "mariadb":
            archive_engine = create_engine(archive_url)
            old = store.archive.to_metadata(sa.MetaData())
            old.c.record_key.type = sa.String(191)  # the definition before 0020: the database's default collation
            old.create(archive_engine)
            refused = CliRunner().invoke(
                main,
                ["run", "--rules", str(pack), "--db", db_url, "--archive-db", archive_url, "--as-of", "2021-12-01"],
                env=ENV,
                prog_name="retention",
            )
            shown = make_url(archive_url).render_as_string(hide_password=True)
            statement = (
                "ALTER TABLE retention_archive MODIFY record_key varchar(191) CHARACTER SET utf8mb4 "
                "COLLATE utf8mb4_nopad_bin NOT NULL"
            )
            errors = [line for line in refused.output.splitlines() if not line.startswith("{")]  # no log events
            assert (refused.exit_code, errors) == (
                2,
                [
                    f"error: the archive database {shown} keeps retention_archive.record_key in collation "
                    f"{MARIADB_COLLATION}, where keys that differ only in case or by trailing spaces collide (a store "
                    f"made before migration 0021_keypad or outside the migrations); run there: {statement}"
                ],
            )
            assert _stored(archive_url) == {}
            with migrated.connect() as conn:
                assert set(conn.execute(sa.select(source.c.id)).scalars()) == {"A", "B", "a"}
                assert conn.execute(sa.select(sa.func.count()).select_from(store.record_states)).scalar_one() == 0
            with archive_engine.begin() as conn:
                conn.execute(sa.text(statement))
            archive_engine.dispose()

        first = invoke(
            "run", "--rules", str(pack), "--db", db_url, "--archive-db", archive_url, "--as-of", "2021-12-01"
        )
        assert first.exit_code == 0, first.output
        assert _stored(archive_url) == {"A": "note of A", "B": "note of B", "a": "note of a"}

        second = invoke(
            "run", "--rules", str(pack), "--db", db_url, "--archive-db", archive_url, "--as-of", "2022-06-01"
        )
        assert second.exit_code == 0, second.output
        assert _stored(archive_url) == {"a": "note of a"}
        with migrated.connect() as conn:
            states = {
                r.record_key: r.state
                for r in conn.execute(sa.select(store.record_states).where(store.record_states.c.dataset == "twins"))
            }
        assert states == {"a": "archived"}


@pytest.mark.only_on("mariadb")
def test_a_pad_store_is_judged_against_the_main_databases_key_collation(
    migrated: sa.Engine, dialect: str, tmp_path: Path
) -> None:
    """A ``utf8mb4_bin`` store is refused beside a NO PAD main database and accepted beside a ``utf8mb4_bin`` one.

    The main database's ``utf8mb4_bin`` stands in for one on an older server
    (MariaDB < 10.2), which takes 'a' and 'a ' for one key itself: the store
    loses nothing it keeps apart. Before, the store was judged against its
    own server's best collation only, whatever the main database kept apart.
    """
    modify = (
        "ALTER TABLE retention_record_states MODIFY record_key varchar(191) CHARACTER SET utf8mb4 COLLATE {} NOT NULL"
    )
    with isolated_database(dialect, tmp_path) as archive_url:
        archive_engine = create_engine(archive_url)
        old = store.archive.to_metadata(sa.MetaData())
        old.c.record_key.type = sa.String(191, collation="utf8mb4_bin")  # PAD SPACE
        old.create(archive_engine)
        separate = SeparateArchive(archive_engine)
        with pytest.raises(ConfigError, match=r"retention_archive\.record_key in collation utf8mb4_bin, where keys"):
            separate.bind(migrated)
        with migrated.begin() as conn:
            conn.execute(sa.text(modify.format("utf8mb4_bin")))
        try:
            separate.bind(migrated)
        finally:
            with migrated.begin() as conn:
                conn.execute(sa.text(modify.format("utf8mb4_nopad_bin")))
            archive_engine.dispose()
