"""A reproducible synthetic shop matching ``rules/marketplace.yaml``.

Everything derives from the seed and the date range (never the wall clock),
so a test can rebuild the same shop and compute by itself which records each
policy should have moved at any date. The data spreads over many years and
includes the edge cases the engine must get right: clocks on 29 February,
on month ends, on the Europe/Paris DST change days and on local midnight;
customers with no clock at all; clocks in the future.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from retention.dialects import Dialect, dialect_for

PARIS = dt.timezone(dt.timedelta(hours=1))  # only to place edge cases near local midnight

SHOP_TABLES = (
    "customers",
    "orders",
    "invoices",
    "browsing_events",
    "analytics_events",
    "review_access_logs",
    "payment_tokens",
)

PII_COLUMNS: dict[str, list[str]] = {
    "customers": ["email", "name", "phone", "postcode"],
    "invoices": ["billing_name", "billing_address"],
    "browsing_events": ["url"],
    "analytics_events": ["visitor_id", "ip"],
    "review_access_logs": ["ip", "user_agent"],
    "payment_tokens": ["token"],
}

AWARE = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
NAIVE = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

FIRST = ["Ada", "Bruno", "Chloé", "Dries", "Emma", "Farid", "Greta", "Hugo", "Inès", "Jan"]
LAST = ["Martin", "Bernard", "Dubois", "Janssens", "Peeters", "Moreau", "Laurent", "Smit"]
WORDS = ["lamp", "chair", "kettle", "boots", "scarf", "book", "mug", "desk", "plant", "rug"]
AGENTS = ["Mozilla/5.0 (X11; Linux)", "Mozilla/5.0 (Macintosh)", "Mozilla/5.0 (iPhone)"]
EDGE_DAYS = [
    dt.date(2016, 2, 29),
    dt.date(2020, 2, 29),
    dt.date(2024, 2, 29),
    dt.date(2021, 1, 31),
    dt.date(2022, 3, 27),
    dt.date(2022, 10, 30),
    dt.date(2023, 3, 26),
    dt.date(2023, 10, 29),
    dt.date(2024, 3, 31),
    dt.date(2024, 10, 27),
    dt.date(2019, 12, 31),
    dt.date(2021, 6, 30),
]


def shop_metadata() -> sa.MetaData:
    """The shop's tables, with foreign keys and an index on every clock and subject column."""
    md = sa.MetaData()
    sa.Table(
        "customers",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("email", sa.String(255), nullable=False),
        sa.Column("name", sa.String(200)),
        sa.Column("phone", sa.String(40)),
        sa.Column("postcode", sa.String(20)),
        sa.Column("country", sa.String(2)),
        sa.Column("created_at", NAIVE, nullable=False),
        sa.Column("last_activity_at", NAIVE, index=True),
        sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.true()),
    )
    sa.Table(
        "orders",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id"), nullable=False),
        sa.Column("created_at", AWARE, nullable=False),
        sa.Column("total", sa.Numeric(10, 2), nullable=False),
        sa.Index("ix_orders_customer_created", "customer_id", "created_at"),
    )
    sa.Table(
        "invoices",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("order_id", sa.Integer, sa.ForeignKey("orders.id"), nullable=False),
        sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id"), nullable=False, index=True),
        sa.Column("invoice_date", sa.Date, nullable=False, index=True),
        sa.Column("amount", sa.Numeric(10, 2), nullable=False),
        sa.Column("billing_name", sa.String(200)),
        sa.Column("billing_address", sa.String(300)),
    )
    sa.Table(
        "browsing_events",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id"), nullable=False, index=True),
        sa.Column("viewed_at", NAIVE, nullable=False),
        sa.Column("url", sa.String(300)),
    )
    sa.Table(
        "analytics_events",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id"), index=True),
        sa.Column("collected_at", AWARE, index=True),
        sa.Column("visitor_id", sa.String(64)),
        sa.Column("ip", sa.String(45)),
        sa.Column("url", sa.String(300)),
    )
    sa.Table(
        "review_access_logs",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("visited_at", NAIVE, nullable=False, index=True),
        sa.Column("ip", sa.String(45)),
        sa.Column("user_agent", sa.String(300)),
    )
    sa.Table(
        "payment_tokens",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id"), nullable=False, index=True),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("created_epoch", sa.BigInteger, nullable=False, index=True),
    )
    return md


