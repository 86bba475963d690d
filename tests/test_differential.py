"""Differential test: random packs, data and runs; an independent oracle; plan == run == oracle.

Hypothesis draws a rule pack over up to five tables (a subject table of
people, orders that may follow them, invoice-like lines that follow orders
through their ``order_id`` column, events that follow people, and a
WooCommerce-like meta table holding epoch strings), random rows (NULL, zero,
invalid, future values and, on SQLite, every stored text form of a
datetime), legal holds and erasure requests placed and released between
runs, and an increasing sequence of 3 to 5 as-of instants around month
ends, 29 February and the Europe/Paris DST changes.

For every run, :mod:`naive_oracle` (which shares no code with the planner,
the evaluator, the executor or the clock module) predicts each record's
steps from docs/rules.md. The test asserts, on every database:

* ``execute.plan(...).transitions`` taken before the run == the oracle's counts;
* ``execute.run(...).counts`` == the oracle's counts;
* the due instant the run's ledger records for each record's step
  (datasets without ``ledger: summary``) == the oracle's (a purge one day
  late in the ledger alone moves the same rows);
* the record states (``retention_record_states``: state and since), the
  archive payloads, and the source rows (present or deleted, deactivated,
  masked) == the oracle's.

The packs are shaped to catch what fixtures written by the engine's authors
miss: people whose clock is the latest order (``aggregate: max``, sometimes
with ``where``) while orders are purged by their own dataset (so a ``run``
that visits orders before people would see other clocks than ``plan``), and
records already in later states whose rows are still there (deactivated or
anonymised) when their clocks are due again (so a count path without the
state anti-join counts them twice). Issue 26 adds aggregate clocks with
``invalid_rows`` and the full ``where`` grammar, void orders as a second
dataset on the orders' table (disjoint filters), ``erasure_where`` on
events whose ``where`` leaves deactivated rows out, and partial erasure
(``on_erasure: {mask, keep_until: purged}``) on orders or people. E-mail
identities (docs/rules.md, "Identities"): people, orders, void orders and
events may declare ``email`` (events then sometimes without a subject, guests
known by address alone), their addresses few, in other cases, with spaces,
NULL or empty, so that records share them and a row's subject and address can
name different people; subject holds and erasure requests name the person by
id, by a typed address (another case, spaces, or nobody's), or both, when the
pack has a dataset the address can reach (the commands refuse it otherwise).

Examples per database: FAST_EXAMPLES in the fast tier (plain ``pytest``),
200 in the slow tier (``pytest -m slow``, which ``.ci/run`` runs) or what
``RETENTION_DIFFERENTIAL_EXAMPLES`` says. The draws are derandomised (the
same examples every time) unless ``RETENTION_DIFFERENTIAL_RANDOM=1``.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import naive_oracle as oracle
import pytest
import sqlalchemy as sa
import yaml
from conftest import tiers
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from ledger_view import record_moves

from retention.engine import execute
from retention.policy import LoadedPack, refusals, validate_pack
from retention.store import tables as store
from retention.subjects import events as subjects

SECRET = b"differential-test-key"
UTC = dt.UTC
# `follows ... via` (lines follow orders through order_id) is issue 10's new
# syntax; RETENTION_DIFFERENTIAL_WITHOUT_VIA=1 leaves it out, to run the rest
# against an engine that does not have it yet.
WITHOUT_VIA = os.environ.get("RETENTION_DIFFERENTIAL_WITHOUT_VIA") == "1"
# `follows ... by: email` (events follow people or orders by address) is issue
# 26's; RETENTION_DIFFERENTIAL_WITHOUT_BY_EMAIL=1 leaves it out likewise.
WITHOUT_BY_EMAIL = os.environ.get("RETENTION_DIFFERENTIAL_WITHOUT_BY_EMAIL") == "1"
# Partial erasure (`on_erasure: {mask, keep_until}`) is issue 26 clause 4's;
# RETENTION_DIFFERENTIAL_WITHOUT_PARTIAL_ERASURE=1 leaves it out likewise.
WITHOUT_PARTIAL_ERASURE = os.environ.get("RETENTION_DIFFERENTIAL_WITHOUT_PARTIAL_ERASURE") == "1"
EMAILS = ("a@x.test", " A@X.test", "b@x.test", "c@x.test ", None, "")
"""Addresses of the ``email`` columns: few, so that rows of several tables share them (trimmed, lower-cased).

