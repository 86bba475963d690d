"""Benchmark: the console's ledger page on a large ledger (keyset pagination).

    python bench/console.py --db sqlite --entries 1000000
    python bench/console.py --db postgresql://postgres@127.0.0.1/test --entries 1000000

Fills the ledger through ``ledger.append`` (a valid chain; not timed), then
times the whole ledger page over HTTP (routing, session check, query,
template) with Starlette's test client, for pages at the head, in the
middle and at the tail of the chain, and for each filter. Each figure is
the median of ``--repeat`` requests. The target is a median under 0.3 s.

    python bench/console.py --shop 500            # the demo shop (`retention demo` size), SQLite
    python bench/console.py --shop 2000 --ledger 1000000 --no-baseline   # the same pages on a 1M-entry ledger

``--shop N`` instead builds the demo shop with N customers, runs the
builtin marketplace pack once, and times the forecast (one plan at the
horizon's end, the active pass of simple datasets counted per week in SQL)
against its baseline in this same process (one plan per week,
``report.forecast_by_plans``), `retention report`, and the console's
forecast (cold, then cached), person, review, ledger and audit pages; it
prints medians, ratios and the load average. ``--ledger N`` first appends
N synthetic per-record purge entries (a valid chain under the shop's pack,
of records gone from its tables), so the pages are timed on a large ledger.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
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


def fill(
    engine: sa.Engine,
    entries: int,
    batch: int = 20_000,
    *,
    pack: tuple[str, str] = ("bench", "0" * 64),
    moves: Sequence[tuple[str, str]] | None = None,
    keys_from: int = 0,
) -> list[str]:
    """Append ``entries`` per-record entries in batches, spread over datasets, transitions, runs and days.

    ``pack``: the (id, digest) the entries name; ``moves``: the (dataset,
    transition) pairs they cycle through (default: DATASETS and TRANSITIONS,
    each cycled on its own); record keys count up from ``keys_from`` (above
    a demo shop's keys, the records are gone, as a purge claims).
    """
    runs = [f"00000000-0000-4000-8000-{i:012d}" for i in range(max(1, entries // 100_000))]
    written = 0
    started = time.monotonic()
    while written < entries:
        n = min(batch, entries - written)
        index = written // batch
        when = START + dt.timedelta(hours=index)
        if moves is None:
            dataset, transition = DATASETS[index % len(DATASETS)], TRANSITIONS[index % len(TRANSITIONS)]
        else:
            dataset, transition = moves[index % len(moves)]
        draft = ledger.RecordEntries(
            run_id=runs[min(written * len(runs) // entries, len(runs) - 1)],
            pack_id=pack[0],
            pack_digest=pack[1],
            dataset=dataset,
            transition=transition,
            action="delete",
            basis="Benchmark basis — kept 13 months",
            secret=SECRET,
            items=[(when, str(keys_from + written + i), str((written + i) % 50_000), None) for i in range(n)],
        )
        with engine.begin() as conn:
            ledger.append(conn, [draft], when)
        written += n
        print(f"\r  {written} entries ({time.monotonic() - started:.0f} s)", end="", file=sys.stderr)
    print(file=sys.stderr)
    return runs


def _timed(repeat: int, work: object) -> tuple[float, object]:
    """Median seconds of ``repeat`` calls of ``work`` and its last result."""
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = work()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


SHOP_PURGES = (
    ("analytics_events", "active->purged"),
    ("invoices", "active->purged"),
    ("payment_tokens", "active->purged"),
    ("customers", "archived->purged"),
)
"""The moves of the synthetic ledger added to a shop: purges, so every claim holds (their records are gone)."""


def shop(customers: int, repeat: int, ledger_entries: int = 0, baseline: bool = True) -> None:
    """Forecast, report and console pages on the demo shop after one run (see the module doc)."""
    import os

    from retention import commands
    from retention.engine import execute
    from retention.reporting import report
    from retention.timing.clock import Period

    folder = Path(tempfile.mkdtemp(prefix="retention-shop-bench-"))
    url = f"sqlite:///{folder / 'shop.sqlite'}"
    os.environ["RETENTION_PSEUDONYM_KEY"] = SECRET.decode()
    print(f"building the demo shop with {customers} customers ...", file=sys.stderr)
    commands.demo_build(url, customers=customers, seed=7)
    rules = ROOT / "rules" / "marketplace.yaml"
    loaded, when = commands.load_pack(rules, None, None)
    engine = create_engine(url)
    if ledger_entries:
        # Before the run: the synthetic history is older than tonight's entries, as a real ledger's is.
        print(f"appending {ledger_entries} ledger entries ...", file=sys.stderr)
        fill(engine, ledger_entries, pack=(loaded.id, loaded.digest), moves=SHOP_PURGES, keys_from=10_000_000)
    execute.run(engine, loaded, when, secret=SECRET, allow_mass=("*",))
    with engine.begin() as conn:
        accounts.add_user(conn, "bench", "auditor", "bench password 123", created_by="bench")
        entries = conn.execute(sa.text("SELECT count(*) FROM retention_ledger")).scalar_one()
    horizon = Period.parse("P3M")
    rows: list[tuple[str, float, float | None]] = []
    if baseline:
        base, reference = _timed(1, lambda: report.forecast_by_plans(engine, loaded, when, horizon))
        fast, result = _timed(repeat, lambda: report.forecast(engine, loaded, when, horizon))
        assert result.series == reference.series, "the forecast differs from the plan-per-week one"  # type: ignore[attr-defined]
        rows += [("forecast P3M, plan per week (baseline)", base, None), ("forecast P3M", fast, base / fast)]
    html_file = folder / "report.html"
    seconds, _ = _timed(1, lambda: commands.report(rules, url, None, "P3M", html_file))
    rows.append(("retention report --horizon P3M (own engine)", seconds, None))
    from starlette.testclient import TestClient

    settings = ConsoleSettings(db_url=url, rules=rules, forecast_horizon="P3M", secret=b"bench-cookie-secret")
    app = create_app(settings)
    client = TestClient(app, base_url="https://testserver", follow_redirects=False)
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
    assert token is not None
    client.post("/login", data={"csrf_token": token.group(1), "name": "bench", "password": "bench password 123"})
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/ledger").text)
    assert token is not None
    csrf = token.group(1)

    def get(path: str) -> object:
        response = client.get(path)
        assert response.status_code == 200, (path, response.status_code)
        return response

    def post(path: str, data: dict[str, str]) -> object:
        response = client.post(path, data={"csrf_token": csrf, **data})
        assert response.status_code == 200, (path, response.status_code)
        return response

    cold, _ = _timed(1, lambda: get("/forecast"))
    rows.append(("console /forecast, first load", cold, None))
    rows.append(("console /forecast, cached", _timed(repeat, lambda: get("/forecast"))[0], None))
    rows.append(("console /reviews", _timed(repeat, lambda: get("/reviews"))[0], None))
    rows.append(("console /ledger", _timed(repeat, lambda: get("/ledger"))[0], None))
    rows.append(
        ("console /ledger, middle page", _timed(repeat, lambda: get(f"/ledger?before={entries // 2}"))[0], None)
    )
    first, _ = _timed(1, lambda: post("/person", {"key": "1"}))
    rows.append(("console /person (subject 1), first", first, None))
    rows.append(("console /person (subject 1)", _timed(repeat, lambda: post("/person", {"key": "1"}))[0], None))
    rows.append(("console /person (subject 2)", _timed(repeat, lambda: post("/person", {"key": "2"}))[0], None))
    rows.append(
        ("console /audit (sample of 1000)", _timed(repeat, lambda: post("/audit", {"sample": "1000"}))[0], None)
    )
    rows.append(
        (
            "console /audit (every claim)",
            _timed(1 if entries > 100_000 else repeat, lambda: post("/audit", {}))[0],
            None,
        )
    )
    load = os.getloadavg()
    print(f"\ndemo shop, {customers} customers, {entries} ledger entries, SQLite; median of {repeat}")
    print("(baseline, first loads and, above 100k entries, the complete audit: 1 each)")
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (on {os.cpu_count()} cores)\n")
    print(f"{'what':46} {'median s':>9} {'vs baseline':>12}")
    for name, seconds, ratio in rows:
        versus = f"{ratio:.1f}x faster" if ratio else ""
        print(f"{name:46} {seconds:9.2f} {versus:>12}")
    app.state.console.dispose()
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default="sqlite", help="'sqlite' (a temporary file) or a database URL")
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--shop", type=int, default=None, help="customers of a demo shop: time forecast and pages")
    parser.add_argument("--ledger", type=int, default=0, help="with --shop: synthetic ledger entries added first")
    parser.add_argument("--no-baseline", action="store_true", help="with --shop: skip the plan-per-week forecast")
    args = parser.parse_args()
    logs.configure(level="error")
    if args.shop is not None:
        shop(args.shop, args.repeat, args.ledger, baseline=not args.no_baseline)
        return
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