@dataclass(frozen=True)
class ShopSummary:
    """Rows written per table."""

    rows: dict[str, int] = field(default_factory=dict)


class _Gen:
    """Deterministic values from one random stream."""

    def __init__(self, seed: int, start: dt.date, end: dt.date) -> None:
        self.rng = random.Random(seed)
        self.start = dt.datetime(start.year, start.month, start.day, tzinfo=dt.UTC)
        self.end = dt.datetime(end.year, end.month, end.day, tzinfo=dt.UTC)
        self.span = (self.end - self.start).total_seconds()

    def between(self, low: dt.datetime, high: dt.datetime) -> dt.datetime:
        if high <= low:
            return low
        seconds = self.rng.uniform(0, (high - low).total_seconds())
        return (low + dt.timedelta(seconds=int(seconds))).replace(microsecond=0)

    def edge(self) -> dt.datetime:
        """An instant near local midnight of an edge-case day (Paris, ±1 hour)."""
        day = self.rng.choice(EDGE_DAYS)
        midnight = dt.datetime(day.year, day.month, day.day, tzinfo=PARIS)
        return (midnight + dt.timedelta(minutes=self.rng.choice([-61, -1, 0, 1, 59, 61]))).astimezone(dt.UTC)


def _aware(instant: dt.datetime, dialect: Dialect) -> dt.datetime:
    # PostgreSQL stores the instant; MySQL and SQLite store naive UTC.
    return instant if dialect.aware_timestamptz else instant.astimezone(dt.UTC).replace(tzinfo=None)


def _naive_utc(instant: dt.datetime) -> dt.datetime:
    return instant.astimezone(dt.UTC).replace(tzinfo=None)


def _naive_paris(instant: dt.datetime) -> dt.datetime:
    import pendulum

    local = pendulum.instance(instant).in_timezone("Europe/Paris")
    return dt.datetime(local.year, local.month, local.day, local.hour, local.minute, local.second)  # noqa: DTZ001


def _paris_date(instant: dt.datetime) -> dt.date:
    import pendulum

    local = pendulum.instance(instant).in_timezone("Europe/Paris")
    return dt.date(local.year, local.month, local.day)