The empty address is no identity (docs/rules.md, "Identities"): it names
nobody, and follows nobody by address.
"""
TYPED_EMAILS = ("a@x.test", "A@x.TEST ", " b@x.test", "C@X.test", "d@x.test")
"""Addresses an operator types for a hold or an erasure request: other cases and spaces than stored, one of nobody."""
EXAMPLES = int(os.environ.get("RETENTION_DIFFERENTIAL_EXAMPLES", "200"))
FAST_EXAMPLES = int(os.environ.get("RETENTION_DIFFERENTIAL_FAST_EXAMPLES", "10"))

CLOCK_KINDS = ("timestamptz", "timestamp", "date", "epoch", "epoch_text")
NAIVE_ZONES = ("UTC", "Europe/Paris", "America/New_York")
DST_DAYS = [
    dt.date(2019, 3, 31),
    dt.date(2019, 10, 27),
    dt.date(2020, 3, 29),
    dt.date(2020, 10, 25),
    dt.date(2021, 3, 28),
    dt.date(2021, 10, 31),
    dt.date(2023, 3, 26),
    dt.date(2023, 10, 29),
    dt.date(2024, 3, 31),
    dt.date(2024, 10, 27),
]
INTERESTING = [
    *DST_DAYS,
    dt.date(2016, 2, 29),
    dt.date(2020, 2, 29),
    dt.date(2024, 2, 29),
    dt.date(2019, 2, 28),
    dt.date(2021, 2, 28),
    dt.date(2021, 1, 31),
    dt.date(2021, 3, 31),
    dt.date(2022, 8, 31),
    dt.date(2019, 12, 31),
    dt.date(2020, 1, 1),
    dt.date(2022, 12, 31),
    dt.date(2023, 1, 1),
    dt.date(2021, 6, 30),
    dt.date(2022, 4, 30),
    dt.date(2017, 3, 31),
]
INVALID_TEXTS = ["2020-02-30 10:00:00", "2020-01-01garbage", "2021-13-01", "yesterday", "2019-06-31", "2020-1-5", ""]
INVALID_EPOCH_TEXTS = ["", "abc", "0123", "12.5", " 1577836800", "-1", 'a:1:{s:8:"customer";b:1;}']
KEEP_PERIODS = ["P0D", "P8D", "P2W", "P1M", "P1Y", "P13M", "P1Y6M", "P3Y"]  # shortest first
AFTER_PERIODS = ["P0D", "P0D", "P1D", "P8D", "P1M", "P6M", "P1Y", "P2Y"]

# --------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """One column of a generated table: a plain kind, or a clock kind (with a zone if naive)."""

    name: str
    kind: str  # pk, int, text, bool, or a clock kind
    zone: str | None = None


@dataclass(frozen=True)
class Table:
    name: str
    key: str
    columns: tuple[Column, ...]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


@dataclass(frozen=True)
class Moment:
    """A clock value before it is stored: ``what`` is null, zero, invalid or value.

    ``value`` is an aware instant (timestamptz), a naive wall time (timestamp),
    a date, an int (epoch) or a string (epoch_text, invalid texts). ``form``
    says how SQLite stores a timestamptz as text: separator, precision and
    suffix.
    """

    what: str
    value: Any = None
    form: tuple[str, str, str] = (" ", "sec", "")


@dataclass(frozen=True)
class Event:
    """Something an operator does before a run: place or release a hold, or file an erasure request."""

    kind: str  # hold, release, erasure
    hold: int = 0  # index of the hold (place and release)
    scope: str = ""
    dataset: str | None = None
    key: str | None = None
    subject: str | None = None
    received: dt.date | None = None
    email: str | None = None  # as typed (``--email``): the engine and the oracle normalise it


@dataclass(frozen=True)
class Run:
    as_of: dt.datetime
    events: tuple[Event, ...] = ()


@dataclass(frozen=True)
class Scenario:
    pack: dict[str, Any]
    tables: tuple[Table, ...]
    rows: dict[str, list[dict[str, Any]]]
    runs: tuple[Run, ...] = field(default=())


def plain(spec: str, *more: Column) -> tuple[Column, ...]:
    """Columns from ``name:kind`` words, then ``more``."""
    return (*(Column(*word.split(":")) for word in spec.split()), *more)


def _awkward(zone: str, wall: dt.datetime) -> bool:
    """True when ``wall`` does not exist or exists twice in ``zone`` (a DST change)."""
    z = ZoneInfo(zone)
    return wall.replace(tzinfo=z, fold=0).utcoffset() != wall.replace(tzinfo=z, fold=1).utcoffset()


@st.composite
def days(draw: st.DrawFn) -> dt.date:
    """A date near an interesting one, or anywhere in 2012-2027."""
    if draw(st.booleans()):
        base = draw(st.sampled_from(INTERESTING))
        return base + dt.timedelta(days=draw(st.sampled_from([0, 0, 0, -1, 1, -2, 2, 366, -365, 730])))
    return dt.date(2012, 1, 1) + dt.timedelta(days=draw(st.integers(0, 16 * 365)))


TIMES = [dt.time(0, 0), dt.time(23, 59, 59), dt.time(12, 0), dt.time(0, 30), dt.time(22, 30), dt.time(1, 30)]


@st.composite
def walls(draw: st.DrawFn) -> dt.datetime:
    """A naive wall time near an interesting moment."""
    day = draw(days())
    if draw(st.booleans()):
        when = draw(st.sampled_from(TIMES))
    else:
        when = dt.time(draw(st.integers(0, 23)), draw(st.integers(0, 59)), draw(st.integers(0, 59)))
    return dt.datetime.combine(day, when)


@st.composite
def moments(draw: st.DrawFn, kind: str, zone: str | None) -> Moment:
    """A clock value of ``kind``: mostly real, sometimes NULL, zero, invalid or far future."""
    what = draw(st.sampled_from(["value"] * 10 + ["null", "null", "zero", "invalid", "future"]))
    if what == "null":
        return Moment("null")
    if what == "invalid":
        if kind == "epoch_text":
            return Moment("invalid", draw(st.sampled_from(INVALID_EPOCH_TEXTS)))
        if kind == "epoch":
            return Moment("null")  # an integer column cannot hold an invalid value
        return Moment("invalid", draw(st.sampled_from(INVALID_TEXTS)))  # SQLite only; NULL elsewhere
    if what == "zero":
        if kind == "epoch":
            return Moment("zero", draw(st.sampled_from([0, -86400])))
        if kind == "epoch_text":
            return Moment("invalid", "-86400")
        return Moment("zero", draw(st.sampled_from(["0000", "1850", "1000"])))
    wall = draw(walls())
    if what == "future":
        wall = wall.replace(year=2099, day=min(wall.day, 28))
    if kind == "date":
        return Moment("value", wall.date())
    if kind == "timestamp":
        assert zone is not None
        if _awkward(zone, wall):
            wall += dt.timedelta(hours=2)
        micro = draw(st.sampled_from([0, 0, 500000, 123456]))
        return Moment("value", wall.replace(microsecond=micro), (draw(st.sampled_from([" ", "T"])), "frac", ""))
    instant = wall.replace(tzinfo=UTC)
    if kind in ("epoch", "epoch_text"):
        return Moment("value", int(instant.timestamp()))
    separator = draw(st.sampled_from([" ", "T"]))
    precision = draw(st.sampled_from(["date", "min", "sec", "sec", "frac"]))
    suffix = draw(st.sampled_from(["", "", "Z", "+02:00", "-05:00", "+05:30"])) if precision != "date" else ""
    if precision == "date":
        instant = instant.replace(hour=0, minute=0, second=0)
    elif precision == "min":
        instant = instant.replace(second=0)
    elif precision == "frac":
        instant = instant.replace(microsecond=draw(st.sampled_from([0, 500000, 123456, 999000])))
    return Moment("value", instant, (separator, precision, suffix))


def _clock_column(draw: st.DrawFn, name: str, kinds: tuple[str, ...] = CLOCK_KINDS) -> Column:
    kind = draw(st.sampled_from(kinds))
    zone = draw(st.sampled_from(NAIVE_ZONES)) if kind == "timestamp" else None
    return Column(name, kind, zone)


def _clock_spec(column: Column, **aggregate: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"column": column.name, "type": column.kind}
    if column.kind == "timestamp" and column.zone != "UTC":
        spec["timezone"] = column.zone
    spec.update(aggregate)
    return spec


def _keep(draw: st.DrawFn, clock: dict[str, Any]) -> dict[str, Any]:
    rule: dict[str, Any] = {"clock": clock, "period": draw(st.sampled_from(KEEP_PERIODS))}
    if draw(st.integers(0, 5)) == 0:
        rule["anchor"] = "financial_year_end"
    return rule


def _lifecycle(draw: st.DrawFn, masks: dict[str, Any], *, may_delete_archived: bool) -> list[dict[str, Any]]:
    """1 to 3 steps with their actions; the first step mostly without delay."""
    states = draw(
        st.sampled_from(
            [
                ["inactive"],
                ["archived"],
                ["purged"],
                ["inactive", "archived"],
                ["inactive", "purged"],
                ["archived", "purged"],
                ["inactive", "archived", "purged"],
                ["inactive", "archived", "purged"],
            ]
        )
    )
    steps: list[dict[str, Any]] = []
    for index, state in enumerate(states):
        step: dict[str, Any] = {"to": state}
        after = draw(st.sampled_from(AFTER_PERIODS if index else ["P0D", "P0D", "P0D", "P1M"]))
        if after != "P0D":
            step["after"] = after
        if state == "inactive":
            step.update(action="deactivate", set={"is_active": False})
        elif state == "archived":
            then = draw(st.sampled_from(["delete", "anonymise"])) if may_delete_archived else "anonymise"
            step.update(action="archive", columns=["id", "name"], then=then)
            if then == "anonymise":
                step["mask"] = masks
        elif not (index and states[index - 1] == "archived"):
            action = draw(st.sampled_from(["delete", "delete", "anonymise"]))
            step["action"] = action
            if action == "anonymise":
                step["mask"] = masks
        steps.append(step)
    return steps


def _follow_map(draw: st.DrawFn, leader: list[dict[str, Any]], own: list[dict[str, Any]]) -> dict[str, str]:
    leader_states = [s["to"] for s in leader]
    own_states = [s["to"] for s in own]
    chosen = draw(st.lists(st.sampled_from(leader_states), min_size=1, max_size=len(leader_states), unique=True))
    drawn = {state: draw(st.sampled_from(own_states)) for state in chosen}
    # A later leader state mapped no further than an earlier one never moves a record, and
    # the loader refuses it (docs/rules.md, 'Clauses that take effect'): keep the ones that do.
    result: dict[str, str] = {}
    furthest = -1
    for state in leader_states:
        if state in drawn and own_states.index(drawn[state]) > furthest:
            result[state] = drawn[state]
            furthest = own_states.index(drawn[state])
    return result


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    """A pack, its tables and rows, and the runs with what happens before each."""
    tz = draw(st.sampled_from(["Europe/Paris", "Europe/Paris", "UTC"]))
    year_end = draw(st.sampled_from(["12-31", "12-31", "03-31"]))
    datasets: dict[str, Any] = {}
    tables: dict[str, Table] = {}
    masks_people = {"name": None, "email": {"strategy": "fixed", "value": "erased@example.invalid"}}
    masks_plain = {"name": None}

    # Orders first: the people's aggregate clocks read its clock columns.
    order_clocks = tuple(_clock_column(draw, f"o{i}") for i in range(draw(st.integers(1, 2))))
    line_clocks = tuple(_clock_column(draw, f"l{i}") for i in range(draw(st.integers(1, 2))))
    with_orders = draw(st.integers(0, 3)) > 0
    with_lines = with_orders and not WITHOUT_VIA and draw(st.booleans())
    with_events = draw(st.booleans())
    meta_dataset = draw(st.integers(0, 3)) == 0

    # The invoice motif: people's clock is their latest order, and the orders
    # dataset deletes the orders on that same clock, no later than the people
    # fall due. A run that visits orders first sees other clocks than plan.
    motif = with_orders and draw(st.booleans())
    people_direct = tuple(_clock_column(draw, f"p{i}") for i in range(draw(st.integers(0, 1 if motif else 2))))
    keep_people: list[dict[str, Any]] = [_keep(draw, _clock_spec(c)) for c in people_direct]
    uses_meta = meta_dataset or draw(st.booleans())
    motif_period = "P0D"
    if motif or draw(st.integers(0, 3)) > 0:  # people read a table that another dataset purges
        column = order_clocks[0] if motif else draw(st.sampled_from(order_clocks))
        agg: dict[str, Any] = {"aggregate": "max", "table": "t_orders", "on": "person_id"}
        if draw(st.booleans()):
            # Equality, and (issue 26 clause 1) the other operators of a dataset's where.
            agg["where"] = {"status": draw(st.sampled_from(["paid", "paid", {"not": "void"}, ["paid"], {"not": None}]))}
        if draw(st.integers(0, 2)) == 0:
            agg["invalid_rows"] = draw(st.sampled_from(["ignore", "strict"]))
        rule = _keep(draw, _clock_spec(column, **agg))
        motif_period = rule["period"]
        keep_people.append(rule)
    if uses_meta and draw(st.booleans()):
        keep_people.append(
            _keep(
                draw,
                {
                    "column": "meta_value",
                    "type": "epoch_text",
                    "aggregate": "max",
                    "table": "t_meta",
                    "on": "user_id",
                    "where": draw(
                        st.sampled_from([{"meta_key": "last_active"}, {"meta_key": {"not": "wp_capabilities"}}])
                    ),
                    **({"invalid_rows": "ignore"} if draw(st.booleans()) else {}),
                },
            )
        )
    if not keep_people:
        column = _clock_column(draw, "p0")
        people_direct = (column,)
        keep_people.append(_keep(draw, _clock_spec(column)))
    keep_people = keep_people[:3]
    people_life = _lifecycle(draw, masks_people, may_delete_archived=True)
    people: dict[str, Any] = {
        "table": "t_people",
        "key": "id",
        "subject_key": "id",
        "basis": "account",
        "keep": keep_people,
        "lifecycle": people_life,
    }
    if draw(st.booleans()):
        people["on_erasure"] = draw(st.sampled_from([s["to"] for s in people_life]))
    datasets["people"] = people
    tables["t_people"] = Table(
        "t_people",
        "id",
        plain("id:pk name:text email:text is_active:bool", *people_direct),
    )
    tables["t_orders"] = Table(
        "t_orders",
        "id",
        plain("id:pk person_id:int status:text name:text email:text is_active:bool", *order_clocks),
    )
    if with_orders:
        life = _lifecycle(draw, masks_people, may_delete_archived=True)
        orders: dict[str, Any] = {"table": "t_orders", "key": "id", "subject_key": "person_id", "basis": "invoices"}
        keep = [_keep(draw, _clock_spec(c)) for c in order_clocks[: draw(st.integers(0, len(order_clocks)))]]
        if motif:
            shorter = KEEP_PERIODS[: KEEP_PERIODS.index(motif_period) + 1]
            keep = [{"clock": _clock_spec(order_clocks[0]), "period": draw(st.sampled_from(shorter))}]
            life = draw(
                st.sampled_from(
                    [
                        [{"to": "purged", "action": "delete"}],
                        [{"to": "archived", "action": "archive", "columns": ["id", "name"], "then": "delete"}],
                        [
                            {"to": "inactive", "action": "deactivate", "set": {"is_active": False}},
                            {"to": "purged", "action": "delete"},
                        ],
                    ]
                )
            )
        if with_lines and draw(st.integers(0, 3)) == 0:
            keep.append(
                _keep(
                    draw,
                    _clock_spec(draw(st.sampled_from(line_clocks)), aggregate="max", table="t_lines", on="order_id"),
                )
            )
        if keep:
            orders["keep"] = keep
        if not keep or (not motif and draw(st.booleans())):
            orders["follows"] = {"dataset": "people", "on": _follow_map(draw, people_life, life)}
        orders["lifecycle"] = life
        if draw(st.integers(0, 2)) == 0:
            orders["on_erasure"] = draw(st.sampled_from([s["to"] for s in life]))
        datasets["orders"] = orders
    if with_lines:
        tables["t_lines"] = Table(
            "t_lines",
            "id",
            plain("id:pk order_id:int person_id:int name:text is_active:bool", *line_clocks),
        )
        # A follower through a column keeps its source rows when archived:
        # a deleted row would lose the column that names its leader.
        life = _lifecycle(draw, masks_plain, may_delete_archived=False)
        lines: dict[str, Any] = {"table": "t_lines", "key": "id", "basis": "invoice lines"}
        if draw(st.booleans()):
            lines["subject_key"] = "person_id"
            if draw(st.integers(0, 2)) == 0:
                lines["on_erasure"] = draw(st.sampled_from([s["to"] for s in life]))
        if draw(st.integers(0, 2)) == 0:
            lines["keep"] = [_keep(draw, _clock_spec(draw(st.sampled_from(line_clocks))))]
        lines["follows"] = {
            "dataset": "orders",
            "via": "order_id",
            "on": _follow_map(draw, datasets["orders"]["lifecycle"], life),
        }
        lines["lifecycle"] = life
        datasets["lines"] = lines
    if with_events:
        event_clock = _clock_column(draw, "e0")
        tables["t_events"] = Table(
            "t_events",
            "id",
            plain("id:pk person_id:int name:text email:text is_active:bool", event_clock),
        )
        # Events following by address keep their rows when archived, as followers through a column do.
        by_email = not WITHOUT_BY_EMAIL and draw(st.integers(0, 2)) == 0
        life = _lifecycle(draw, masks_plain, may_delete_archived=not by_email)
        events: dict[str, Any] = {"table": "t_events", "key": "id", "subject_key": "person_id", "basis": "events"}
        follow = by_email or draw(st.booleans())
        if not follow or draw(st.booleans()):
            events["keep"] = [_keep(draw, _clock_spec(event_clock))]
        if by_email:
            leader = draw(st.sampled_from(["people", "orders"] if "orders" in datasets else ["people"]))
            datasets[leader]["email"] = "email"
            events["email"] = "email"
            leader_life = datasets[leader]["lifecycle"]
            events["follows"] = {"dataset": leader, "by": "email", "on": _follow_map(draw, leader_life, life)}
        elif follow:
            events["follows"] = {"dataset": "people", "on": _follow_map(draw, people_life, life)}
        events["lifecycle"] = life
        if draw(st.integers(0, 2)) == 0:
            events["on_erasure"] = draw(st.sampled_from([s["to"] for s in life]))
        if draw(st.integers(0, 3)) == 0:
            events["ledger"] = "summary"
        datasets["events"] = events
    if uses_meta:
        tables["t_meta"] = Table(
            "t_meta",
            "umeta_id",
            plain("umeta_id:pk user_id:int meta_key:text meta_value:epoch_text name:text is_active:bool"),
        )
    if meta_dataset:
        life = _lifecycle(draw, masks_plain, may_delete_archived=True)
        meta: dict[str, Any] = {
            "table": "t_meta",
            "key": "umeta_id",
            "subject_key": "user_id",
            "basis": "usage",
            "keep": [
                {"clock": {"column": "meta_value", "type": "epoch_text"}, "period": draw(st.sampled_from(KEEP_PERIODS))}
            ],
            "lifecycle": [{**s, "columns": ["umeta_id", "name"]} if s.get("action") == "archive" else s for s in life],
        }
        if draw(st.booleans()):
            meta["follows"] = {"dataset": "people", "on": _follow_map(draw, people_life, life)}
        datasets["meta"] = meta

    # Row filters (issue 14): on the orders' status, on events' flag (which
    # their own deactivation clears, so deactivated events stop matching and
    # stay), and on people through a related meta row. The related table is
    # then no dataset's, so no run changes which people match.
    if "orders" in datasets and draw(st.integers(0, 2)) == 0:
        status = draw(st.sampled_from(["paid", {"not": "void"}, ["paid", "void"], {"not": None}]))
        datasets["orders"]["where"] = {"status": status}
        if status in ("paid", {"not": "void"}) and draw(st.booleans()):
            # Issue 26 clause 3: the void orders are a second dataset on the same
            # table, with a filter disjoint from the orders' and a policy of its own.
            life = _lifecycle(draw, masks_people, may_delete_archived=True)
            void: dict[str, Any] = {
                "table": "t_orders",
                "key": "id",
                "subject_key": "person_id",
                "basis": "void orders",
                "where": {"status": "void"},
                "keep": [_keep(draw, _clock_spec(draw(st.sampled_from(order_clocks))))],
                "lifecycle": life,
            }
            if draw(st.booleans()):
                void["on_erasure"] = draw(st.sampled_from([s["to"] for s in life]))
            datasets["void_orders"] = void
    if "events" in datasets and draw(st.integers(0, 3)) == 0:
        datasets["events"]["where"] = {"is_active": True}
        if "on_erasure" in datasets["events"] and draw(st.booleans()):
            # Issue 26 clause 6: the erasure also reaches deactivated events, which
            # the where leaves out of the lifecycle (they stop at on_erasure).
            datasets["events"]["erasure_where"] = {"person_id": {"not": None}}
    if uses_meta and not meta_dataset and draw(st.integers(0, 2)) == 0:
        datasets["people"]["where"] = {
            "related": {
                "table": "t_meta",
                "on": "user_id",
                "where": {"meta_key": "wp_capabilities"},
                "exists": draw(st.booleans()),
            }
        }
    # E-mail identities (docs/rules.md, "Identities"): besides the datasets a
    # follower by address needs, a dataset over a table with an address may
    # declare it, so that holds and requests by address reach its records;
    # events that follow nobody by subject may be known by address alone.
    for name in ("people", "orders", "void_orders", "events"):
        if name in datasets and "email" not in datasets[name] and draw(st.integers(0, 2)) == 0:
            datasets[name]["email"] = "email"
    events_ds = datasets.get("events")
    if (
        events_ds is not None
        and "email" in events_ds
        and ("follows" not in events_ds or events_ds["follows"].get("by") == "email")
        and draw(st.integers(0, 2)) == 0
    ):
        del events_ds["subject_key"]
    # Issue 26 clause 4: a partial erasure on orders or people (kept on their own
    # term, masked at once); the address only when no dataset follows it by address.
    if not WITHOUT_PARTIAL_ERASURE:
        for name in ("orders", "people"):
            ds = datasets.get(name)
            if ds is None or not ds.get("keep") or ds["lifecycle"][-1]["to"] != "purged" or "erasure_where" in ds:
                continue
            if draw(st.integers(0, 2)):
                continue
            followed_by_email = any(
                d.get("follows", {}).get("dataset") == name and d["follows"].get("by") == "email"
                for d in datasets.values()
            )
            mask = dict(masks_plain if followed_by_email or draw(st.booleans()) else masks_people)
            ds["on_erasure"] = {"mask": mask, "keep_until": "purged"}
    for ds in datasets.values():
        if not ds.get("keep"):
            ds["lifecycle"][0].pop("after", None)  # delays nothing without keep periods: refused
    anchored = any(rule.get("anchor") for ds in datasets.values() for rule in ds.get("keep", ()))
    pack = {
        "pack": "differential",
        "version": "1",
        "effective_from": "2000-01-01",
        "timezone": tz,
        "financial_year_end": year_end if anchored else "12-31",
        "guard": {"max_share": 1.0},
        "batch_size": draw(st.sampled_from([3, 7, 1000, 1000])),  # small ones cross batch boundaries
        "datasets": datasets,
    }
    rows = _rows(draw, tables)
    runs = _runs(draw, datasets, rows)
    return Scenario(pack, tuple(tables.values()), rows, runs)


def _rows(draw: st.DrawFn, tables: dict[str, Table]) -> dict[str, list[dict[str, Any]]]:
    people = draw(st.integers(2, 10))
    person = st.sampled_from([*range(1, people + 2), *range(1, people + 1), None])
    sizes = {"t_people": people, "t_orders": 16, "t_lines": 20, "t_events": 12, "t_meta": 14}
    rows: dict[str, list[dict[str, Any]]] = {}
    orders = 0
    for name, table in tables.items():
        count = people if name == "t_people" else draw(st.integers(0, sizes[name]))
        if name == "t_orders":
            orders = count
        result = []
        for index in range(1, count + 1):
            row: dict[str, Any] = {}
            for column in table.columns:
                if column.kind == "pk":
                    row[column.name] = index
                elif column.name in ("person_id", "user_id"):
                    row[column.name] = draw(person)
                elif column.name == "order_id":
                    row[column.name] = draw(st.sampled_from([*range(1, orders + 2), None]))
                elif column.name == "status":
                    row[column.name] = draw(st.sampled_from(["paid", "paid", "void", None]))
                elif column.name == "meta_key":
                    row[column.name] = draw(st.sampled_from(["last_active", "last_active", "wp_capabilities"]))
                elif column.name == "email":
                    row[column.name] = draw(st.sampled_from(EMAILS))
                elif column.name == "meta_value" and row.get("meta_key") == "wp_capabilities":
                    row[column.name] = Moment("invalid", 'a:1:{s:8:"customer";b:1;}')
                elif column.kind == "text":
                    row[column.name] = f"{column.name}-{name}-{index}"
                elif column.kind == "bool":
                    row[column.name] = True
                else:
                    row[column.name] = draw(moments(column.kind, column.zone))
            result.append(row)
        rows[name] = result
    return rows


@st.composite
def as_of_sequences(draw: st.DrawFn) -> list[dt.datetime]:
    """3 to 5 increasing instants: near interesting local days, days to years apart."""
    start = draw(st.sampled_from(INTERESTING)) + dt.timedelta(days=draw(st.sampled_from([0, 365, 730, 1461, 2191])))
    paris = ZoneInfo("Europe/Paris")
    moments_: list[dt.datetime] = []
    day = start
    for _ in range(draw(st.integers(3, 5))):
        minutes = draw(st.sampled_from([0, 0, 1, -1, 30, -30, 12 * 60, 23 * 60 + 59, 2 * 60 + 30]))
        local = dt.datetime.combine(day, dt.time(0), tzinfo=paris) + dt.timedelta(minutes=minutes)
        instant = local.astimezone(UTC)
        if not moments_ or instant > moments_[-1]:
            moments_.append(instant)
        gap = draw(st.sampled_from([1, 1, 2, 29, 31, 92, 365, 366, 1096, 2000]))
        day = day + dt.timedelta(days=gap)
        if draw(st.integers(0, 4)) == 0:  # land on a month end, 29 February or a DST day
            day = min((d for d in _landmarks() if d > day), default=day)
    return moments_


def _landmarks() -> list[dt.date]:
    marks = set(DST_DAYS)
    for year in range(2014, 2036):
        marks.add(dt.date(year, 2, 28))
        marks.add(dt.date(year, 3, 1))
        marks.add(dt.date(year, 12, 31))
        if year % 4 == 0:
            marks.add(dt.date(year, 2, 29))
        for month in (1, 3, 4, 6, 8, 10):
            marks.add(dt.date(year, month + 1, 1) - dt.timedelta(days=1))
    return sorted(marks)


def _runs(draw: st.DrawFn, datasets: dict[str, Any], rows: dict[str, list[dict[str, Any]]]) -> tuple[Run, ...]:
    as_ofs = draw(as_of_sequences())
    people = len(rows["t_people"])
    events: list[list[Event]] = [[] for _ in as_ofs]
    placed: list[int] = []
    for hold in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(as_ofs) - 1))
        scope = draw(st.sampled_from(["subject", "subject", "dataset", "record"]))
        dataset = draw(st.sampled_from(sorted(datasets)))
        table = datasets[dataset]["table"]
        key_column = "umeta_id" if table == "t_meta" else "id"
        keys = [str(r[key_column]) for r in rows.get(table, [])] or ["1"]
        subject: str | None = None
        email: str | None = None
        if scope == "subject":
            subject, email = _identities(draw, datasets, str(draw(st.integers(1, people))), erasing=False)
        event = Event(
            "hold",
            hold=hold,
            scope=scope,
            dataset=dataset if scope != "subject" else None,
            key=draw(st.sampled_from(keys)) if scope == "record" else None,
            subject=subject,
            email=email,
        )
        events[at].append(event)
        placed.append(hold)
        if draw(st.booleans()) and at + 1 < len(as_ofs):
            events[draw(st.integers(at + 1, len(as_ofs) - 1))].append(Event("release", hold=hold))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(as_ofs) - 1))
        received = dt.date(2014, 1, 1) + dt.timedelta(days=draw(st.integers(0, 4700)))
        subject, email = _identities(draw, datasets, str(draw(st.integers(1, people + 1))), erasing=True)
        events[at].append(Event("erasure", subject=subject, received=received, email=email))
    return tuple(Run(a, tuple(e)) for a, e in zip(as_ofs, events, strict=True))


def _identities(
    draw: st.DrawFn, datasets: dict[str, Any], subject: str, *, erasing: bool
) -> tuple[str | None, str | None]:
    """Whom a hold or request names: the subject id, a typed address, or both (docs/rules.md, "Identities").

    An address only when some dataset (with ``on_erasure``, for a request)
    declares an ``email`` identity: the commands refuse it otherwise.
    """
    reachable = any("email" in ds and (not erasing or "on_erasure" in ds) for ds in datasets.values())
    if not reachable:
        return subject, None
    how = draw(st.sampled_from(["subject", "email", "email", "both"]))
    email = draw(st.sampled_from(TYPED_EMAILS)) if how != "subject" else None
    return (subject if how != "email" else None), email


# --------------------------------------------------------------------------
# Storing a scenario
# --------------------------------------------------------------------------

SQL_TYPES: dict[str, dict[str, str]] = {
    "sqlite": {
        "pk": "INTEGER NOT NULL PRIMARY KEY",
        "key_no_pad": "VARCHAR(30) NOT NULL PRIMARY KEY",
        "key_pad": "VARCHAR(30) NOT NULL PRIMARY KEY",
        "int": "INTEGER",
        "text": "VARCHAR(200)",
        "bool": "BOOLEAN NOT NULL",
        "timestamptz": "DATETIME",
        "timestamp": "TIMESTAMP",
        "date": "DATE",
        "epoch": "BIGINT",
        "epoch_text": "VARCHAR(60)",
    },
    "postgresql": {
        "pk": "INTEGER NOT NULL PRIMARY KEY",
        "key_no_pad": "VARCHAR(30) NOT NULL PRIMARY KEY",
        "key_pad": "VARCHAR(30) NOT NULL PRIMARY KEY",
        "int": "INTEGER",
        "text": "VARCHAR(200)",
        "bool": "BOOLEAN NOT NULL",
        "timestamptz": "TIMESTAMPTZ",
        "timestamp": "TIMESTAMP",
        "date": "DATE",
        "epoch": "BIGINT",
        "epoch_text": "VARCHAR(60)",
    },
    "mariadb": {
        "pk": "INTEGER NOT NULL PRIMARY KEY",
        # Text keys compared byte by byte: NO PAD keeps 'a' and 'a ' apart, PAD SPACE takes them for one.
        "key_no_pad": "VARCHAR(30) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL PRIMARY KEY",
        "key_pad": "VARCHAR(30) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL PRIMARY KEY",
        "int": "INTEGER",
        "text": "VARCHAR(200)",
        "bool": "BOOLEAN NOT NULL",
        "timestamptz": "DATETIME(6)",
        "timestamp": "DATETIME(6)",
        "date": "DATE",
        "epoch": "BIGINT",
        "epoch_text": "VARCHAR(60)",
    },
}
TABLE_NAMES = ("t_lines", "t_events", "t_meta", "t_orders", "t_people")


def _dialect(engine: sa.Engine) -> str:
    return "mariadb" if engine.dialect.name in ("mysql", "mariadb") else engine.dialect.name


def render(dialect: str, column: Column, value: Any) -> Any:
    """A generated value as this database stores it."""
    if not isinstance(value, Moment):
        return value
    kind = column.kind
    if value.what == "null":
        return None
    if value.what == "invalid":
        return value.value if dialect == "sqlite" or kind == "epoch_text" else None
    if value.what == "zero":
        if kind == "epoch":
            return value.value
        day = {"0000": None, "1850": dt.date(1850, 6, 15), "1000": dt.date(1000, 1, 1)}[value.value]
        if day is None:
            if dialect == "postgresql":  # PostgreSQL has no zero date: the oldest value instead
                day = dt.date(1000, 1, 1)
            else:
                return "0000-00-00" if kind == "date" else "0000-00-00 00:00:00"
        if kind == "date":
            return day if dialect != "sqlite" else day.isoformat()
        wall = dt.datetime.combine(day, dt.time(12))
        if dialect == "sqlite":
            return wall.strftime("%Y-%m-%d %H:%M:%S")
        return wall.replace(tzinfo=UTC) if kind == "timestamptz" and dialect == "postgresql" else wall
    v = value.value
    if kind == "epoch":
        return v
    if kind == "epoch_text":
        return str(v)
    if kind == "date":
        return v.isoformat() if dialect == "sqlite" else v
    if kind == "timestamp":
        if dialect != "sqlite":
            return v
        text = v.strftime(f"%Y-%m-%d{value.form[0]}%H:%M:%S")
        return text + (f".{v.microsecond:06d}" if v.microsecond else "")
    # timestamptz
    if dialect == "postgresql":
        return v
    if dialect == "mariadb":
        return v.replace(tzinfo=None)
    separator, precision, suffix = value.form
    offset = dt.timedelta(0)
    if suffix not in ("", "Z"):
        sign = 1 if suffix[0] == "+" else -1
        offset = sign * dt.timedelta(hours=int(suffix[1:3]), minutes=int(suffix[4:6]))
    wall = (v + offset).replace(tzinfo=None)
    if precision == "date":
        return wall.strftime("%Y-%m-%d")
    text = wall.strftime(f"%Y-%m-%d{separator}%H:%M")
    if precision in ("sec", "frac"):
        text += wall.strftime(":%S")
    if precision == "frac":
        text += {0: ".000", 500000: ".5", 123456: ".123456", 999000: ".999"}[wall.microsecond]
    return text + suffix


def store_scenario(engine: sa.Engine, scenario: Scenario) -> None:
    """Drop the previous example's tables and engine state, then create and fill this one's."""
    dialect = _dialect(engine)
    with engine.begin() as conn:
        for name in TABLE_NAMES:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
        for engine_table in (
            store.review_items,
            store.review_batches,
            store.record_states,
            store.archive,
            store.holds,
            store.erasure_requests,
            store.erasure_masks,
        ):
            conn.execute(engine_table.delete())
        for table in scenario.tables:
            columns = ", ".join(f"{c.name} {SQL_TYPES[dialect][c.kind]}" for c in table.columns)
            conn.execute(sa.text(f"CREATE TABLE {table.name} ({columns})"))
            rows = scenario.rows.get(table.name, [])
            if rows:
                names = [c.name for c in table.columns]
                statement = sa.text(
                    f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join(':' + n for n in names)})"
                )
                conn.execute(
                    statement, [{c.name: render(dialect, c, row[c.name]) for c in table.columns} for row in rows]
                )


def read_world(engine: sa.Engine, scenario: Scenario) -> oracle.World:
    """Every row of every table, as the database returns it, for the oracle."""
    tables: dict[str, dict[str, dict[str, Any]]] = {}
    keys: dict[str, str] = {}
    with engine.connect() as conn:
        for table in scenario.tables:
            result = conn.execute(sa.text(f"SELECT * FROM {table.name}"))
            tables[table.name] = {str(row[table.key]): dict(row) for row in result.mappings()}
            keys[table.name] = table.key
    return oracle.World(pack=scenario.pack, tables=tables, keys=keys)


def loaded_pack(scenario: Scenario) -> LoadedPack:
    """The engine's view of the scenario's pack (the dict is what the YAML would hold)."""
    text = yaml.safe_dump(scenario.pack, sort_keys=False)
    return validate_pack(scenario.pack, Path("<differential>"), text)


# --------------------------------------------------------------------------
# Comparing
# --------------------------------------------------------------------------


def _nonzero(counts: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    return {d: {t: n for t, n in per.items() if n} for d, per in counts.items() if any(per.values())}


def engine_states(engine: sa.Engine) -> dict[tuple[str, str], tuple[str, dt.datetime]]:
    rs = store.record_states
    with engine.connect() as conn:
        return {
            (r.dataset, r.record_key): (r.state, r.since)
            for r in conn.execute(sa.select(rs.c.dataset, rs.c.record_key, rs.c.state, rs.c.since))
        }


def engine_archive(engine: sa.Engine) -> set[tuple[str, str]]:
    a = store.archive
    with engine.connect() as conn:
        return {(r.dataset, r.record_key) for r in conn.execute(sa.select(a.c.dataset, a.c.record_key))}


def _flag(value: Any) -> bool | None:
    return None if value is None else bool(value)


def engine_rows(engine: sa.Engine, scenario: Scenario) -> dict[str, dict[str, tuple[Any, ...]]]:
    """Per dataset table: key -> (is_active, name, email?) of the rows still present."""
    result = {}
    with engine.connect() as conn:
        for ds in scenario.pack["datasets"].values():
            table = next(t for t in scenario.tables if t.name == ds["table"])
            names = [c.name for c in table.columns if c.name in ("is_active", "name", "email")]
            query = sa.text(f"SELECT {table.key}, {', '.join(names)} FROM {table.name}")
            result[table.name] = {
                str(r[0]): tuple(_flag(v) if n == "is_active" else v for n, v in zip(names, r[1:], strict=True))
                for r in conn.execute(query)
            }
    return result


def oracle_rows(world: oracle.World, scenario: Scenario) -> dict[str, dict[str, tuple[Any, ...]]]:
    result = {}
    for ds in scenario.pack["datasets"].values():
        table = next(t for t in scenario.tables if t.name == ds["table"])
        names = [c.name for c in table.columns if c.name in ("is_active", "name", "email")]
        result[table.name] = {
            key: tuple(_flag(row[n]) if n == "is_active" else row[n] for n in names)
            for key, row in world.tables[table.name].items()
        }
    return result


@dataclass
class Placed:
    """A hold placed by a scenario: its id in the database and its index in the oracle's world."""

    hold_id: int
    index: int


