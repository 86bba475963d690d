"""Small refusals of the command line (branch cli2): what used to be accepted and then ignored or misnamed.

* ``--utc`` with ``--tz``: ``--utc`` won silently; now one line, exit 2, on
  every command that takes both, whichever side of the command ``--tz`` is on.
* A bad value from a ``RETENTION_*`` variable is named as that variable, not
  as the flag nobody typed; ``RETENTION_SCHEDULE``/``RETENTION_SCHEDULE_TIMEZONE``
  are checked when ``scheduler`` and ``serve`` start (``serve`` took junk).
* ``init --dir`` naming a file, or a folder under a file: the reason, not
  "File exists".
* ``ledger lookup --email`` with a value that is not an address is *not*
  refused: the engine pseudonymises whatever non-empty text an e-mail column
  holds (``lower(trim(...))``), so such a lookup can find entries.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from retention.cli import main

PACK = """
pack: shop
version: "1"
effective_from: 2020-01-01
timezone: Europe/Paris
guard: {max_share: 1.0}
datasets:
  subscribers:
    table: subscribers
    key: id
    email: email
    basis: Newsletter
    keep:
      - clock: {column: subscribed_at, type: timestamp}
        period: P1Y
    lifecycle:
      - to: purged
        action: delete
"""
KEY = {"RETENTION_PSEUDONYM_KEY": "cli-refusals"}


def invoke(args: list[str], env: dict[str, str] | None = None) -> tuple[int, list[str]]:
    result = CliRunner().invoke(main, args, env={**KEY, **(env or {})}, prog_name="retention")
    return result.exit_code, result.output.splitlines()


# Every command that takes --utc (the rules and database are never read: the pair is refused first).
UTC_COMMANDS = [
    ["plan", "--rules", "builtin:marketplace"],
    ["explain", "--rules", "builtin:marketplace", "--dataset", "customers", "--key", "1"],
    ["status"],
    ["ledger", "show"],
    ["ledger", "lookup", "--subject", "1"],
    ["hold", "list"],
    ["review", "list"],
    ["review", "show", "1"],
]


@pytest.mark.parametrize("command", UTC_COMMANDS, ids=lambda c: " ".join(c[:2]))
@pytest.mark.parametrize("before", [True, False], ids=["tz-before", "tz-after"])
def test_utc_and_tz_together_are_refused(tmp_path: Path, command: list[str], before: bool) -> None:
    """``--utc`` used to win over ``--tz`` without a word; the database named here does not even exist."""
    db = ["--db", f"sqlite:///{tmp_path / 'absent.sqlite'}"]
    tz = ["--tz", "Asia/Tokyo"]
    args = [*tz, *command, *db, "--utc"] if before else [*command, *db, "--utc", *tz]
    assert invoke(args) == (2, ["error: --utc and --tz name two zones: give one"])
    assert not (tmp_path / "absent.sqlite").exists()


def test_utc_still_overrides_the_zone_of_the_environment(tmp_path: Path) -> None:
    """RETENTION_TZ and TZ are set for every job of a host: ``--utc`` typed on one command wins over them."""
    _, lines = invoke(
        ["plan", "--rules", "builtin:marketplace", "--db", f"sqlite:///{tmp_path / 'absent.sqlite'}", "--utc"],
        env={"RETENTION_TZ": "Asia/Tokyo", "TZ": "America/New_York"},
    )
    assert "two zones" not in "\n".join(lines)


ENV_VALUES = [
    (
        ["run", "--rules", "builtin:marketplace"],
        {"RETENTION_LOCK_TIMEOUT": "junk"},
        "Invalid value for RETENTION_LOCK_TIMEOUT (from the environment): 'junk' is not a valid integer range.",
    ),
    (
        ["scheduler", "--rules", "builtin:marketplace"],
        {"RETENTION_LOCK_TIMEOUT": "0"},
        "Invalid value for RETENTION_LOCK_TIMEOUT (from the environment): 0 is not in the range 1<=x<=86400.",
    ),
    (
        ["scheduler", "--rules", "builtin:marketplace"],
        {"RETENTION_SCHEDULE": "junk"},
        "Invalid value for RETENTION_SCHEDULE (from the environment): invalid schedule 'junk': "
        "expected 5 crontab fields (or 6 with seconds first)",
    ),
    (
        ["scheduler", "--rules", "builtin:marketplace"],
        {"RETENTION_SCHEDULE_TIMEZONE": "Mars/Olympus"},
        "Invalid value for RETENTION_SCHEDULE_TIMEZONE (from the environment): unknown timezone 'Mars/Olympus'; "
        "use an IANA name such as Europe/Paris or UTC",
    ),
    (
        ["serve"],
        {"RETENTION_SCHEDULE": "61 2 * * *"},
        "Invalid value for RETENTION_SCHEDULE (from the environment): invalid schedule '61 2 * * *' in timezone "
        "'UTC': Error validating expression '61': the last value (61) is higher than the maximum value (59)",
    ),
    (
        ["serve"],
        {"RETENTION_SCHEDULE_TIMEZONE": "localtime"},
        "Invalid value for RETENTION_SCHEDULE_TIMEZONE (from the environment): unknown timezone 'localtime'; "
        "use an IANA name such as Europe/Paris or UTC",
    ),
]


@pytest.mark.parametrize(
    ("command", "env", "line"), ENV_VALUES, ids=[f"{c[0]} {next(iter(e))}" for c, e, _ in ENV_VALUES]
)
def test_a_bad_value_from_the_environment_names_the_variable(
    tmp_path: Path, command: list[str], env: dict[str, str], line: str
) -> None:
    """One line, exit 2, naming the variable: the operator never typed the flag."""
    db = ["--db", f"sqlite:///{tmp_path / 'absent.sqlite'}"]
    assert invoke([*command, *db], env=env) == (2, [f"error: {line} (see 'retention {command[0]} --help')"])


def test_a_bad_typed_value_still_names_the_flag(tmp_path: Path) -> None:
    db = ["--db", f"sqlite:///{tmp_path / 'absent.sqlite'}"]
    code, lines = invoke(
        ["run", "--rules", "builtin:marketplace", *db, "--lock-timeout", "junk"], env={"RETENTION_LOCK_TIMEOUT": "5"}
    )
    assert (code, lines) == (
        2,
        [
            "error: Invalid value for '--lock-timeout': 'junk' is not a valid integer range. "
            "(see 'retention run --help')"
        ],
    )
    code, lines = invoke(["scheduler", "--rules", "builtin:marketplace", *db, "--timezone", "Mars/Olympus"])
    assert code == 2 and lines[0].startswith("error: Invalid value for '--timezone': unknown timezone 'Mars/Olympus'")


@pytest.mark.parametrize(
    ("folder", "reason"),
    [
        ("a-file", "it is a file, not a folder"),
        ("a-file/keys", "{tmp}/a-file is a file, not a folder"),
        ("dangling", "it is a link to nothing, not a folder"),
    ],
)
def test_init_into_a_folder_it_cannot_create_says_why(tmp_path: Path, folder: str, reason: str) -> None:
    """``init --dir FILE`` said "File exists" (as if the keys were there); nothing is created, no database either."""
    (tmp_path / "a-file").write_text("not a folder", encoding="utf-8")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    target = tmp_path / folder
    db = tmp_path / "new.sqlite"
    code, lines = invoke(["init", "--db", f"sqlite:///{db}", "--dir", str(target)])
    assert (code, lines) == (
        2,
        [f"error: cannot create the key files in {target}: {reason.format(tmp=tmp_path)}"],
    )
    assert not db.exists()


def test_init_under_a_folder_it_cannot_enter_says_permission_denied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A parent this user cannot enter makes ``is_dir()`` raise, not answer: one line, exit 2 (was a traceback, exit
    1; review trio). The suite runs as root, whom no mode stops, so the refusal is the operating system's, played."""
    locked = tmp_path / "locked"

    def is_dir(self: Path) -> bool:
        if self == locked or locked in self.parents:
            raise PermissionError(13, "Permission denied")
        return real_is_dir(self)

    real_is_dir = Path.is_dir
    monkeypatch.setattr(Path, "is_dir", is_dir)
    target = locked / "keys"
    db = tmp_path / "new.sqlite"
    code, lines = invoke(["init", "--db", f"sqlite:///{db}", "--dir", str(target)])
    reason = "permission denied (give --dir a folder this user can write)"
    assert (code, lines) == (2, [f"error: cannot create the key files in {target}: {reason}"])
    assert not db.exists()