def build_shop(
    engine: sa.Engine,
    *,
    seed: int = 7,
    customers: int = 500,
    start: dt.date = dt.date(2014, 1, 1),
    end: dt.date = dt.date(2026, 11, 1),
    chunk: int = 5000,
) -> ShopSummary:
    """Drop and rebuild the shop's tables, filled from ``seed``."""
    md = shop_metadata()
    md.drop_all(engine)
    md.create_all(engine)
    dialect = dialect_for(engine)
    gen = _Gen(seed, start, end)
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in SHOP_TABLES}
    counters = dict.fromkeys(SHOP_TABLES, 0)

    def next_id(table: str) -> int:
        counters[table] += 1
        return counters[table]

    for n in range(1, customers + 1):
        created = gen.between(gen.start, gen.end - dt.timedelta(days=30))
        roll = gen.rng.random()
        if roll < 0.03:
            last_activity: dt.datetime | None = None
        elif roll < 0.04:
            last_activity = gen.end + dt.timedelta(days=400)  # a clock in the future: an anomaly
        elif roll < 0.12:
            last_activity = max(created, gen.edge())
        else:
            last_activity = gen.between(created, gen.end)
        first, last = gen.rng.choice(FIRST), gen.rng.choice(LAST)
        rows["customers"].append(
            {
                "id": n,
                "email": f"{first.lower()}.{last.lower()}{n}@example{n % 9}.test",
                "name": f"{first} {last} {n}",
                "phone": f"+33 6 {n:08d}",
                "postcode": f"{gen.rng.randint(10, 95)}{gen.rng.randint(0, 999):03d}",
                "country": gen.rng.choice(["FR", "BE", "NL", "LU"]),
                "created_at": _naive_utc(created),
                "last_activity_at": None if last_activity is None else _naive_utc(last_activity),
                "is_active": True,
            }
        )
        active_until = min(last_activity or created, gen.end)
        order_count = 0 if (last_activity is None or gen.rng.random() < 0.25) else gen.rng.randint(1, 5)
        order_times = sorted(gen.between(created, active_until) for _ in range(order_count))
        if order_times and gen.rng.random() < 0.1:
            order_times[-1] = max(created, gen.edge())
        for when in order_times:
            order_id = next_id("orders")
            amount = Decimal(gen.rng.randint(500, 40000)) / 100
            rows["orders"].append(
                {
                    "id": order_id,
                    "customer_id": n,
                    "created_at": _aware(when, dialect),
                    "total": amount,
                }
            )
            rows["invoices"].append(
                {
                    "id": next_id("invoices"),
                    "order_id": order_id,
                    "customer_id": n,
                    "invoice_date": _paris_date(when),
                    "amount": amount,
                    "billing_name": f"{first} {last} {n}",
                    "billing_address": f"{gen.rng.randint(1, 200)} rue {gen.rng.choice(LAST)}, {n}",
                }
            )
            if gen.rng.random() < 0.4:
                rows["payment_tokens"].append(
                    {
                        "id": next_id("payment_tokens"),
                        "customer_id": n,
                        "token": f"tok_{seed}_{n}_{order_id}_{gen.rng.getrandbits(48):012x}",
                        "created_epoch": int(when.timestamp()),
                    }
                )
        for _ in range(gen.rng.randint(0, 4)):
            rows["browsing_events"].append(
                {
                    "id": next_id("browsing_events"),
                    "customer_id": n,
                    "viewed_at": _naive_utc(gen.between(created, active_until)),
                    "url": f"/p/{gen.rng.choice(WORDS)}-{n}-{gen.rng.randint(1, 999)}",
                }
            )
        for _ in range(gen.rng.randint(0, 3)):
            when = gen.between(created, active_until)
            rows["analytics_events"].append(_analytics(gen, next_id("analytics_events"), n, when, dialect))
    for _ in range(customers):  # anonymous audience measurement
        when = gen.between(gen.start, gen.end) if gen.rng.random() < 0.7 else gen.edge()
        rows["analytics_events"].append(_analytics(gen, next_id("analytics_events"), None, when, dialect))
    rows["analytics_events"].append(
        _analytics(gen, next_id("analytics_events"), None, gen.end + dt.timedelta(days=30), dialect)
    )
    recent = gen.end - dt.timedelta(days=30)
    for _ in range(max(10, customers // 2)):
        when = gen.between(recent, gen.end) if gen.rng.random() < 0.8 else gen.between(gen.start, recent)
        rows["review_access_logs"].append(
            {
                "id": next_id("review_access_logs"),
                "visited_at": _naive_paris(when),
                "ip": f"10.{gen.rng.randint(0, 255)}.{gen.rng.randint(0, 255)}.{gen.rng.randint(1, 254)}",
                "user_agent": f"{gen.rng.choice(AGENTS)} #{gen.rng.getrandbits(32):08x}",
            }
        )
    with engine.begin() as conn:
        for name in SHOP_TABLES:
            table = md.tables[name]
            data = rows[name]
            for offset in range(0, len(data), chunk):
                conn.execute(table.insert(), data[offset : offset + chunk])
    return ShopSummary({name: len(rows[name]) for name in SHOP_TABLES})


def _analytics(gen: _Gen, row_id: int, customer: int | None, when: dt.datetime, dialect: Dialect) -> dict[str, Any]:
    return {
        "id": row_id,
        "customer_id": customer,
        "collected_at": _aware(when, dialect),
        "visitor_id": f"v{gen.rng.getrandbits(64):016x}",
        "ip": f"192.0.2.{gen.rng.randint(1, 254)}",
        "url": f"/{gen.rng.choice(WORDS)}?ref={gen.rng.randint(1, 99)}",
    }