def apply_events(
    engine: sa.Engine, world: oracle.World, loaded: LoadedPack, run: Run, holds: dict[int, Placed]
) -> None:
    """Place and release holds, file erasure requests: in the database and in the oracle's world."""
    with engine.begin() as conn:
        for event in run.events:
            if event.email is not None:
                # What `hold add --email` and `erasure add --email` check first (retention/commands/subjects.py).
                refusals.refuse_unreachable_identity(
                    loaded.pack, subject_key=event.subject, email=event.email, erasing=event.kind == "erasure"
                )
            if event.kind == "hold":
                hold_id = subjects.place_hold(
                    conn,
                    scope=event.scope,  # type: ignore[arg-type]
                    reason="differential test",
                    placed_by="test",
                    secret=SECRET,
                    dataset=event.dataset,
                    record_key=event.key,
                    subject_key=event.subject,
                    email=event.email,
                    pack=loaded.pack,
                )
                email = oracle.normal_email(event.email)
                world.holds.append(oracle.Hold(event.scope, event.dataset, event.key, event.subject, email=email))
                holds[event.hold] = Placed(hold_id, len(world.holds) - 1)
            elif event.kind == "release":
                placed = holds[event.hold]
                subjects.release_hold(conn, placed.hold_id, released_by="test", reason="done", secret=SECRET)
                world.holds[placed.index].active = False
            else:
                assert event.received is not None
                request_id = subjects.add_request(
                    conn,
                    subject_key=event.subject,
                    email=event.email,
                    received=event.received,
                    pack=loaded.pack,
                    secret=SECRET,
                )
                email = oracle.normal_email(event.email)
                world.requests.append(oracle.Request(request_id, event.subject, event.received, email=email))


