"""Nothing silent (issue 23): an instruction the pack cannot act on is refused, never a no-op.

Per command that names a subject, a dataset, an identity or a date: the
refusal exits 2 with one line naming why and what to do, and nothing was
written (no request, no hold, no run). On every database, on the demo shop
with the marketplace pack, which declares no ``email:`` identity.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from retention.cli import main
from retention.demo import build_shop
from retention.store import tables as store
from retention.timing.clock import utcnow

ENV = {"RETENTION_PSEUDONYM_KEY": "nothing-silent-key"}
MARKETPLACE = str(Path(__file__).resolve().parent.parent / "rules" / "marketplace.yaml")


@pytest.fixture
def shop(migrated: sa.Engine) -> sa.Engine:
    build_shop(migrated, seed=23, customers=40, end=dt.date(2026, 11, 1))
    return migrated


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=ENV)


def _refused(result: Result) -> str:
    """The one line of a refusal (exit 2, no traceback)."""
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


def _rows(engine: sa.Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def _an_address(engine: sa.Engine) -> str:
    with engine.connect() as conn:
        return str(conn.execute(sa.text("SELECT email FROM customers ORDER BY id")).scalars().first())


def test_erasure_by_email_without_an_email_identity_is_refused(shop: sa.Engine, db_url: str) -> None:
    """On main: exit 0 with a warning, and the request later closed as 'no records found'."""
    line = _refused(
        _invoke(
            "erasure", "add", "--db", db_url, "--rules", MARKETPLACE,
            "--email", _an_address(shop), "--received", "2026-11-02",
        )
    )  # fmt: skip
    assert "--email reaches no record" in line
    assert "declares an 'email:' identity" in line
    assert "customers (customers.email)" in line  # where an identity could be declared
    assert "@" not in line  # never the address typed
    assert _rows(shop, store.erasure_requests) == 0
    # By id it is filed as before.
    assert (
        _invoke(
            "erasure", "add", "--db", db_url, "--rules", MARKETPLACE, "--subject", "7", "--received", "2026-11-02"
        ).exit_code
        == 0
    )
    assert _rows(shop, store.erasure_requests) == 1


def test_hold_by_email_without_an_email_identity_is_refused(shop: sa.Engine, db_url: str) -> None:
    """On main: 'hold 1 placed (subject)', a hold that held nothing."""
    address = _an_address(shop)
    line = _refused(
        _invoke("hold", "add", "--db", db_url, "--rules", MARKETPLACE, "--email", address, "--reason", "case 1")
    )
    assert "--email reaches no record" in line and "customers (customers.email)" in line
    line = _refused(_invoke("hold", "add", "--db", db_url, "--email", address, "--reason", "case 1"))
    assert "--email needs --rules" in line
    line = _refused(_invoke("hold", "add", "--db", db_url, "--dataset", "customers", "--reason", "case 1"))
    assert "--dataset needs --rules" in line
    line = _refused(
        _invoke("hold", "add", "--db", db_url, "--rules", MARKETPLACE, "--dataset", "customer", "--reason", "case 1")
    )
    assert "no dataset 'customer'" in line
    assert _rows(shop, store.holds) == 0


def test_run_with_an_unknown_allow_mass_name_is_refused(shop: sa.Engine, db_url: str) -> None:
    """On main: accepted, the run went ahead overriding nothing."""
    line = _refused(
        _invoke(
            "run", "--db", db_url, "--rules", MARKETPLACE, "--as-of", "2026-11-01", "--no-progress",
            "--allow-mass", "invoice",
        )
    )  # fmt: skip
    assert "--allow-mass 'invoice': no such dataset in pack marketplace (did you mean 'invoices'?)" in line
    line = _refused(
        _invoke(
            "run", "--db", db_url, "--rules", MARKETPLACE, "--as-of", "2026-11-01", "--shards", "2",
            "--allow-mass", "nosuch",
        )
    )  # fmt: skip
    assert "--allow-mass 'nosuch': no such dataset" in line
    assert _rows(shop, store.runs) == 0


def test_run_as_of_the_future_is_refused_unless_allowed(shop: sa.Engine, db_url: str) -> None:
    """On main: `run --as-of <next year>` purged records before their term, with no confirmation."""
    # 1 January the year after next: a year ahead or more, in every zone. Next year's 1 January is already past
    # in Paris (MARKETPLACE's zone) from 23:00 UTC on 31 December, and a run crossing midnight then saw it go by.
    future = str(utcnow().year + 2) + "-01-01"
    base = ["--db", db_url, "--rules", MARKETPLACE, "--as-of", future]
    line = _refused(_invoke("run", *base, "--no-progress", "--allow-mass", "*"))
    assert line.startswith("Error: --as-of ") or "--as-of " in line
    assert "is in the future" in line and "--allow-future-as-of" in line
    line = _refused(_invoke("run", *base, "--shards", "2"))
    assert "is in the future" in line
    assert _rows(shop, store.runs) == 0
    assert _invoke("plan", *base, "--no-record").exit_code == 0  # plan stays free
    allowed = _invoke("run", *base, "--no-progress", "--allow-mass", "*", "--allow-future-as-of")
    assert allowed.exit_code == 0, allowed.output
    assert _rows(shop, store.runs) == 1


def test_a_request_s_receipt_extension_and_outcome_are_in_the_ledger(shop: sa.Engine, db_url: str) -> None:
    """On main only the outcome had an entry; receipt and extension left no evidence in the ledger."""
    import json

    base = ["--db", db_url, "--rules", MARKETPLACE]
    assert _invoke("erasure", "add", *base, "--subject", "999", "--received", "2026-10-20").exit_code == 0
    extended = _invoke("erasure", "extend", *base, "1", "--reason", "many requests this month")
    assert extended.exit_code == 0, extended.output
    ran = _invoke("run", *base, "--as-of", "2026-11-02", "--no-progress", "--allow-mass", "*")
    assert ran.exit_code == 0, ran.output
    found = _invoke("ledger", "lookup", "--db", db_url, "--subject", "999", "--format", "json")
    entries = [(e["transition"], json.loads(e["detail"]) if isinstance(e["detail"], str) else e["detail"])
               for e in json.loads(found.output)]  # fmt: skip
    assert [t for t, _ in entries] == ["erasure_received", "erasure_extended", "erasure_processed"]
    assert entries[0][1] == {"erasure_request": 1, "received_on": "2026-10-20", "deadline": "2026-11-20"}
    assert entries[1][1]["erasure_request"] == 1 and entries[1][1]["deadline"] == "2027-01-20"
    assert entries[2][1] == {"erasure_request": 1, "outcome": "no records found"}
    assert "many requests" not in found.output  # the reason stays out of the ledger
    listed = json.loads(_invoke("erasure", "list", "--db", db_url, "--all", "--format", "json").output)
    assert [(r["id"], r["status"], r["outcome"]) for r in listed] == [(1, "processed", "no records found")]
