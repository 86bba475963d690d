"""Review context (issue 24): a reviewer sees dates, amounts and counts per year, never who.

The demo shop's invoices under ``review: true`` with ``review_columns:
[amount]``: the review page's figures are compared with SQL written here
over the batch's own record keys; the pack refuses review columns that name
or mask the person.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from console_world import PASSWORD, SECRET, SHOP_END, client, csrf_of

from retention.demo import build_shop
from retention.engine import execute
from retention.errors import PackError
from retention.policy import load_file
from retention.store import tables as store
from retention.web import ConsoleSettings, accounts, create_app

ROOT = Path(__file__).resolve().parent.parent
AS_OF = dt.datetime(2026, 11, 2, 3, tzinfo=dt.UTC)


def _pack(tmp_path: Path, extra: str = "    review: true\n    review_columns: [amount]\n") -> Path:
    text = (ROOT / "rules" / "marketplace.yaml").read_text(encoding="utf-8")
    text = text.replace("  invoices:\n", "  invoices:\n" + extra, 1)
    path = tmp_path / "invoices-review.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_review_columns_that_name_the_person_are_refused(tmp_path: Path) -> None:
    """The subject column, the key, a masked column, or review_columns without review: each refused at load."""
    for extra, words in [
        ("    review: true\n    review_columns: [customer_id]\n", "customer_id names or identifies the person"),
        ("    review: true\n    review_columns: [id]\n", "id names or identifies the person"),
        ("    review_columns: [amount]\n", "they need review: true"),
        ("    review: true\n    review_columns: [amount, amount]\n", "a column is named twice"),
    ]:
        with pytest.raises(PackError) as caught:
            load_file(_pack(tmp_path, extra))
        assert words in str(caught.value)
    text = (ROOT / "rules" / "marketplace.yaml").read_text(encoding="utf-8")
    masked = text.replace("  customers:\n", "  customers:\n    review: true\n    review_columns: [country, name]\n", 1)
    path = tmp_path / "masked.yaml"
    path.write_text(masked, encoding="utf-8")
    with pytest.raises(PackError) as caught:  # the pack masks customers.name at archiving
        load_file(path)
    assert "name names or identifies the person" in str(caught.value)


def test_the_review_page_shows_dates_amounts_and_years_of_the_batch(
    migrated: sa.Engine, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Totals, extremes and per-year counts equal SQL over the batch's keys; no name, address or key shown."""
    monkeypatch.setenv("RETENTION_PSEUDONYM_KEY", SECRET.decode())
    build_shop(migrated, seed=11, customers=60, end=SHOP_END)
    rules = _pack(tmp_path)
    result = execute.run(migrated, load_file(rules), AS_OF, secret=SECRET, allow_mass=("*",))
    assert result.status == "succeeded", result
    rb, ri = store.review_batches, store.review_items
    with migrated.begin() as conn:
        batch = conn.execute(sa.select(rb.c.id).where(rb.c.dataset == "invoices")).scalar_one()
        keys = [int(k) for k in conn.execute(sa.select(ri.c.record_key).where(ri.c.batch_id == batch)).scalars()]
        accounts.add_user(conn, "ada.auditor", "auditor", PASSWORD, created_by="test")
        query = sa.text("SELECT invoice_date, amount, billing_name FROM invoices WHERE id IN :keys")
        rows = conn.execute(query.bindparams(sa.bindparam("keys", expanding=True)), {"keys": keys}).all()
    assert len(rows) == len(keys) > 3
    days = [r[0] if isinstance(r[0], dt.date) else dt.date.fromisoformat(str(r[0])[:10]) for r in rows]
    amounts = [Decimal(str(r[1])) for r in rows]
    per_year: dict[int, int] = {}
    for day in days:
        per_year[day.year] = per_year.get(day.year, 0) + 1
    settings = ConsoleSettings(db_url=db_url, rules=rules, secret=b"review-context-cookie-secret")
    c = client(create_app(settings))
    token = csrf_of(c)
    c.post("/login", data={"csrf_token": token, "name": "ada.auditor", "password": PASSWORD})
    page = c.get(f"/reviews/{batch}").text
    text = html.unescape(re.sub(r"<[^>]+>", " ", page))
    text = re.sub(r"\s+", " ", text)
    assert f"{len(keys)} of the batch's records are in the table" in text
    assert f"invoice_date {min(days)} {max(days)} " in text
    for year, n in per_year.items():
        assert f"{year}: {n}" in text
    assert f"amount {sum(amounts)} {min(amounts)} {max(amounts)} " in text
    for name, *_ in [(r[2],) for r in rows if r[2]]:
        assert name not in page
    assert "customer_id" not in page.split("What these records are", 1)[1].split("</section>", 1)[0]