def check_scenario(engine: sa.Engine, scenario: Scenario) -> None:
    """Store the scenario, then for every run: oracle == plan == run, and the data as predicted."""
    loaded = loaded_pack(scenario)
    store_scenario(engine, scenario)
    world = read_world(engine, scenario)
    holds: dict[int, Placed] = {}
    for index, run in enumerate(scenario.runs):
        apply_events(engine, world, loaded, run, holds)
        where = f"run {index + 1} at {run.as_of.isoformat()}"
        predicted = oracle.plan_run(world, run.as_of)
        expected = predicted.counts()
        planned = _nonzero(execute.plan(engine, loaded, run.as_of).transitions)
        assert planned == expected, f"{where}: plan != oracle\n  plan:   {planned}\n  oracle: {expected}"
        result = execute.run(engine, loaded, run.as_of, secret=SECRET)
        assert result.status == "succeeded", f"{where}: run {result.status}: {result.failures or result.guarded}"
        ran = _nonzero(result.counts)
        assert ran == expected, f"{where}: run != oracle\n  run:    {ran}\n  oracle: {expected}"
        recorded, wanted = ledger_due(engine, result.run_id, scenario), oracle_due(predicted, scenario)
        assert recorded == wanted, f"{where}: ledger due instants differ\n{_diff(recorded, wanted)}"
        oracle.apply(world, predicted)
        states = engine_states(engine)
        want = {k: (s.state, s.since) for k, s in world.states.items()}
        assert states == want, f"{where}: record states differ\n{_diff(states, want)}"
        assert engine_archive(engine) == world.archive, f"{where}: archive payloads differ"
        got_rows, want_rows = engine_rows(engine, scenario), oracle_rows(world, scenario)
        assert got_rows == want_rows, f"{where}: source rows differ\n{_diff(got_rows, want_rows)}"


