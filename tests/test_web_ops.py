"""Console pages as an auditor reads them (issue 24): counts, dates on one line, no raw None,
a forecast with every dataset, and no PDF link where WeasyPrint cannot render."""

from __future__ import annotations

import re
import sys

import pytest
import sqlalchemy as sa
from console_world import World, sign_in

from retention.subjects import review
from retention.web import create_app


def text_of(page: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


def test_console_pages_read_right(world: World, migrated: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    c = sign_in(create_app(world.settings), "auditor")

    reviews = c.get("/reviews").text
    assert "built-in method" not in reviews
    with migrated.connect() as conn:
        batches = {b["id"]: b["items"] for b in review.list_batches(conn, include_done=True)}
    for batch_id, count in batches.items():
        assert re.search(rf'<a href="/reviews/{batch_id}">{batch_id}</a>.*?<td class="num">{count}</td>', reviews, re.S)

    ledger = c.get("/ledger").text
    assert "None" not in text_of(ledger)  # e.g. "max_count: None" in Detail
    rows = re.findall(r"<tr>\s*<td class=\"num\">\d+</td>(.*?)</tr>", ledger, re.S)
    assert rows and all(re.match(r'\s*<td class="nowrap">\d{4}-\d\d-\d\d \d\d:\d\d \w+</td>', row) for row in rows)

    forecast = text_of(c.get("/forecast").text)
    assert "payment_tokens purge awaiting review" in forecast  # the dataset declared review: true

    certificate = c.get(f"/runs/{world.run_id}/certificate").text
    try:
        import weasyprint  # noqa: F401
    except (ImportError, OSError):
        assert "certificate.pdf" not in certificate
    else:
        assert "certificate.pdf" in certificate
    monkeypatch.setitem(sys.modules, "weasyprint", None)  # importing it now fails, as without the package
    without = sign_in(create_app(world.settings), "auditor").get(f"/runs/{world.run_id}/certificate").text
    assert "certificate.pdf" not in without and "print this page" in without
