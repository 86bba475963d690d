"""Benchmark: the console's ledger page on a large ledger (keyset pagination).

    python bench/console.py --db sqlite --entries 1000000
    python bench/console.py --db postgresql://postgres@127.0.0.1/test --entries 1000000

Fills the ledger through ``ledger.append`` (a valid chain; not timed), then
times the whole ledger page over HTTP (routing, session check, query,
template) with Starlette's test client, for pages at the head, in the
middle and at the tail of the chain, and for each filter. Each figure is
the median of ``--repeat`` requests. The target is a median under 0.3 s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from retention import logs  # noqa: E402
from retention.ledger import chain as ledger  # noqa: E402
from retention.store import migrate  # noqa: E402
from retention.store.config import create_engine  # noqa: E402
from retention.web import (  # noqa: E402
    ConsoleSettings,
    accounts,
    create_app,
)

SECRET = b"bench-key"
DATASETS = ("customers", "orders", "invoices", "analytics_events", "payment_tokens")
TRANSITIONS = ("active->purged", "active->inactive", "inactive->archived", "archived->purged")
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def fill(engine: sa.Engine, entries: int, batch: int = 20_000) -> list[str]:
    """Append ``entries`` per-record entries in batches, spread over datasets, transitions, runs and days."""
    runs = [f"00000000-0000-4000-8000-{i:012d}" for i in range(max(1, entries // 100_000))]
    written = 0
    started = time.monotonic()
    while written < entries:
        n = min(batch, entries - written)
        index = written // batch
        when = START + dt.timedelta(hours=index)
        draft = ledger.RecordEntries(
            run_id=runs[min(written * len(runs) // entries, len(runs) - 1)],
            pack_id="bench",
            pack_digest="0" * 64,
            dataset=DATASETS[index % len(DATASETS)],
            transition=TRANSITIONS[index % len(TRANSITIONS)],
            action="delete",
            basis="Benchmark basis — kept 13 months",
            secret=SECRET,
            items=[(when, str(written + i), str((written + i) % 50_000), None) for i in range(n)],
        )
        with engine.begin() as conn:
            ledger.append(conn, [draft], when)
        written += n
        print(f"\r  {written} entries ({time.monotonic() - started:.0f} s)", end="", file=sys.stderr)
    print(file=sys.stderr)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default="sqlite", help="'sqlite' (a temporary file) or a database URL")
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    logs.configure(level="error")
    folder = Path(tempfile.mkdtemp(prefix="retention-console-bench-"))
    url = f"sqlite:///{folder / 'bench.sqlite'}" if args.db == "sqlite" else args.db
    engine = create_engine(url)
    if migrate.current_revision(engine):
        migrate.downgrade(engine, "base")
    migrate.upgrade(engine)
    print(f"filling {args.entries} ledger entries in {engine.dialect.name} ...", file=sys.stderr)
    runs = fill(engine, args.entries)
    with engine.begin() as conn:
        accounts.add_user(conn, "bench", "auditor", "bench password 123", created_by="bench")
    from starlette.testclient import TestClient

    app = create_app(ConsoleSettings(db_url=url, secret=b"bench-cookie-secret"))
    client = TestClient(app, base_url="https://testserver", follow_redirects=False)
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
    assert token is not None
    signed = client.post(
        "/login", data={"csrf_token": token.group(1), "name": "bench", "password": "bench password 123"}
    )
    assert signed.status_code == 303
    n = args.entries
    mid_day = (START + dt.timedelta(hours=n // 20_000 // 2)).date().isoformat()
    cases = [
        ("first page (newest)", "/ledger"),
        ("page in the middle", f"/ledger?before={n // 2}"),
        ("last page (oldest)", "/ledger?before=51"),
        ("newer from the middle", f"/ledger?after={n // 2}"),
        ("dataset filter, middle", f"/ledger?dataset=invoices&before={n // 2}"),
        ("transition filter, middle", f"/ledger?transition=archived-%3Epurged&before={n // 2}"),
        ("run filter, first page", f"/ledger?run={runs[len(runs) // 2]}"),
        ("run filter, middle of run", f"/ledger?run={runs[len(runs) // 2]}&before={n // 2 + 50_000}"),
        ("since + until", f"/ledger?since={mid_day}&until=2099-01-01"),
    ]
    print(f"\nledger page, {n} entries on {engine.dialect.name}, median of {args.repeat} requests\n")
    print(f"{'page':32} {'median s':>9} {'max s':>8} {'rows':>5}")
    medians = []
    for name, path in cases:
        times = []
        rows = 0
        for _ in range(args.repeat):
            started = time.perf_counter()
            response = client.get(path)
            times.append(time.perf_counter() - started)
            assert response.status_code == 200, (path, response.status_code)
            rows = len(re.findall(r'<tr>\s*<td class="num">', response.text))
        medians.append(statistics.median(times))
        print(f"{name:32} {statistics.median(times):9.3f} {max(times):8.3f} {rows:5d}")
    print(f"\nmedian over all pages: {statistics.median(medians):.3f} s (target < 0.3 s)")
    app.state.console.dispose()
    engine.dispose()


if __name__ == "__main__":
    main()