def _itemised(scenario: Scenario) -> set[str]:
    """Datasets whose ledger keeps an item (and its due instant) per record: not ``ledger: summary``."""
    return {name for name, ds in scenario.pack["datasets"].items() if ds.get("ledger") != "summary"}


def ledger_due(engine: sa.Engine, run_id: str, scenario: Scenario) -> dict[tuple[str, str, str], dt.datetime]:
    """Per (dataset, record key, transition) of the run's ledger: the due instant its item records.

    The ledger is the evidence of why each record moved when it did; counts
    and states alone do not see an item whose due instant is wrong (a
    purged record leaves no state row). Read through tests/ledger_view.py,
    which maps each item's pseudonym back to the key it was made from.
    """
    tables = {t.name: t for t in scenario.tables}
    keys = {
        name: [row[tables[ds["table"]].key] for row in scenario.rows.get(ds["table"], [])]
        for name, ds in scenario.pack["datasets"].items()
    }
    itemised = _itemised(scenario)
    found: dict[tuple[str, str, str], dt.datetime] = {}
    for dataset, key, transition, due in record_moves(engine, SECRET, keys, run_id):
        if dataset in itemised:
            assert isinstance(due, dt.datetime), f"{dataset} {transition}: a summary entry, not an item per record"
            assert (dataset, key, transition) not in found, f"two items for {(dataset, key, transition)}"
            found[(dataset, key, transition)] = _utc(due)
    return found


def oracle_due(outcome: oracle.Outcome, scenario: Scenario) -> dict[tuple[str, str, str], dt.datetime]:
    """Per (dataset, record key, transition): the oracle's due instant of the run's step."""
    itemised = _itemised(scenario)
    return {
        (dataset, key, f"{step.from_state}->{step.to_state}"): _utc(step.at)
        for (dataset, key), steps in outcome.steps.items()
        if dataset in itemised
        for step in steps
    }


def _utc(instant: dt.datetime) -> dt.datetime:
    return instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant.astimezone(UTC)


def _diff(got: dict[Any, Any], want: dict[Any, Any]) -> str:
    lines = []
    for key in sorted(set(got) | set(want), key=str):
        if got.get(key) != want.get(key):
            lines.append(f"  {key}: engine {got.get(key)!r} oracle {want.get(key)!r}")
    return "\n".join(lines[:40])


DIFFERENTIAL = settings(
    deadline=None,
    derandomize=os.environ.get("RETENTION_DIFFERENTIAL_RANDOM") != "1",
    phases=[Phase.explicit, Phase.reuse, Phase.generate]
    if os.environ.get("RETENTION_DIFFERENTIAL_SHRINK") == "0"
    else list(Phase),
    print_blob=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
    ],
)


# The slow tier runs the long differential: each example compiles large new statements (seconds
# per example on MariaDB); the fast tier keeps the same draws at a smoke count.
@pytest.mark.parametrize("examples", tiers(FAST_EXAMPLES, EXAMPLES))
def test_plan_run_and_oracle_agree(migrated: sa.Engine, examples: int) -> None:
    """For random packs, data, holds, erasures and as-of sequences: oracle == plan == run, and the data too.

    FAST_EXAMPLES per database in the fast tier, 200 in the slow tier (see the module docstring).
    """

    @settings(DIFFERENTIAL, max_examples=examples)
    @given(scenario=scenarios())
    def check(scenario: Scenario) -> None:
        check_scenario(migrated, scenario)

    check()


# --------------------------------------------------------------------------
# Named scenarios: the smallest cases of what the random ones found, kept as
# fixed examples so that each disagreement has a short, stable name.
# --------------------------------------------------------------------------

