"""Operator commands' hostile pass (branch opsaudit): refusals for what was accepted and then did nothing.

Each case used to exit 0 (or print a traceback) and now exits 2 with one line:

* a file to write in a folder that takes no new files (``/proc``, a read-only
  mount: root passes ``os.access`` there), or an archive key file in a missing
  folder: a traceback after the work, now refused before it;
* ``erasure close`` of a closed request moved its ``closed_at`` and said
  "closed"; ``erasure extend`` of a closed request extended it;
* ``ledger audit --dataset`` naming no dataset said "ok: 0 claims checked";
* ``ledger lookup``/``prove`` with a person and a record used the person and
  ignored ``--dataset``/``--key``;
* ``--pack`` without ``--rules``, or naming no pack there, on the commands that
  read a pack only for its timezone: ignored, instants in UTC;
* ``db upgrade --revision`` older than the tables, ``db downgrade`` to a later
  one: nothing done, exit 0 ("downgraded to head");
* ``fleet run --json --format csv``: ``--json`` won silently.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from scaffold import one_line_refusal

from retention.cli import main
from retention.store import migrate
from retention.store import tables as store

PACK = """
pack: shop
version: "1"
effective_from: 2020-01-01
timezone: Europe/Paris
guard: {max_share: 1.0}
datasets:
  customers:
    table: customers
    key: id
    subject_key: id
    basis: policy
    on_erasure: purged
    keep:
      - clock: {column: seen, type: date}
        period: P3Y
    lifecycle:
      - to: purged
        action: delete