def test_init_creates_a_missing_folder(tmp_path: Path) -> None:
    """A missing folder is not an error: ``init`` creates it (the default ``retention-keys`` is new too)."""
    target = tmp_path / "new" / "keys"
    code, lines = invoke(["init", "--db", f"sqlite:///{tmp_path / 'new.sqlite'}", "--dir", str(target)])
    assert code == 0, lines
    assert sorted(p.name for p in target.iterdir()) == ["pseudonym.key", "signing.pem", "signing.pub.pem"]


def test_a_lookup_by_an_email_that_is_no_address_can_match(migrated: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """Why ``ledger lookup --email n/a`` is not refused: a record whose e-mail column held "N/A " is found by it."""
    with migrated.begin() as conn:
        conn.execute(
            sa.text("CREATE TABLE subscribers (id INTEGER PRIMARY KEY, email VARCHAR(320), subscribed_at TIMESTAMP)")
        )
        conn.execute(
            sa.text("INSERT INTO subscribers (id, email, subscribed_at) VALUES (:i, :e, :t)"),
            [
                {"i": 1, "e": "N/A ", "t": dt.datetime(2020, 1, 1)},
                {"i": 2, "e": "n/a", "t": dt.datetime(2020, 1, 1)},
                {"i": 3, "e": "someone@example.com", "t": dt.datetime(2020, 1, 1)},
            ],
        )
    rules = tmp_path / "pack.yaml"
    rules.write_text(PACK, encoding="utf-8")
    code, lines = invoke(["run", "--rules", str(rules), "--db", db_url, "--no-progress", "--as-of", "2026-01-01"])
    assert code == 0, lines
    result = CliRunner().invoke(
        main, ["ledger", "lookup", "--db", db_url, "--email", "n/a", "--format", "json"], env=KEY
    )
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    assert sorted((e["dataset"], e["transition"]) for e in found) == [("subscribers", "active->purged")] * 2