_PEOPLE = Table("t_people", "id", plain("id:pk name:text email:text is_active:bool", Column("p0", "date")))
_EVENTS = Table("t_events", "id", plain("id:pk person_id:int name:text is_active:bool", Column("e0", "date")))
_ORDERS = Table("t_orders", "id", plain("id:pk person_id:int status:text name:text email:text is_active:bool o0:date"))
_DEACTIVATE = {"to": "inactive", "action": "deactivate", "set": {"is_active": False}}
_ARCHIVE_DELETE = {"to": "archived", "action": "archive", "columns": ["id", "name"], "then": "delete"}
_ARCHIVE_MASK = {
    "to": "archived",
    "action": "archive",
    "columns": ["id", "name"],
    "then": "anonymise",
    "mask": {"name": None},
}


def _paris(day: str) -> dt.datetime:
    return dt.datetime.fromisoformat(day).replace(tzinfo=ZoneInfo("Europe/Paris")).astimezone(UTC)


def _pack(people_life: list[dict[str, Any]], others: dict[str, Any] | None = None, **people: Any) -> dict[str, Any]:
    datasets: dict[str, Any] = {
        "people": {
            "table": "t_people",
            "key": "id",
            "subject_key": "id",
            "basis": "account",
            "keep": [{"clock": {"column": "p0", "type": "date"}, "period": "P1Y"}],
            "lifecycle": people_life,
            **people,
        },
        **(others or {}),
    }
    return {
        "pack": "named",
        "version": "1",
        "effective_from": "2000-01-01",
        "timezone": "Europe/Paris",
        "guard": {"max_share": 1.0},
        "datasets": datasets,
    }


def _person(key: int, day: str | None, **more: Any) -> dict[str, Any]:
    clock = Moment("value", dt.date.fromisoformat(day)) if day else Moment("null")
    return {"id": key, "name": f"name {key}", "email": f"p{key}@example.test", "is_active": True, "p0": clock, **more}


_EMAIL_EVENTS = Table(
    "t_events", "id", plain("id:pk person_id:int name:text email:text is_active:bool", Column("e0", "date"))
)


def _order(key: int, email: str | None, day: str) -> dict[str, Any]:
    clock = Moment("value", dt.date.fromisoformat(day))
    return {
        "id": key,
        "person_id": None,
        "status": "paid",
        "name": f"order {key}",
        "email": email,
        "is_active": True,
        "o0": clock,
    }


def _event(key: int, person: int, day: str | None = None) -> dict[str, Any]:
    clock = Moment("value", dt.date.fromisoformat(day)) if day else Moment("null")
    return {"id": key, "person_id": person, "name": f"event {key}", "is_active": True, "e0": clock}


_PURGE = [{"to": "purged", "action": "delete"}]
_PEOPLE_AT = Table("t_people", "id", plain("id:pk name:text email:text is_active:bool", Column("p0", "timestamptz")))


def _person_at(key: int, instant: str) -> dict[str, Any]:
    return {**_person(key, None), "p0": Moment("value", dt.datetime.fromisoformat(instant))}


def _ten_people() -> dict[str, list[dict[str, Any]]]:
    """Nine people with clocks spread over 2019's first half, and one without: the set-based paths' rows."""
    return {"t_people": [_person(i, f"2019-0{1 + i % 6}-1{i % 9}") for i in range(1, 10)] + [_person(10, None)]}


# Three holds before the first run (person 2's record, subject 7, person 8's record), released one by one later.
_THREE_HOLDS = (
    Event("hold", 0, "record", "people", key="2"),
    Event("hold", 1, "subject", subject="7"),
    Event("hold", 2, "record", "people", key="8"),
)


def _latest(table: str, column: str) -> dict[str, Any]:
    """A person's clock read from their latest row of ``table`` (by person_id), kept a year."""
    return {
        "clock": {"aggregate": "max", "table": table, "on": "person_id", "column": column, "type": "date"},
        "period": "P1Y",
    }


def _person_orders(**more: Any) -> dict[str, Any]:
    """Orders by person_id, each kept a year from its own date and then deleted."""
    return {
        "table": "t_orders",
        "key": "id",
        "subject_key": "person_id",
        "basis": "orders",
        "keep": [{"clock": {"column": "o0", "type": "date"}, "period": "P1Y"}],
        **more,
        "lifecycle": [{"to": "purged", "action": "delete"}],
    }


def _paid(key: int, person: int, day: dt.date) -> dict[str, Any]:
    return {
        "id": key,
        "person_id": person,
        "status": "paid",
        "name": "o",
        "email": "o",
        "is_active": True,
        "o0": Moment("value", day),
    }


def _people_keyed(kind: str) -> Table:
    """``t_people`` with a text key of ``kind`` (``key_no_pad``, ``key_pad``: see SQL_TYPES)."""
    return Table("t_people", "id", plain(f"id:{kind} name:text email:text is_active:bool", Column("p0", "date")))


def _spaced(keys: dict[str, str]) -> list[dict[str, Any]]:
    """People with text keys (key -> day of their clock), each its own subject."""
    return [{**_person(i, day), "id": key, "name": f"name {key!r}"} for i, (key, day) in enumerate(keys.items())]


# Keys that differ only by trailing spaces (or case), on a source that keeps them apart (MariaDB: NO PAD).
# The subject is the e-mail column (p0@ ... p4@, one each): the oracle takes a subject's trailing spaces
# for a PostgreSQL CHAR(n)'s padding (naive_oracle.key_text); subjects that differ by trailing spaces are
# tests/test_case_keys.py's.
_SPACED = {"a": "2019-01-10", "a ": "2019-01-11", "A": "2019-01-12", "b": "2019-02-10", "b  ": "2019-02-11"}
_SPACED_HOLDS = (Event("hold", 0, "record", "people", key="a"), Event("hold", 1, "subject", subject="p3@example.test"))