"""
ENV = {"RETENTION_PSEUDONYM_KEY": "opsaudit-key"}
UNWRITABLE = "/proc/retention-opsaudit-"  # root passes os.access there; the kernel refuses a new file


def invoke(args: list[str]) -> Result:
    return CliRunner().invoke(main, args, env=ENV, prog_name="retention")


refused = one_line_refusal


@pytest.fixture
def shop(migrated: sa.Engine, db_url: str, tmp_path: Path) -> dict[str, str]:
    with migrated.begin() as conn:
        conn.execute(sa.text("CREATE TABLE customers (id INTEGER PRIMARY KEY, seen DATE)"))
        conn.execute(sa.text("INSERT INTO customers (id, seen) VALUES (1, '2020-05-01')"))
    rules = tmp_path / "shop.yaml"
    rules.write_text(PACK, encoding="utf-8")
    return {"db": db_url, "rules": str(rules), "dir": str(tmp_path)}


# --------------------------------------------------------------------------
# Files to write: probed before the work (no database involved)
# --------------------------------------------------------------------------

OUTPUTS: list[tuple[list[str], str]] = [
    (["ledger", "export", "--output", f"{UNWRITABLE}x.jsonl"], "--output"),
    (["ledger", "checkpoint", "--key", "{dir}/input", "--output", f"{UNWRITABLE}cp.json"], "--output"),
    (["ledger", "prove", "--subject", "1", "--checkpoint", "{dir}/input", "--output", f"{UNWRITABLE}p"], "--output"),
    (["ledger", "keygen", "--key", f"{UNWRITABLE}signing.pem"], "--key"),
    (["ledger", "keygen", "--key", "{dir}/signing.pem", "--public", f"{UNWRITABLE}public.pem"], "--public"),
    (["archive", "keygen", "--key-file", f"{UNWRITABLE}archive.key"], "--key-file"),
]


@pytest.mark.parametrize(("args", "option"), OUTPUTS, ids=[" ".join(a[:2]) + " " + o for a, o in OUTPUTS])
def test_a_file_in_a_folder_that_takes_none_is_refused_before_the_work(
    tmp_path: Path, args: list[str], option: str
) -> None:
    """Was a traceback (exit 1) once the export was read, the checkpoint signed or the proof built."""
    (tmp_path / "input").write_text("{}", encoding="utf-8")
    db = ["--db", f"sqlite:///{tmp_path / 'absent.sqlite'}"] if args[1] not in ("keygen",) else []
    filled = [a.format(dir=tmp_path) for a in args]
    target = next(a for a in filled if a.startswith(UNWRITABLE))
    line = refused(invoke([*filled, *db]))
    assert line == (
        f"error: Invalid value for '{option}': {target} cannot be written (/proc takes no new files) "
        f"(see 'retention {args[0]} {args[1]} --help')"
    )
    assert not (tmp_path / "signing.pem").exists()  # the private key is not written before its public half fails


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ("{dir}/missing/archive.key", "the folder {dir}/missing does not exist"),
        ("{dir}", "{dir} is a folder; give a file name"),
        ("", "no file name given"),
    ],
    ids=["missing-folder", "folder", "empty"],
)
def test_archive_keygen_names_what_is_wrong_with_the_path(tmp_path: Path, where: str, reason: str) -> None:
    """A missing folder was a traceback; a folder or '' said ". exists; never overwritten"."""
    line = refused(invoke(["archive", "keygen", "--key-file", where.format(dir=tmp_path)]))
    assert line == (
        f"error: Invalid value for '--key-file': {reason.format(dir=tmp_path)} (see 'retention archive keygen --help')"
    )


# --------------------------------------------------------------------------
# Erasure requests: a closed request is neither closed again nor extended
# --------------------------------------------------------------------------


def test_closing_a_closed_request_is_refused_and_keeps_its_date(shop: dict[str, str], migrated: sa.Engine) -> None:
    received = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).date().isoformat()
    add = ["erasure", "add", "--db", shop["db"], "--rules", shop["rules"], "--subject", "1", "--received", received]
    assert invoke(add).exit_code == 0
    first = invoke(["erasure", "close", "1", "--db", shop["db"]])
    assert (first.exit_code, first.output.splitlines()) == (0, ["erasure request 1 closed"])
    er = store.erasure_requests
    past = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    with migrated.begin() as conn:  # the first close, dated where a second one would visibly move it
        conn.execute(er.update().where(er.c.id == 1).values(closed_at=past))
    line = refused(invoke(["erasure", "close", "1", "--db", shop["db"]]))
    assert line == "error: erasure request 1 was already closed on 2026-01-02"
    with migrated.connect() as conn:
        closed_at = conn.execute(sa.select(er.c.closed_at).where(er.c.id == 1)).scalar_one()
    assert closed_at.replace(tzinfo=dt.UTC) == past
    extend = ["erasure", "extend", "1", "--db", shop["db"], "--rules", shop["rules"], "--reason", "complex"]
    line = refused(invoke(extend))
    assert line == "error: erasure request 1 was closed on 2026-01-02; a closed request has no deadline"
    with migrated.connect() as conn:
        row = conn.execute(sa.select(er.c.extended_on).where(er.c.id == 1)).one()
        entries = conn.execute(sa.select(sa.func.count()).select_from(store.ledger)).scalar_one()
    assert row.extended_on is None
    assert entries == 1  # the request's receipt only: no extension entry


# --------------------------------------------------------------------------
# Ledger: a dataset no pack has, a person and a record together
# --------------------------------------------------------------------------


def test_ledger_audit_of_a_dataset_no_pack_has_is_refused(shop: dict[str, str]) -> None:
    """It said "ledger audit ok: 0 claims checked in 0 dataset(s), each holds" with exit 0."""
    args = ["ledger", "audit", "--db", shop["db"], "--rules", shop["rules"]]
    line = refused(invoke([*args, "--dataset", "custommers"]))
    assert line == "error: --dataset: no dataset 'custommers' in the packs under --rules; valid: customers"
    assert invoke([*args, "--dataset", "customers"]).exit_code == 0


SELECTIONS = [
    (["lookup", "--subject", "1", "--dataset", "customers", "--key", "1"], "--subject", "--dataset and --key"),
    (["lookup", "--subject", "1", "--dataset", "customers"], "--subject", "--dataset"),
    (["lookup", "--email", "a@example.test", "--key", "1"], "--email", "--key"),
    (["prove", "--subject", "1", "--dataset", "customers", "--key", "1"], "--subject", "--dataset and --key"),
]


@pytest.mark.parametrize(("args", "person", "ignored"), SELECTIONS, ids=[f"{a[0]} {p} {i}" for a, p, i in SELECTIONS])
def test_a_person_and_a_record_together_are_refused(
    shop: dict[str, str], args: list[str], person: str, ignored: str
) -> None:
    """The person won and the record was ignored, exit 0: a proof "of order 42" proved a subject's entries."""
    checkpoint = Path(shop["dir"], "checkpoint.json")
    checkpoint.write_text("{}", encoding="utf-8")
    extra = ["--checkpoint", str(checkpoint)] if args[0] == "prove" else []
    line = refused(invoke(["ledger", *args, *extra, "--db", shop["db"]]))
    assert line == f"error: give {person} or --dataset with --key, not both: {ignored} would be ignored"


