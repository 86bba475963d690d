"""Hostile command-line arguments: one line and exit 2 on every database, never a traceback.

Each row of the table gives the arguments (``{db}``, ``{rules}``, ``{dir}``
are filled in) and the exact line a person reads. The values come from an
adversarial review: out-of-range dates, a key that is not a number for an
integer key column, periods beyond the date arithmetic, files that are
folders, folders that do not exist, ids and texts longer than their columns
(a subject id over 191 characters failed inside PostgreSQL and MariaDB).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from retention.cli import main
from retention.store import tables as store
from retention.store.config import safe_url

PACK = """
pack: shop
version: "1"
effective_from: 1900-01-01
timezone: Europe/Paris
datasets:
  customers:
    table: customers
    key: id
    subject_key: id
    basis: policy
    keep:
      - clock: {column: seen, type: date}
        period: P3Y
    lifecycle:
      - to: purged
        action: delete
"""

LONG = "s" * 192

# (arguments, the line shown after "error: ")
HOSTILE: list[tuple[list[str], str]] = [
    (
        ["explain", "--rules", "{rules}", "--db", "{db}", "--dataset", "customers", "--key", "abc"],
        "'abc' is not a key of dataset customers: its key column holds integers",
    ),
    (
        ["explain", "--rules", "{rules}", "--db", "{db}", "--dataset", "customers", "--key", "9" * 40],
        f"'{'9' * 40}' is not a key of dataset customers: its key column holds integers",
    ),
    (
        ["explain", "--rules", "{rules}", "--db", "{db}", "--dataset", "customers", "--key", ""],
        "Invalid value for '--key': the record key is empty (see 'retention explain --help')",
    ),
    (
        ["plan", "--rules", "{rules}", "--db", "{db}", "--as-of", "9999-12-31"],
        "Invalid value for '--as-of': '9999-12-31' is outside the dates the engine computes "
        "(1900-01-01 to 8998-12-31) (see 'retention plan --help')",
    ),
    (
        ["run", "--rules", "{rules}", "--db", "{db}", "--as-of", "0001-01-01"],
        "Invalid value for '--as-of': '0001-01-01' is outside the dates the engine computes "
        "(1900-01-01 to 8998-12-31) (see 'retention run --help')",
    ),
    (
        [
            "explain",
            "--rules",
            "{rules}",
            "--db",
            "{db}",
            "--dataset",
            "customers",
            "--key",
            "1",
            "--as-of",
            "2026-02-30",
        ],
        "Invalid value for '--as-of': '2026-02-30' is not a date that exists (see 'retention explain --help')",
    ),
    (
        ["plan", "--rules", "{rules}", "--db", "{db}", "--as-of", "1970-01-01T00:00:00+99:00"],
        "Invalid value for '--as-of': '1970-01-01T00:00:00+99:00' is not a date and time that exists "
        "(see 'retention plan --help')",
    ),
    (
        ["report", "--rules", "{rules}", "--db", "{db}", "--horizon", "P9999Y", "--html", "{dir}/r.html"],
        "Invalid value for '--horizon': P9999Y is longer than P5Y, the longest this option accepts "
        "(see 'retention report --help')",
    ),
    (
        ["report", "--rules", "{rules}", "--db", "{db}", "--html", "{dir}/missing/r.html"],
        "Invalid value for '--html': the folder {dir}/missing does not exist (see 'retention report --help')",
    ),
    (
        ["report", "--rules", "{rules}", "--db", "{db}", "--html", "{dir}"],
        "Invalid value for '--html': {dir} is a folder; give a file name (see 'retention report --help')",
    ),
    (
        ["--log-level", "garbage", "plan", "--rules", "{rules}", "--db", "{db}"],
        "Invalid value for '--log-level': 'garbage' is not a log level; valid: debug, info, warning, error, "
        "critical (see 'retention --help')",
    ),
    (
        ["hold", "add", "--db", "{db}", "--subject", LONG, "--reason", "case 1"],
        "Invalid value for '--subject': the subject id has 192 characters; at most 191 "
        "(see 'retention hold add --help')",
    ),
    (
        ["hold", "add", "--db", "{db}", "--dataset", "customers", "--key", LONG, "--reason", "case 1"],
        "Invalid value for '--key': the record key has 192 characters; at most 191 (see 'retention hold add --help')",
    ),
    (
        ["erasure", "add", "--db", "{db}", "--rules", "{rules}", "--subject", LONG, "--received", "2026-01-05"],
        "Invalid value for '--subject': the subject id has 192 characters; at most 191 "
        "(see 'retention erasure add --help')",
    ),
    (
        ["erasure", "add", "--db", "{db}", "--rules", "{rules}", "--subject", "7", "--received", "9999-12-31"],
        "Invalid value for '--received': '9999-12-31' is outside the dates the engine computes "
        "(1900-01-01 to 8998-12-31) (see 'retention erasure add --help')",
    ),
    (
        ["erasure", "add", "--db", "{db}", "--rules", "{rules}", "--subject", "7\x00", "--received", "2026-01-05"],
        "Invalid value for '--subject': the subject id contains the control character U+0000 "
        "(see 'retention erasure add --help')",
    ),
    (
        ["ledger", "lookup", "--db", "{db}", "--subject", LONG],
        "Invalid value for '--subject': the subject id has 192 characters; at most 191 "
        "(see 'retention ledger lookup --help')",
    ),
    (
        ["hold", "release", "--db", "{db}", "99999999999", "--reason", "done"],
        "Invalid value for 'HOLD_ID': 99999999999 is not in the range 1<=x<=2147483647. "
        "(see 'retention hold release --help')",
    ),
    (
        ["erasure", "close", "--db", "{db}", "0"],
        "Invalid value for 'REQUEST_ID': 0 is not in the range 1<=x<=2147483647. "
        "(see 'retention erasure close --help')",
    ),
    (
        ["review", "show", "--db", "{db}", "2147483648"],
        "Invalid value for 'BATCH_ID': 2147483648 is not in the range 1<=x<=2147483647. "
        "(see 'retention review show --help')",
    ),
    (
        ["ledger", "show", "--db", "{db}", "--until", "9999-12-31T23:59:59-14:00"],
        "Invalid value for '--until': '9999-12-31T23:59:59-14:00' is outside the dates the engine computes "
        "(1900-01-01 to 8998-12-31) (see 'retention ledger show --help')",
    ),
    (
        ["ledger", "export", "--db", "{db}", "--output", "{dir}"],
        "Invalid value for '--output': {dir} is a folder; give a file name (see 'retention ledger export --help')",
    ),
    (
        ["ledger", "checkpoint", "--db", "{db}", "--key", "{dir}"],
        "Invalid value for '--key': {dir} is not a regular file (see 'retention ledger checkpoint --help')",
    ),
    (
        ["ledger", "verify", "--db", "{db}", "--checkpoint", "{dir}"],
        "Invalid value for '--checkpoint': {dir} is not a regular file (see 'retention ledger verify --help')",
    ),
    (
        ["ledger", "keygen", "--key", "{dir}/missing/signing.pem"],
        "Invalid value for '--key': the folder {dir}/missing does not exist (see 'retention ledger keygen --help')",
    ),
    (
        ["run", "--rules", "{rules}", "--db", "{db}", "--metrics-file", "{dir}/a-file/run.prom"],
        "Invalid value for '--metrics-file': {dir}/a-file is a file, not a folder (see 'retention run --help')",
    ),
    (
        ["run", "--rules", "{rules}", "--db", "{db}", "--lock-timeout", "0"],
        "Invalid value for '--lock-timeout': 0 is not in the range 1<=x<=86400. (see 'retention run --help')",
    ),
    (
        ["db", "upgrade", "--db", "{db}", "--revision", "garbage"],
        "unknown revision 'garbage'; valid: head, base or a shipped revision (newest: {head})",
    ),
    (
        ["init", "--db", "{db}", "--dir", "{dir}/a-file"],
        "cannot create the key files in {dir}/a-file: it is a file, not a folder",
    ),
    (
        ["scheduler", "--rules", "{rules}", "--db", "{db}", "--timezone", "localtime"],
        "Invalid value for '--timezone': unknown timezone 'localtime'; use an IANA name such as Europe/Paris or UTC "
        "(see 'retention scheduler --help')",
    ),
]


@pytest.fixture
def shop(migrated: sa.Engine, db_url: str, tmp_path: Path) -> dict[str, str]:
    """A one-table shop with an integer key, its pack, and a folder holding one plain file."""
    with migrated.begin() as conn:
        conn.execute(sa.text("CREATE TABLE customers (id INTEGER PRIMARY KEY, seen DATE)"))
        conn.execute(sa.text("INSERT INTO customers (id, seen) VALUES (1, '2020-05-01')"))
    rules = tmp_path / "shop.yaml"
    rules.write_text(PACK, encoding="utf-8")
    (tmp_path / "a-file").write_text("not a folder", encoding="utf-8")
    from retention.store import migrate

    return {"db": db_url, "rules": str(rules), "dir": str(tmp_path), "head": migrate.head_revision() or ""}


@pytest.mark.parametrize(
    ("args", "line"), HOSTILE, ids=[" ".join(a[:2]) + f" #{i}" for i, (a, _) in enumerate(HOSTILE)]
)
def test_hostile_argument_gives_one_line_and_exit_2(
    shop: dict[str, str], args: list[str], line: str, tmp_path: Path
) -> None:
    """The argument is refused with the exact line below and exit 2; nothing else is printed."""
    filled = [a.format(**shop) for a in args]
    result = CliRunner().invoke(main, filled, env={"RETENTION_PSEUDONYM_KEY": "cli-hostile"}, prog_name="retention")
    assert result.exit_code == 2, result.output
    assert result.output.splitlines() == [f"error: {line.format(**shop)}"]


def test_a_key_file_that_is_a_folder_is_refused(shop: dict[str, str], tmp_path: Path) -> None:
    """RETENTION_PSEUDONYM_KEY_FILE naming a folder: one line, exit 2 (it used to be IsADirectoryError)."""
    folder = tmp_path / "keys"
    folder.mkdir(mode=0o700)
    result = CliRunner().invoke(
        main,
        ["run", "--rules", shop["rules"], "--db", shop["db"], "--as-of", "2026-01-01"],
        env={"RETENTION_PSEUDONYM_KEY": "", "RETENTION_PSEUDONYM_KEY_FILE": str(folder)},
    )
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        f"error: the pseudonym key file {folder} is not a regular file; "
        "point RETENTION_PSEUDONYM_KEY_FILE at the key file"
    ]


@pytest.mark.parametrize("as_of", ["1900-01-01", "8998-12-31", "8998-12-31T23:59:59-14:00"])
def test_the_limits_themselves_are_accepted(shop: dict[str, str], as_of: str) -> None:
    """The first and last accepted as-of dates plan and explain on every database."""
    runner = CliRunner()
    result = runner.invoke(main, ["plan", "--rules", shop["rules"], "--db", shop["db"], "--as-of", as_of])
    assert result.exit_code == 0, result.output
    expected = "1" if as_of.startswith("8998") else "0"
    assert f": {expected} transitions" in result.output.splitlines()[0]
    args = ["explain", "--rules", shop["rules"], "--db", shop["db"], "--dataset", "customers", "--key", "1"]
    result = runner.invoke(main, [*args, "--as-of", as_of])
    assert result.exit_code == 0, result.output
    if as_of.startswith("1900"):
        assert "  skipped: future clock; never moved by a run" in result.output.splitlines()
    else:
        assert "  due for purged: 2023-05-02 00:00 CEST" in result.output.splitlines()


# --------------------------------------------------------------------------
# Secrets in database URLs (issue 11, item 12)
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:hunter2@db/shop", "postgresql://app:***@db/shop"),
        ("postgresql://app@db/shop?password=hunter2", "postgresql://app@db/shop?password=***"),
        (
            "mysql+pymysql://app@db/shop?passwd=hunter2&charset=utf8mb4",
            "mysql+pymysql://app@db/shop?charset=utf8mb4&passwd=***",
        ),
        (
            "postgresql://db/shop?sslpassword=hunter2&sslmode=require",
            "postgresql://db/shop?sslmode=require&sslpassword=***",
        ),
        ("postgresql://db/shop?api_token=hunter2", "postgresql://db/shop?api_token=***"),
        ("postgresql://db/shop?options=-csearch_path%3Dx", "postgresql://db/shop?options=-csearch_path%3Dx"),
        ("::not a url hunter2::", "<unparsable database URL>"),
    ],
)
def test_safe_url_masks_every_password(url: str, shown: str) -> None:
    """A password is masked in user:pw@ and in any query parameter named like a secret."""
    assert safe_url(url) == shown


def test_a_password_in_the_query_never_reaches_the_output() -> None:
    """A connection failure names the URL with ?password= masked; the secret appears nowhere."""
    url = "postgresql://app@127.0.0.1:1/shop?password=hunter2&sslpassword=tops3cret"
    result = CliRunner().invoke(main, ["db", "current", "--db", url])
    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        "error: cannot connect to postgresql://app@127.0.0.1:1/shop?password=***&sslpassword=***: connection refused"
    )
    assert "hunter2" not in result.output and "tops3cret" not in result.output


def test_an_unparsable_url_is_not_echoed() -> None:
    """A URL that does not parse is refused without quoting it (it may hold a password)."""
    result = CliRunner().invoke(main, ["db", "current", "--db", "postgresql://app:hunter2@db:notaport/shop"])
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        "error: invalid database URL; expected dialect[+driver]://user:password@host/database"
    ]


WRONG_KEY_LINE = (
    "error: the pseudonym key from RETENTION_PSEUDONYM_KEY is not the one this database's ledger was begun with (its "
    "first authenticated entry, 1, does not verify under it); point it at the engine's key, or run: retention "
    "ledger verify"
)


@pytest.mark.parametrize(
    "args",
    [
        ["run", "--rules", "{rules}", "--db", "{db}", "--no-progress"],
        ["hold", "add", "--db", "{db}", "--subject", "1", "--reason", "r"],
        ["hold", "release", "1", "--db", "{db}", "--reason", "r"],
        ["erasure", "add", "--rules", "{rules}", "--db", "{db}", "--subject", "1", "--received", "2026-12-01"],
        ["erasure", "extend", "1", "--rules", "{rules}", "--db", "{db}", "--reason", "r"],
        ["ledger", "lookup", "--db", "{db}", "--subject", "1"],
        ["ledger", "prove", "--db", "{db}", "--subject", "1", "--checkpoint", "{dir}/checkpoint.json"],
        ["ledger", "audit", "--rules", "{rules}", "--db", "{db}"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_a_pseudonym_key_the_ledger_was_not_written_with_is_refused(
    shop: dict[str, str], migrated: sa.Engine, args: list[str]
) -> None:
    """Another key (another environment's key file): one line naming the setting in force, exit 2, nothing written.

    Any non-empty key used to be accepted: a run and a hold appended entries no key verifies afterwards, the
    hold's and the request's pseudonyms matched no record, and a lookup found nothing, all with exit 0.
    """
    # Erasure requests need a dataset saying what an erasure does to it.
    Path(shop["rules"]).write_text(PACK + "    on_erasure: purged\n", encoding="utf-8")
    runner = CliRunner()
    for setup in (
        ["hold", "add", "--db", shop["db"], "--subject", "1", "--reason", "r"],
        ["erasure", "add", "--rules", shop["rules"], "--db", shop["db"], "--subject", "1", "--received", "2026-12-01"],
    ):
        done = runner.invoke(main, setup, env={"RETENTION_PSEUDONYM_KEY": "k1"})
        assert done.exit_code == 0, done.output
    Path(shop["dir"], "checkpoint.json").write_text("{}", encoding="utf-8")  # read before the key; refused first
    count = sa.select(sa.func.count()).select_from(store.ledger)
    with migrated.connect() as conn:
        before = conn.execute(count).scalar_one()
    result = runner.invoke(
        main, [a.format(**shop) for a in args], env={"RETENTION_PSEUDONYM_KEY": "k2"}, prog_name="retention"
    )
    with migrated.connect() as conn:
        after = conn.execute(count).scalar_one()
    assert (result.exit_code, result.output.splitlines()) == (2, [WRONG_KEY_LINE])
    assert after == before == 2
    again = runner.invoke(main, [a.format(**shop) for a in args], env={"RETENTION_PSEUDONYM_KEY": "k1"})
    assert "pseudonym key" not in again.output
    assert again.exit_code == (2 if args[1] == "prove" else 0), again.output  # prove: "{}" is no checkpoint


def test_the_wrong_key_error_names_the_key_file_when_the_file_is_in_force(shop: dict[str, str], tmp_path: Path) -> None:
    """The key came from RETENTION_PSEUDONYM_KEY_FILE: the error names that setting (the variable wins over it)."""
    runner = CliRunner()
    placed = runner.invoke(
        main,
        ["hold", "add", "--db", shop["db"], "--subject", "1", "--reason", "r"],
        env={"RETENTION_PSEUDONYM_KEY": "k1"},
    )
    assert placed.exit_code == 0, placed.output
    key = tmp_path / "other.key"
    key.write_text("k2", encoding="utf-8")
    key.chmod(0o600)
    result = runner.invoke(
        main,
        ["hold", "add", "--db", shop["db"], "--subject", "1", "--reason", "r"],
        env={"RETENTION_PSEUDONYM_KEY": "", "RETENTION_PSEUDONYM_KEY_FILE": str(key)},
    )
    assert (result.exit_code, result.output.splitlines()) == (
        2,
        [
            "error: the pseudonym key from RETENTION_PSEUDONYM_KEY_FILE is not the one this database's ledger was "
            "begun with (its first authenticated entry, 1, does not verify under it); point it at the engine's key, "
            "or run: retention ledger verify"
        ],
    )


def test_a_review_decision_under_another_key_is_refused(migrated: sa.Engine, db_url: str) -> None:
    """`review approve` under another key: exit 2, the batch stays pending, no entry; then the right key decides.

    It used to write the approval under the wrong key (exit 0). Its entry became the ledger's head, so the check
    accepted the wrong key for every command from then on, and `ledger verify` failed at the approval.
    """
    from test_review import PACK as REVIEW_PACK
    from test_review import SECRET as REVIEW_SECRET
    from test_review import build

    from retention.engine import execute
    from retention.subjects import review

    build(migrated)
    execute.run(migrated, REVIEW_PACK, dt.datetime(2021, 6, 20, tzinfo=dt.UTC), secret=REVIEW_SECRET)
    with migrated.connect() as conn:
        (batch,) = review.list_batches(conn)
    count = sa.select(sa.func.count()).select_from(store.ledger)
    with migrated.connect() as conn:
        before = conn.execute(count).scalar_one()
    runner = CliRunner()
    decide = ["review", "approve", str(batch["id"]), "--db", db_url, "--by", "me", "--reason", "period over"]
    refused = runner.invoke(main, decide, env={"RETENTION_PSEUDONYM_KEY": "another-key"})
    assert refused.exit_code == 2, refused.output
    assert refused.output.startswith("error: the pseudonym key from RETENTION_PSEUDONYM_KEY is not the one this")
    with migrated.connect() as conn:
        assert conn.execute(count).scalar_one() == before
        assert review.show_batch(conn, batch["id"])[0]["status"] == "pending"
    hold = ["hold", "add", "--db", db_url, "--subject", "1", "--reason", "r"]
    assert runner.invoke(main, hold, env={"RETENTION_PSEUDONYM_KEY": "another-key"}).exit_code == 2
    approved = runner.invoke(main, decide, env={"RETENTION_PSEUDONYM_KEY": REVIEW_SECRET.decode()})
    assert approved.exit_code == 0, approved.output
    verified = runner.invoke(
        main, ["ledger", "verify", "--db", db_url], env={"RETENTION_PSEUDONYM_KEY": REVIEW_SECRET.decode()}
    )
    assert verified.exit_code == 0, verified.output


def test_a_ledger_holding_entries_under_two_keys_accepts_only_the_key_it_was_begun_with(
    shop: dict[str, str], migrated: sa.Engine
) -> None:
    """Entry 1 under k1, entry 2 under k2 (as the unchecked review path or pre-check code wrote them).

    Both keys used to pass (the newest or the oldest entry verified); judged by the newest, k2 (the foreign one)
    would go on writing and k1 (the ledger's) be locked out. Judged by the first authenticated entry: k1 reads and
    writes, k2 and k3 are refused everywhere.
    """
    from retention.subjects import events as subjects

    runner = CliRunner()
    hold = ["hold", "add", "--db", shop["db"], "--subject", "1", "--reason", "r"]
    assert runner.invoke(main, hold, env={"RETENTION_PSEUDONYM_KEY": "k1"}).exit_code == 0
    with migrated.begin() as conn:
        subjects.place_hold(conn, scope="subject", subject_key="1", reason="r", placed_by="old", secret=b"k2")
    lookup = ["ledger", "lookup", "--db", shop["db"], "--subject", "1"]
    refused = runner.invoke(main, hold, env={"RETENTION_PSEUDONYM_KEY": "k2"})
    assert (refused.exit_code, refused.output.splitlines()) == (
        2,
        [
            "error: the pseudonym key from RETENTION_PSEUDONYM_KEY is not the one this database's ledger was begun "
            "with (its first authenticated entry, 1, does not verify under it); point it at the engine's key, or "
            "run: retention ledger verify"
        ],
    )
    for key in ("k2", "k3"):
        for args in (hold, lookup):
            assert runner.invoke(main, args, env={"RETENTION_PSEUDONYM_KEY": key}).exit_code == 2, (key, args)
    assert runner.invoke(main, lookup, env={"RETENTION_PSEUDONYM_KEY": "k1"}).exit_code == 0
    assert runner.invoke(main, hold, env={"RETENTION_PSEUDONYM_KEY": "k1"}).exit_code == 0
    with migrated.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(store.ledger)).scalar_one() == 3


def test_a_ledger_without_macs_accepts_any_key(shop: dict[str, str], migrated: sa.Engine) -> None:
    """A ledger from before format 3 (no entry carries a MAC) cannot tell keys apart: any key, as documented."""
    with migrated.begin() as conn:
        conn.execute(
            store.ledger.insert().values(
                seq=1,
                recorded_at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
                transition="active->purged",
                prev_hash="0" * 64,
                hash="a" * 64,
                format=1,
                count=1,
            )
        )
    hold = ["hold", "add", "--db", shop["db"], "--subject", "1", "--reason", "r"]
    accepted = CliRunner().invoke(main, hold, env={"RETENTION_PSEUDONYM_KEY": "any-key"})
    assert accepted.exit_code == 0, accepted.output


@pytest.mark.only_on("sqlite")
@pytest.mark.parametrize(
    "args",
    [
        ["plan", "--rules", "{rules}"],
        ["explain", "--rules", "{rules}", "--dataset", "customers", "--key", "1"],
        ["status"],
        ["ledger", "verify"],
        ["hold", "list"],
        ["db", "current"],
        ["db", "downgrade", "base"],
        ["check", "--rules", "{rules}"],
        ["serve", "--port", "1"],  # refused before it would listen
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_a_sqlite_path_naming_no_file_is_refused_and_not_created(
    shop: dict[str, str], tmp_path: Path, args: list[str]
) -> None:
    """A mistyped SQLite path: one line, exit 2, and no empty file left there.

    It used to create the file, then say "run: retention db upgrade", which would have put the engine's
    tables into that new empty file.
    """
    typo = tmp_path / "shpo.sqlite"
    url = f"sqlite:///{typo}"
    result = CliRunner().invoke(
        main,
        [*(a.format(**shop) for a in args), "--db", url],
        env={"RETENTION_PSEUDONYM_KEY": "cli-hostile"},
        prog_name="retention",
    )
    assert (result.exit_code, result.output.splitlines()) == (
        2,
        [
            f"error: {url}: no such SQLite database file (nothing was created); check the path, "
            "or create the engine's tables there with retention db upgrade"
        ],
    )
    assert not typo.exists()


@pytest.mark.only_on("sqlite")
def test_serve_on_an_address_it_cannot_listen_on_is_one_line_and_exit_2(shop: dict[str, str]) -> None:
    """A port in use or out of range: one line, exit 2, before the console says it serves.

    A port in use made uvicorn exit 3 (partial failure here) after "retention console on ..."; 99999 was a
    traceback from asyncio and exit 1.
    """
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        busy = CliRunner().invoke(main, ["serve", "--db", shop["db"], "--port", str(port)], prog_name="retention")
    assert (busy.exit_code, busy.output.splitlines()) == (
        2,
        [f"error: cannot listen on 127.0.0.1:{port}: Address already in use"],
    )
    wide = CliRunner().invoke(main, ["serve", "--db", shop["db"], "--port", "99999"], prog_name="retention")
    assert (wide.exit_code, wide.output.splitlines()) == (
        2,
        ["error: Invalid value for '--port': 99999 is not in the range 1<=x<=65535. (see 'retention serve --help')"],
    )


@pytest.mark.parametrize("command", [["ledger", "show"], ["ledger", "export", "--format", "csv"]], ids=" ".join)
def test_a_ledger_range_no_entry_can_fall_in_is_refused(shop: dict[str, str], command: list[str]) -> None:
    """--since at or after --until: one line, exit 2 (it printed an empty table and exit 0)."""
    result = CliRunner().invoke(
        main,
        [*command, "--db", shop["db"], "--since", "2027-01-01", "--until", "2026-01-01"],
        prog_name="retention",
    )
    assert (result.exit_code, result.output.splitlines()) == (
        2,
        [
            "error: --since 2027-01-01T00:00:00+00:00 is not before --until 2026-01-01T00:00:00+00:00: no entry is "
            "recorded in that range (--since is inclusive, --until exclusive)"
        ],
    )


IGNORED_OPTIONS: list[tuple[list[str], str]] = [
    (["--parallel", "4"], "--parallel applies only with --shards N; a whole run or one --shard runs here, alone"),
    (
        ["--shard", "0/2", "--queue", "q"],
        "--queue applies only with --shards N; a whole run or one --shard runs here, alone",
    ),
    (["--run-group", "g"], "--run-group names the group of a sharded run: give --shard I/N or --shards N with it"),
    (["--shards", "2", "--timeout", "60"], "--timeout applies only with --via celery"),
    (["--shards", "2", "--broker", "amqp://x"], "--broker applies only with --via celery"),
    (
        ["--shards", "2", "--via", "celery", "--parallel", "4"],
        "--parallel applies only with --via local (Celery workers run as many as their --concurrency)",
    ),
]


@pytest.mark.only_on("sqlite")
@pytest.mark.parametrize(("extra", "line"), IGNORED_OPTIONS, ids=[" ".join(e) for e, _ in IGNORED_OPTIONS])
def test_a_run_option_the_mode_ignores_is_refused(shop: dict[str, str], extra: list[str], line: str) -> None:
    """A dispatch option typed for a mode that ignores it: one line, exit 2, nothing run (it was ignored, exit 0)."""
    result = CliRunner().invoke(
        main,
        ["run", "--rules", shop["rules"], "--db", shop["db"], "--no-progress", *extra],
        env={"RETENTION_PSEUDONYM_KEY": "cli-hostile"},
        prog_name="retention",
    )
    assert (result.exit_code, result.output.splitlines()) == (2, [f"error: {line}"])


@pytest.mark.only_on("sqlite")
def test_fleet_run_refuses_a_celery_option_without_celery(tmp_path: Path) -> None:
    """``fleet run --timeout`` without ``--via celery``: one line, exit 2 (the timeout bounded nothing)."""
    result = CliRunner().invoke(
        main, ["fleet", "run", "--targets", str(tmp_path / "fleet.yaml"), "--timeout", "60"], prog_name="retention"
    )
    assert (result.exit_code, result.output.splitlines()) == (2, ["error: --timeout applies only with --via celery"])


@pytest.mark.only_on("sqlite")
def test_a_run_group_from_the_environment_does_not_stop_a_whole_run(shop: dict[str, str]) -> None:
    """RETENTION_RUN_GROUP set for every job of a deployment: a whole run still runs."""
    result = CliRunner().invoke(
        main,
        ["run", "--rules", shop["rules"], "--db", shop["db"], "--no-progress", "--as-of", "2021-01-01"],
        env={"RETENTION_PSEUDONYM_KEY": "cli-hostile", "RETENTION_RUN_GROUP": "g"},
    )
    assert result.exit_code == 0, result.output


def test_a_row_numbered_below_one_decides_no_key(shop: dict[str, str], migrated: sa.Engine) -> None:
    """A row inserted at seq 0 or -1 (the append-only triggers stop updates and deletes, not inserts) with a MAC no
    key makes: verify reads from 1 and finds nothing wrong, so the key check must not read it either; it refused
    every key, the engine's too, while verify said the ledger was fine (review keyrule)."""
    hold = ["hold", "add", "--db", shop["db"], "--subject", "1", "--reason", "r"]
    runner = CliRunner()
    assert runner.invoke(main, hold, env={"RETENTION_PSEUDONYM_KEY": "k1"}).exit_code == 0
    with migrated.begin() as conn:
        for seq in (0, -1):
            conn.execute(
                store.ledger.insert().values(
                    seq=seq,
                    recorded_at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
                    transition="active->purged",
                    prev_hash="0" * 64,
                    hash="b" * 64,
                    format=3,
                    count=1,
                    mac="c" * 64,
                )
            )
    again = runner.invoke(main, hold, env={"RETENTION_PSEUDONYM_KEY": "k1"})
    assert again.exit_code == 0, again.output
    assert runner.invoke(main, hold, env={"RETENTION_PSEUDONYM_KEY": "k2"}).exit_code == 2
    verify = runner.invoke(main, ["ledger", "verify", "--db", shop["db"]], env={"RETENTION_PSEUDONYM_KEY": "k1"})
    assert verify.exit_code == 0, verify.output