NAMED: dict[str, Scenario] = {
    # Keys that differ only by trailing spaces are two records on a source that compares them apart
    # (MariaDB NO PAD): two states, two payloads, and a hold on 'a' (record) or 'b' (subject) holds
    # neither 'a ' nor 'b  ' (MariaDB's PAD SPACE utf8mb4_bin took them for one).
    "trailing_space_keys_purge": Scenario(
        _pack(_PURGE, batch_size=2, subject_key="email"),
        (_people_keyed("key_no_pad"),),
        {"t_people": _spaced(_SPACED)},
        (Run(_paris("2020-04-15"), _SPACED_HOLDS), Run(_paris("2020-06-20"), (Event("release", 0),))),
    ),
    "trailing_space_keys_archive": Scenario(
        _pack([_ARCHIVE_DELETE, {"to": "purged", "after": "P2M"}], batch_size=2, subject_key="email"),
        (_people_keyed("key_no_pad"),),
        {"t_people": _spaced(_SPACED)},
        (
            Run(_paris("2020-04-15"), _SPACED_HOLDS),
            Run(_paris("2020-06-20"), (Event("release", 0), Event("release", 1))),
            Run(_paris("2020-09-01")),
        ),
    ),
    # A PAD SPACE source (MariaDB utf8mb4_bin) holds 'c ' alone: a hold typed as 'c' is not its (the
    # oracle compares keys as Python does).
    "trailing_space_keys_pad_source": Scenario(
        _pack(_PURGE, batch_size=2, subject_key="email"),
        (_people_keyed("key_pad"),),
        {"t_people": _spaced({"c ": "2019-01-10", "d": "2019-01-11", "e": "2019-01-12"})},
        (
            Run(
                _paris("2020-04-15"),
                (Event("hold", 0, "record", "people", key="c"), Event("hold", 1, "record", "people", key="d ")),
            ),
        ),
    ),
    # A plain purge (the set-based path, retention/engine/set_purge.py): holds by record and by
    # subject keep their records across runs, released ones go; the others go in key ranges.
    "set_based_purge_holds": Scenario(
        _pack(_PURGE, batch_size=2),
        (_PEOPLE,),
        _ten_people(),
        (
            Run(_paris("2020-04-15"), _THREE_HOLDS),
            Run(_paris("2020-06-20"), (Event("release", 0),)),
            Run(_paris("2020-08-01"), (Event("release", 1),)),
        ),
    ),
    # The archive set-based (retention/engine/set_archive.py): holds by record and by subject keep
    # their records across runs, released ones are archived; records due for archive and purge in one
    # run go per record through both; the payloads' own purge follows by delay.
    "set_based_archive_holds": Scenario(
        _pack([_ARCHIVE_DELETE, {"to": "purged", "after": "P2M"}], batch_size=2),
        (_PEOPLE,),
        _ten_people(),
        (
            Run(_paris("2020-04-15"), _THREE_HOLDS),
            Run(_paris("2020-06-20"), (Event("release", 0),)),
            Run(_paris("2020-08-01"), (Event("release", 1),)),
            Run(_paris("2020-10-01"), (Event("release", 2),)),
        ),
    ),
    # The same purge by a timestamptz clock, instants either side of Paris midnights on DST days:
    # the day each falls on (and so its due instant) is the policy zone's.
    "set_based_purge_midnights": Scenario(
        _pack(_PURGE, keep=[{"clock": {"column": "p0", "type": "timestamptz"}, "period": "P1Y"}]),
        (_PEOPLE_AT,),
        {
            "t_people": [
                _person_at(1, "2020-03-28T22:59:59.999999+00:00"),
                _person_at(2, "2020-03-28T23:00:00+00:00"),
                _person_at(3, "2020-03-29T21:59:59+00:00"),
                _person_at(4, "2020-03-29T22:00:00+00:00"),
                _person_at(5, "2020-10-24T21:59:59.999999+00:00"),
                _person_at(6, "2020-10-24T22:00:00+00:00"),
                _person_at(7, "2020-10-25T22:59:59+00:00"),
                _person_at(8, "2020-10-25T23:00:00+00:00"),
            ]
        },
        (
            Run(_paris("2021-03-29")),
            Run(_paris("2021-03-30")),
            Run(_paris("2021-10-25")),
            Run(_paris("2021-10-26")),
            Run(_paris("2021-10-27")),
        ),
    ),
    # People fall due by their latest order (2019-01-10 + P1Y) in the same run that purges
    # those orders (also 2019-01-10 + P1Y): run must move them as plan said.
    "reader_before_writer": Scenario(
        _pack(
            [_DEACTIVATE],
            {"orders": _person_orders()},
            keep=[
                _latest("t_orders", "o0"),
                {"clock": {"column": "p0", "type": "date"}, "period": "P1Y"},
            ],
        ),
        (_PEOPLE, _ORDERS),
        {
            "t_people": [_person(1, "2018-05-05"), _person(2, None)],  # 2: the latest order is its only clock
            "t_orders": [_paid(i, p, dt.date(2019, 1, 10)) for i, p in ((1, 1), (2, 1), (3, 2))],
        },
        (Run(_paris("2024-06-01")),),
    ),
    # Person 1 is deactivated in run 1 and its row stays, its clock still due; in run 2 it must
    # not be counted as active again (the state anti-join of the count path).
    "deactivated_row_due_again": Scenario(
        _pack([_DEACTIVATE, {**_ARCHIVE_MASK, "after": "P1Y"}]),
        (_PEOPLE,),
        {"t_people": [_person(1, "2020-01-15"), _person(2, "2020-03-15")]},
        (Run(_paris("2021-02-01")), Run(_paris("2021-06-01")), Run(_paris("2022-02-01"))),
    ),
    # A follow that reaches archived (leader inactive) and, P8D later, purged: one run goes on
    # along the lifecycle ("the walk continues from there").
    "follow_then_delay": Scenario(
        _pack(
            [_DEACTIVATE],
            {
                "events": {
                    "table": "t_events",
                    "key": "id",
                    "subject_key": "person_id",
                    "basis": "events",
                    "follows": {"dataset": "people", "on": {"inactive": "archived"}},
                    "lifecycle": [_DEACTIVATE, _ARCHIVE_MASK, {"to": "purged", "after": "P8D"}],
                }
            },
        ),
        (_PEOPLE, _EVENTS),
        {"t_people": [_person(1, "2020-01-15")], "t_events": [_event(1, 1)]},
        (Run(_paris("2024-06-01")),),
    ),
    # An erasure received 2023-05-10 does not delay what the clock made due on 2021-01-16:
    # each state is entered at the earliest due instant among its reasons.
    "erasure_earliest_reason": Scenario(
        _pack([_DEACTIVATE, _ARCHIVE_MASK], on_erasure="archived"),
        (_PEOPLE,),
        {"t_people": [_person(1, "2020-01-15")]},
        (Run(_paris("2024-06-01"), (Event("erasure", subject="1", received=dt.date(2023, 5, 10)),)),),
    ),
    # Archived with its row deleted (run 1), then an erasure to purged: the record is known by its
    # state and payload, and the payload goes.
    "erasure_reaches_archived_payload": Scenario(
        _pack([_ARCHIVE_DELETE, {"to": "purged", "after": "P5Y"}], on_erasure="purged"),
        (_PEOPLE,),
        {"t_people": [_person(1, "2020-01-15")]},
        (
            Run(_paris("2022-06-01")),
            Run(_paris("2023-06-01"), (Event("erasure", subject="1", received=dt.date(2023, 5, 10)),)),
        ),
    ),
    # Guest events follow orders by address (issue 26): event 1 (" A@X.test") follows order 2, the
    # greatest key of its address, not order 1 that goes inactive first; event 2 follows order 3.
    "follow_by_email_latest_leader": Scenario(
        _pack(
            [_DEACTIVATE],
            {
                "orders": {
                    "table": "t_orders",
                    "key": "id",
                    "email": "email",
                    "basis": "invoices",
                    "keep": [{"clock": {"column": "o0", "type": "date"}, "period": "P1Y"}],
                    "lifecycle": [_DEACTIVATE, {"to": "purged", "after": "P1Y", "action": "delete"}],
                },
                "events": {
                    "table": "t_events",
                    "key": "id",
                    "email": "email",
                    "basis": "reviews",
                    "follows": {"dataset": "orders", "by": "email", "on": {"inactive": "purged"}},
                    "lifecycle": [{"to": "purged", "action": "anonymise", "mask": {"name": None}}],
                },
            },
        ),
        (_PEOPLE, _EMAIL_EVENTS, _ORDERS),
        {
            "t_people": [_person(1, "2020-01-15")],
            "t_orders": [
                _order(1, "a@x.test", "2019-01-10"),
                _order(2, " A@X.test", "2021-06-01"),
                _order(3, "b@x.test", "2019-03-01"),
                _order(4, None, "2019-03-01"),
            ],
            "t_events": [
                {**_event(1, 1), "email": "a@x.test "},
                {**_event(2, 1), "email": "B@x.test"},
                {**_event(3, 1), "email": None},
                {**_event(4, 1), "email": "z@x.test"},
            ],
        },
        (Run(_paris("2020-06-01")), Run(_paris("2022-07-01"))),
    ),
    # An event archived with its row deleted follows its person into purged.
    "follow_reaches_archived_payload": Scenario(
        _pack(
            [_DEACTIVATE, {"to": "purged", "after": "P1Y", "action": "delete"}],
            {
                "events": {
                    "table": "t_events",
                    "key": "id",
                    "subject_key": "person_id",
                    "basis": "events",
                    "keep": [{"clock": {"column": "e0", "type": "date"}, "period": "P1M"}],
                    "follows": {"dataset": "people", "on": {"purged": "purged"}},
                    "lifecycle": [_ARCHIVE_DELETE, {"to": "purged", "after": "P10Y"}],
                }
            },
        ),
        (_PEOPLE, _EVENTS),
        {"t_people": [_person(1, "2020-01-15")], "t_events": [_event(1, 1, "2020-01-10")]},
        (Run(_paris("2021-03-01")), Run(_paris("2022-03-01"))),
    ),
    # WooCommerce's shape: a person's clock is the latest of their orders and of their events;
    # orders and events follow the person and are also purged by their own clocks. Each sibling
    # changes a table the leader's clock reads, so the two cannot be ordered against each other;
    # the leader runs first and carries them, and their own passes then read only their own clocks.
    "siblings_change_leader_clock": Scenario(
        _pack(
            [_DEACTIVATE],
            {
                "orders": _person_orders(follows={"dataset": "people", "on": {"inactive": "purged"}}),
                "events": {
                    "table": "t_events",
                    "key": "id",
                    "subject_key": "person_id",
                    "basis": "events",
                    "keep": [{"clock": {"column": "e0", "type": "date"}, "period": "P1M"}],
                    "follows": {"dataset": "people", "on": {"inactive": "purged"}},
                    "lifecycle": [{"to": "purged", "action": "delete"}],
                },
            },
            keep=[
                _latest("t_orders", "o0"),
                _latest("t_events", "e0"),
            ],
        ),
        (_PEOPLE, _ORDERS, _EVENTS),
        {
            "t_people": [_person(1, None), _person(2, None), _person(3, None)],
            "t_orders": [
                _paid(i, p, dt.date.fromisoformat(day))
                for i, p, day in ((1, 1, "2019-01-10"), (2, 2, "2020-05-01"), (3, 3, "2019-02-01"))
            ],
            "t_events": [_event(1, 1, "2018-06-01"), _event(2, 2, "2018-01-01"), _event(3, 3, "2020-04-01")],
        },
        (Run(_paris("2020-06-01")), Run(_paris("2021-06-01"))),
    ),
    # Clocks on the days around each run's due boundary (date + P1Y against the as-of's local
    # day, in a leap year and mid-year, late in the day): the records due on the very day move,
    # the next day's stay. A due date one day late (or early) in SQL alone changes plan and run
    # against the oracle; the random draws seldom land on the boundary day itself.
    "due_on_the_day": Scenario(
        _pack([_DEACTIVATE]),
        (_PEOPLE,),
        {
            "t_people": [
                *(_person(i, f"2023-02-{day:02d}") for i, day in ((1, 26), (2, 27), (3, 28))),
                *(_person(i, f"2023-03-{day:02d}") for i, day in ((4, 1), (5, 2))),
                *(_person(i, f"2023-{day}") for i, day in ((6, "05-30"), (7, "05-31"), (8, "06-01"), (9, "06-02"))),
            ]
        },
        (Run(_paris("2024-02-29T23:30")), Run(_paris("2024-06-01T00:30")), Run(_paris("2024-06-02T23:59"))),
    ),
    # SQLite: an out-of-range date and trailing garbage are invalid anomalies, never moved
    # (elsewhere the column cannot hold them and they are stored as NULL).
    "invalid_text_dates": Scenario(
        _pack([_DEACTIVATE]),
        (_PEOPLE,),
        {
            "t_people": [
                _person(1, "2020-01-15"),
                _person(2, None, p0=Moment("invalid", "2020-02-30")),
                _person(3, None, p0=Moment("invalid", "2020-01-01garbage")),
            ]
        },
        (Run(_paris("2024-06-01")),),
    ),
    # Partial erasure (issue 26 clause 4): person 1 is masked at the first run after the request
    # and kept; its own clock makes it inactive (2021-01-16), then purged a year later. Person 2,
    # held when the request came, is masked once the hold is released.
    "partial_erasure_masks_then_purges": Scenario(
        _pack(
            [_DEACTIVATE, {"to": "purged", "after": "P1Y", "action": "delete"}],
            on_erasure={
                "mask": {"name": None, "email": {"strategy": "fixed", "value": "erased@example.invalid"}},
                "keep_until": "purged",
            },
        ),
        (_PEOPLE,),
        {"t_people": [_person(1, "2020-01-15"), _person(2, "2022-03-01"), _person(3, "2020-01-15")]},
        (
            Run(
                _paris("2021-01-10"),
                (
                    Event("erasure", subject="1", received=dt.date(2021, 1, 5)),
                    Event("hold", hold=1, scope="subject", subject="2"),
                    Event("erasure", subject="2", received=dt.date(2021, 1, 6)),
                ),
            ),
            Run(_paris("2021-06-01"), (Event("release", hold=1),)),
            Run(_paris("2022-06-01")),
        ),
    ),
    # Holds and erasure requests by address (docs/rules.md, "Identities"): typed in another case
    # and with spaces, they reach the records whose address is the same trimmed and lower-cased,
    # whatever their subject: order 1 is subject 3's but carries a@x.test, so the request by
    # a@x.test erases it with person 1 and guest order 2, not person 1's order 3 (c@x.test: the
    # engine does not guess one identity from the other); NULL and empty addresses are nobody's.
    # Guest reviews (events) have no subject at all. The hold by " B@X.TEST" keeps person 2 and
    # review 2 until it is released, though a request names person 2 by id and address. Person 5,
    # archived with its row deleted, is reached by its state row's pseudonym of d@x.test.
    "erasure_and_hold_by_email": Scenario(
        _pack(
            [_ARCHIVE_DELETE, {"to": "purged", "after": "P2Y"}],
            {
                "orders": {
                    "table": "t_orders",
                    "key": "id",
                    "subject_key": "person_id",
                    "email": "email",
                    "basis": "invoices",
                    "keep": [{"clock": {"column": "o0", "type": "date"}, "period": "P1Y"}],
                    "lifecycle": [{"to": "purged", "action": "delete"}],
                    "on_erasure": "purged",
                },
                "reviews": {
                    "table": "t_events",
                    "key": "id",
                    "email": "email",
                    "basis": "reviews",
                    "keep": [{"clock": {"column": "e0", "type": "date"}, "period": "P1Y"}],
                    "lifecycle": [{"to": "purged", "action": "anonymise", "mask": {"name": None, "email": None}}],
                    "on_erasure": "purged",
                },
            },
            email="email",
            on_erasure="purged",
        ),
        (_PEOPLE, _EMAIL_EVENTS, _ORDERS),
        {
            "t_people": [
                {**_person(1, "2023-05-01"), "email": "a@x.test"},
                {**_person(2, "2023-05-01"), "email": "B@x.test "},
                {**_person(3, "2023-05-01"), "email": None},
                {**_person(4, "2023-05-01"), "email": ""},
                {**_person(5, "2022-01-10"), "email": "d@x.test"},
            ],
            "t_orders": [
                {**_order(1, " A@X.test", "2023-05-01"), "person_id": 3},
                _order(2, "a@x.test", "2023-05-01"),
                {**_order(3, "c@x.test ", "2023-05-01"), "person_id": 1},
                _order(4, None, "2023-05-01"),
                _order(5, "", "2023-05-01"),
            ],
            "t_events": [
                {**_event(1, 1, "2023-05-01"), "email": "A@x.test"},
                {**_event(2, 1, "2023-05-01"), "email": "b@x.test"},
                {**_event(3, 1, "2023-05-01"), "email": None},
                {**_event(4, 1, "2023-05-01"), "email": ""},
            ],
        },
        (
            Run(
                _paris("2023-06-01"),
                (
                    Event("erasure", received=dt.date(2023, 5, 20), email="a@x.test "),
                    Event("hold", hold=0, scope="subject", email=" B@X.TEST"),
                    Event("erasure", subject="2", received=dt.date(2023, 5, 21), email="b@x.test"),
                ),
            ),
            Run(
                _paris("2023-07-01"),
                (Event("erasure", received=dt.date(2023, 6, 20), email="D@X.test"), Event("release", hold=0)),
            ),
        ),
    ),
    # A partial erasure masks person 1's address (and person 3's) in the run that also deactivates
    # them: the masked address no longer names the person (docs/rules.md, "Partial erasure"), so a
    # later hold by a@x.test keeps person 2 (" A@x.test") active but not person 1, which is purged
    # on its own term; a request by b@x.test after person 3 was masked changes nothing.
    "masked_address_names_nobody": Scenario(
        _pack(
            [_DEACTIVATE, {"to": "purged", "after": "P1Y", "action": "delete"}],
            email="email",
            on_erasure={
                "mask": {"name": None, "email": {"strategy": "fixed", "value": "erased@example.invalid"}},
                "keep_until": "purged",
            },
        ),
        (_PEOPLE,),
        {
            "t_people": [
                {**_person(1, "2020-01-15"), "email": "a@x.test"},
                {**_person(2, "2020-03-01"), "email": " A@x.test"},
                {**_person(3, "2020-01-15"), "email": "b@x.test"},
            ]
        },
        (
            Run(
                _paris("2021-01-20"),
                (
                    Event("erasure", subject="1", received=dt.date(2021, 1, 5)),
                    Event("erasure", subject="3", received=dt.date(2021, 1, 5)),
                ),
            ),
            Run(_paris("2021-06-01"), (Event("hold", hold=0, scope="subject", email="a@x.test"),)),
            Run(_paris("2022-06-01"), (Event("erasure", received=dt.date(2022, 5, 1), email="B@x.test"),)),
        ),
    ),
    # The other half of "Partial erasure": person 1 leaves active (run 1) before a request by its id
    # masks its address (run 2); its state row keeps the pseudonym of a@x.test, so a later hold by
    # that address still reaches it and keeps it from its purge (runs 3, 4); person 3, of another
    # address, is purged on its term.
    "masked_after_leaving_active": Scenario(
        _pack(
            [_DEACTIVATE, {"to": "purged", "after": "P1Y", "action": "delete"}],
            email="email",
            on_erasure={"mask": {"name": None, "email": None}, "keep_until": "purged"},
        ),
        (_PEOPLE,),
        {
            "t_people": [
                {**_person(1, "2020-01-15"), "email": "a@x.test"},
                {**_person(3, "2020-01-15"), "email": "b@x.test"},
            ]
        },
        (
            Run(_paris("2021-01-20"), ()),
            Run(_paris("2021-02-01"), (Event("erasure", subject="1", received=dt.date(2021, 1, 25)),)),
            Run(_paris("2021-06-01"), (Event("hold", hold=0, scope="subject", email="A@x.test "),)),
            Run(_paris("2022-06-01"), ()),
        ),
    ),
    # An address with a non-ASCII capital, typed as stored but for ASCII case and spaces, reaches
    # its guest order (SQLite's LOWER folds ASCII letters only: the typed address was folded by
    # Python's and matched nothing there), and a hold by it keeps order 2; person 1, archived with
    # its row deleted, is reached through its state row's pseudonym.
    "non_ascii_capital_in_address": Scenario(
        _pack(
            [_ARCHIVE_DELETE, {"to": "purged", "after": "P2Y"}],
            {
                "orders": {
                    "table": "t_orders",
                    "key": "id",
                    "email": "email",
                    "basis": "invoices",
                    "keep": [{"clock": {"column": "o0", "type": "date"}, "period": "P1Y"}],
                    "lifecycle": [{"to": "purged", "action": "delete"}],
                    "on_erasure": "purged",
                }
            },
            email="email",
            on_erasure="purged",
        ),
        (_PEOPLE, _ORDERS),
        {
            "t_people": [{**_person(1, "2022-01-10"), "email": "Élodie@x.test"}],
            "t_orders": [_order(1, "Élodie@x.test", "2023-05-01"), _order(2, " ÉMILE@x.test", "2022-01-10")],
        },
        (
            Run(_paris("2023-06-01"), (Event("hold", hold=0, scope="subject", email="ÉMILE@X.TEST"),)),
            Run(_paris("2023-07-01"), (Event("erasure", received=dt.date(2023, 6, 20), email=" Élodie@X.TEST"),)),
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(NAMED))
def test_named_scenario(migrated: sa.Engine, name: str) -> None:
    """Each named scenario: oracle == plan == run, and the data as predicted (see NAMED for why each exists)."""
    check_scenario(migrated, NAMED[name])


# --------------------------------------------------------------------------
# The oracle's own arithmetic, against docs/rules.md's worked examples
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "period", "last_kept"),
    [
        (dt.date(2020, 2, 29), "P3Y", dt.date(2023, 2, 28)),  # docs/rules.md: kept through 28 Feb 2023
        (dt.date(2021, 1, 31), "P1M", dt.date(2021, 2, 28)),
        (dt.date(2020, 1, 31), "P1M", dt.date(2020, 2, 29)),
        (dt.date(2021, 3, 31), "P13M", dt.date(2022, 4, 30)),
        (dt.date(2021, 5, 10), "P8D", dt.date(2021, 5, 18)),
        (dt.date(2021, 5, 10), "P2W", dt.date(2021, 5, 24)),
        (dt.date(2021, 5, 10), "P0D", dt.date(2021, 5, 10)),
        (dt.date(2020, 8, 31), "P1Y6M", dt.date(2022, 2, 28)),
    ],
)
def test_oracle_periods(event: dt.date, period: str, last_kept: dt.date) -> None:
    """The oracle's own Regulation 1182/71 arithmetic matches the worked examples."""
    assert oracle.add_period(event, period) == last_kept