# --------------------------------------------------------------------------
# --pack read only for a timezone: needs --rules, and must name a pack there
# --------------------------------------------------------------------------

ZONE_COMMANDS = [
    ["hold", "list"],
    ["status"],
    ["ledger", "show"],
    ["ledger", "lookup", "--subject", "1"],
    ["erasure", "list"],
    ["review", "list"],
]


@pytest.mark.parametrize("command", ZONE_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_pack_without_rules_or_naming_no_pack_is_refused(shop: dict[str, str], command: list[str]) -> None:
    """Both used to show instants in UTC with exit 0: the pack typed for its timezone was never read."""
    base = [*command, "--db", shop["db"]]
    line = refused(invoke([*base, "--pack", "shop"]))
    assert line == "error: --pack needs --rules (or RETENTION_RULES): it picks one of the packs found there"
    line = refused(invoke([*base, "--rules", shop["rules"], "--pack", "shpo"]))
    assert line == "error: --pack: no pack 'shpo'; valid: shop"
    accepted = invoke([*base, "--rules", shop["rules"], "--pack", "shop"])
    assert accepted.exit_code == 0, accepted.output


# --------------------------------------------------------------------------
# db upgrade / downgrade: a direction that cannot take effect
# --------------------------------------------------------------------------


def test_db_upgrade_back_and_downgrade_forward_are_refused(shop: dict[str, str], migrated: sa.Engine) -> None:
    """Both did nothing with exit 0; ``downgrade head`` said "downgraded to head"."""
    from retention.store.config import safe_url

    head = migrate.head_revision()
    db, shown = shop["db"], safe_url(shop["db"])
    line = refused(invoke(["db", "upgrade", "--db", db, "--revision", "0001"]))
    assert line == (
        f"error: the engine's tables are at {head}, after 0001: upgrade never goes back; "
        "to remove the later migrations run: retention db downgrade 0001"
    )
    same = invoke(["db", "downgrade", "head", "--db", db])
    assert (same.exit_code, same.output.splitlines()) == (
        0,
        [f"database {shown}: already at {head}; nothing to downgrade"],
    )
    again = invoke(["db", "upgrade", "--db", db])
    assert (again.exit_code, again.output.splitlines()) == (
        0,
        [f"database {shown}: already at {head}; nothing to upgrade"],
    )
    back = invoke(["db", "downgrade", "0020", "--db", db])
    assert (back.exit_code, back.output.splitlines()) == (0, [f"database {shown}: {head} -> 0020_keycase"])
    line = refused(invoke(["db", "downgrade", str(head), "--db", db]))
    assert line == (
        f"error: the engine's tables are at 0020_keycase, before {head}: downgrade never goes forward; "
        f"run: retention db upgrade --revision {head}"
    )
    assert migrate.current_revision(migrated) == "0020_keycase"
    forward = invoke(["db", "upgrade", "--db", db])
    assert (forward.exit_code, forward.output.splitlines()) == (0, [f"database {shown}: 0020_keycase -> {head}"])


# --------------------------------------------------------------------------
# fleet run: two formats
# --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "table"])
def test_fleet_json_with_another_format_is_refused(tmp_path: Path, fmt: str) -> None:
    """``--json`` won over the ``--format`` typed beside it, exit 0 (no fleet file is read: refused first)."""
    line = refused(invoke(["fleet", "run", "--targets", str(tmp_path / "fleet.yaml"), "--json", "--format", fmt]))
    assert line == f"error: --json and --format {fmt} name two formats: give one"


# --------------------------------------------------------------------------
# report --horizon P0D; ledger export stopped midway
# --------------------------------------------------------------------------


@pytest.mark.parametrize("horizon", ["P0D", "P0Y0M", "P0W"])
def test_an_empty_report_horizon_is_refused(tmp_path: Path, horizon: str) -> None:
    """It forecast nothing ("0 more over 0 weeks", exit 0), a chart that read as a quiet half year."""
    args = ["report", "--rules", "builtin:marketplace", "--db", f"sqlite:///{tmp_path / 'absent.sqlite'}"]
    line = refused(invoke([*args, "--html", str(tmp_path / "r.html"), "--horizon", horizon]))
    hint = "(see 'retention report --help')"
    assert line == f"error: Invalid value for '--horizon': {horizon} is empty; give at least P1D {hint}"


def test_an_export_stopped_midway_leaves_no_truncated_file(
    shop: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C (or a lost connection) during an export left a truncated file under the name asked for, over any
    earlier complete export; the export now writes beside it and renames only once complete."""
    from retention.ledger import chain

    hold = invoke(["hold", "add", "--db", shop["db"], "--subject", "1", "--reason", "r"])
    assert hold.exit_code == 0, hold.output
    target = tmp_path / "ledger.jsonl"
    target.write_text("an earlier complete export\n", encoding="utf-8")
    real = chain.export

    def interrupted(engine: sa.Engine, fmt: str, out: object, **filters: object) -> int:
        real(engine, fmt, out, **filters)
        raise KeyboardInterrupt

    monkeypatch.setattr(chain, "export", interrupted)
    stopped = invoke(["ledger", "export", "--db", shop["db"], "--output", str(target)])
    assert (stopped.exit_code, [line for line in stopped.output.splitlines() if line]) == (1, ["Aborted!"])  # click
    assert target.read_text(encoding="utf-8") == "an earlier complete export\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".part")) == []
    monkeypatch.setattr(chain, "export", real)
    done = invoke(["ledger", "export", "--db", shop["db"], "--output", str(target)])
    assert done.exit_code == 0, done.output
    assert '"transition": "hold_placed"' in target.read_text(encoding="utf-8")


# --------------------------------------------------------------------------
# ledger show/export --run: the id as tables show it; filters no entry can match
# --------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["ledger", "show", "--format", "csv"], ["ledger", "export", "--format", "csv"]])
def test_run_filter_takes_the_start_of_an_id_as_tables_show_it(
    shop: dict[str, str], migrated: sa.Engine, command: list[str]
) -> None:
    """Tables print a run id's first 8 characters; ``--run`` with them matched nothing (empty, exit 0)."""
    done = invoke(["run", "--rules", shop["rules"], "--db", shop["db"], "--no-progress", "--as-of", "2026-01-01"])
    assert done.exit_code == 0, done.output
    with migrated.connect() as conn:
        run_id = conn.execute(sa.select(store.runs.c.id)).scalar_one()
    base = [*command, "--db", shop["db"]]
    shown = invoke([*base, "--run", run_id[:8]])
    assert shown.exit_code == 0, shown.output
    whole = invoke([*base, "--run", run_id])
    assert shown.output == whole.output and run_id in whole.output and "active->purged" in whole.output
    other = "f" * 8 if not run_id.startswith("f") else "0" * 8
    assert refused(invoke([*base, "--run", other])) == (
        f"error: --run: no run id starts with '{other}'; give a whole run id or the start of one"
    )


FILTERS = [
    (["--run", ""], "Invalid value for '--run': the run id is empty"),
    (["--run", "a\nb"], "Invalid value for '--run': the run id contains the control character U+000A"),
    (["--run", "r" * 37], "Invalid value for '--run': the run id has 37 characters; at most 36"),
    (["--transition", "t" * 41], "Invalid value for '--transition': the transition has 41 characters; at most 40"),
    (["--transition", " "], "Invalid value for '--transition': the transition is empty"),
]


@pytest.mark.parametrize("command", [["ledger", "show"], ["ledger", "export"]], ids=" ".join)
@pytest.mark.parametrize(("extra", "line"), FILTERS, ids=[f"{e[0]} #{i}" for i, (e, _) in enumerate(FILTERS)])
def test_a_ledger_filter_no_entry_can_match_is_refused(
    tmp_path: Path, command: list[str], extra: list[str], line: str
) -> None:
    """An empty, multi-line or over-long --run or --transition printed an empty result with exit 0."""
    db = ["--db", f"sqlite:///{tmp_path / 'absent.sqlite'}"]
    assert refused(invoke([*command, *db, *extra])) == f"error: {line} (see 'retention {' '.join(command)} --help')"


def test_ledger_verify_with_a_public_key_and_no_checkpoint_is_refused(shop: dict[str, str], tmp_path: Path) -> None:
    """The typed key checked nothing and "ledger verified" read as if a signed head had been checked with it."""
    public = tmp_path / "public.pem"
    made = invoke(["ledger", "keygen", "--key", str(tmp_path / "signing.pem"), "--public", str(public)])
    assert made.exit_code == 0, made.output
    line = refused(invoke(["ledger", "verify", "--db", shop["db"], "--public-key", str(public)]))
    assert line == "error: --public-key checks a signed checkpoint: give --checkpoint FILE with it"
    plain = invoke(["ledger", "verify", "--db", shop["db"]])
    assert plain.exit_code == 0, plain.output