def test_oracle_reads_every_sqlite_text_form() -> None:
    """Each SQLite text form reads as the instant it names; out-of-range or trailing text is invalid."""
    at = dt.datetime(2020, 2, 29, 9, 0, tzinfo=UTC)
    for text in (
        "2020-02-29 09:00:00",
        "2020-02-29T09:00:00",
        "2020-02-29 09:00",
        "2020-02-29T09:00:00.000",
        "2020-02-29T09:00:00Z",
        "2020-02-29T11:00:00+02:00",
        "2020-02-29 04:00-05:00",
    ):
        assert oracle.parse_value("timestamptz", text) == oracle.Parsed("value", at), text
    for text in ("2020-02-30", "2020-01-01garbage", "2020-1-5", "", "24:00"):
        assert oracle.parse_value("timestamptz", text) == oracle.Parsed("invalid"), text
    assert oracle.parse_value("timestamptz", "0000-00-00 00:00:00") == oracle.Parsed("zero")
    paris = oracle.parse_value("timestamp", "2020-02-29T09:00:00", "Europe/Paris")
    assert paris == oracle.Parsed("value", dt.datetime(2020, 2, 29, 8, 0, tzinfo=UTC))


def test_oracle_due_instant_of_the_docs_example() -> None:
    """29 Feb 2020 + P3Y in Europe/Paris is due on 1 Mar 2023 00:00 local (23:00 UTC the day before)."""
    assert oracle.due_after(dt.date(2020, 2, 29), "P3Y", "Europe/Paris") == dt.datetime(2023, 2, 28, 23, tzinfo=UTC)
