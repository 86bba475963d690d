"""Shards within one database: contiguous key ranges of every dataset (docs/scaling.md).

A dataset's *shard key* is its subject, or its record key when it has no
subject; a follower's is its leader reference, so it travels with its leader
record. Datasets whose shard keys name the same thing share a *key space*
(every dataset with a subject shares ``subject``; a dataset without one has
its own), and one list of cut points splits each space into N contiguous
ranges: shard 0 is everything below the first cut (and every record whose
key is NULL), shard i runs from cut i to cut i + 1.

The cuts are the quantiles of the space's largest dataset, in the order the
database compares the key in (integers as integers, text as binary text),
computed once per run group from one snapshot and recorded in the group's
run (``retention_runs.shard_bounds``); every shard reads them from there.
Membership is one SQL condition per dataset, on the source row and on the
record's state row alike, which :class:`DatasetPlanner` adds to the
dataset's ``where`` (:meth:`DatasetPlanner.included`) and to its state-row
passes, so every pass of a shard sees only its records.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from retention.dialects import dialect_for
from retention.engine.plan import DatasetPlanner
from retention.engine.plan_base import PlannerBase
from retention.errors import ConfigError

SUBJECT_SPACE = "subject"
MAX_SHARDS = 1024
"""The most shards one run group may have: ``--shard I/N``, ``--shards N`` and ``plan --shards N`` alike."""


@dataclass(frozen=True)
class ShardSpec:
    """Shard ``index`` (0-based) of ``count``."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> ShardSpec:
    """``I/N`` with 0 <= I < N (one-line error otherwise)."""
    index, slash, count = text.partition("/")
    if not slash or not index.strip().isdigit() or not count.strip().isdigit():
        raise ConfigError(f"--shard {text!r}: write I/N, shard I (from 0) of N, e.g. 0/4")
    spec = ShardSpec(int(index), int(count))
    if spec.count < 1 or spec.index >= spec.count:
        raise ConfigError(f"--shard {text!r}: I must be 0 to N - 1 and N at least 1")
    if spec.count > MAX_SHARDS:
        raise ConfigError(f"--shard {text!r}: N must be at most {MAX_SHARDS}, as for --shards")
    return spec


@dataclass(frozen=True)
class Space:
    """One key space: its kind (``int`` or ``text``) and N - 1 cut points."""

    kind: str
    cuts: tuple[Any, ...]

    def bounds(self, index: int) -> tuple[Any, Any]:
        """(low, high) of shard ``index``; None is open."""
        low = self.cuts[index - 1] if index > 0 else None
        high = self.cuts[index] if index < len(self.cuts) else None
        return low, high


@dataclass(frozen=True)
class Bounds:
    """Every space's cuts and the space of every dataset: what a run group records.

    ``nulls``: per dataset whose shard key can be NULL (a guest order without
    a customer), cuts of its own record key among those rows, so that they
    are spread over the shards like the others instead of all landing in
    shard 0. A group recorded before these existed has none: its NULL-keyed
    rows stay in shard 0, as they were planned.
    """

    shards: int
    spaces: dict[str, Space]
    datasets: dict[str, str]
    nulls: dict[str, Space] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "shards": self.shards,
                "spaces": {n: {"kind": s.kind, "cuts": list(s.cuts)} for n, s in self.spaces.items()},
                "datasets": self.datasets,
                "nulls": {n: {"kind": s.kind, "cuts": list(s.cuts)} for n, s in self.nulls.items()},
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Bounds:
        data = json.loads(text)
        spaces = {n: Space(s["kind"], tuple(s["cuts"])) for n, s in data["spaces"].items()}
        nulls = {n: Space(s["kind"], tuple(s["cuts"])) for n, s in data.get("nulls", {}).items()}
        return cls(int(data["shards"]), spaces, dict(data["datasets"]), nulls)


# --------------------------------------------------------------------------
# Shard keys
# --------------------------------------------------------------------------


def space_of(planner: PlannerBase) -> str:
    """The key space of a dataset (see the module doc); refuses what cannot travel together."""
    leader = planner.leader
    if leader is not None:
        if leader.leader is not None:
            raise ConfigError(
                f"--shard: dataset {planner.name} follows {leader.name}, which follows another dataset; "
                "sharding keeps one level of followers with their leader"
            )
        if leader.subject is not None and not _subject_is_key(leader):
            raise ConfigError(
                f"--shard: dataset {planner.name} follows {leader.name}, whose subject is not its key; "
                "sharding cannot keep its records with their leader"
            )
        return space_of(leader)
    if planner.subject is not None:
        return SUBJECT_SPACE
    return f"key:{planner.name}"


def _subject_is_key(planner: PlannerBase) -> bool:
    dataset = planner.dataset
    return dataset.subject_key == dataset.key and dataset.subject is None


def source_key(planner: PlannerBase) -> ColumnElement[Any]:
    """The shard key of a dataset's source rows."""
    if planner.leader is not None:
        assert planner.leader_column is not None
        return planner.leader_column
    if planner.subject is not None:
        return planner.subject
    return planner.key


def state_key(planner: PlannerBase, rs: Any) -> ColumnElement[Any]:
    """The shard key of a dataset's state rows (text, as the engine stores keys)."""
    if planner.leader is not None:
        return rs.c.leader_key  # type: ignore[no-any-return]
    if planner.subject is not None:
        return rs.c.subject_key  # type: ignore[no-any-return]
    return rs.c.record_key  # type: ignore[no-any-return]


def _is_integer(column: ColumnElement[Any]) -> bool:
    try:
        return column.type.python_type is int
    except NotImplementedError:
        return False


def ordered(conn: sa.Connection, value: ColumnElement[Any], kind: str, stored_as_text: bool) -> ColumnElement[Any]:
    """``value`` as the space compares it: integers as integers, text as binary text."""
    if kind == "int":
        return sa.cast(value, sa.BigInteger) if stored_as_text else value
    return dialect_for(conn).binary_order(sa.cast(value, sa.String(191)))


def _in_range(key: ColumnElement[Any], low: Any, high: Any, first: bool) -> ColumnElement[bool]:
    conditions: list[ColumnElement[bool]] = []
    if low is not None:
        conditions.append(key >= low)
    if high is not None:
        conditions.append(key < high)
    inside = sa.and_(sa.true(), *conditions) if conditions else sa.true()
    return sa.or_(key.is_(None), inside) if first else inside


@dataclass(frozen=True)
class ShardFilter:
    """The conditions of one shard, per dataset."""

    spec: ShardSpec
    bounds: Bounds

    def range_of(self, name: str) -> tuple[str, Any, Any]:
        space_name = self.bounds.datasets[name]
        space = self.bounds.spaces[space_name]
        low, high = space.bounds(self.spec.index)
        return space.kind, low, high

    def source(self, conn: sa.Connection, planner: PlannerBase) -> ColumnElement[bool]:
        kind, low, high = self.range_of(planner.name)
        key = ordered(conn, source_key(planner), kind, stored_as_text=False)
        return self._with_nulls(conn, planner.name, key, planner.key, False, _in_range(key, low, high, False))

    def state(self, conn: sa.Connection, planner: PlannerBase, rs: Any) -> ColumnElement[bool]:
        kind, low, high = self.range_of(planner.name)
        key = ordered(conn, state_key(planner, rs), kind, stored_as_text=True)
        return self._with_nulls(conn, planner.name, key, rs.c.record_key, True, _in_range(key, low, high, False))

    def _with_nulls(
        self,
        conn: sa.Connection,
        name: str,
        key: ColumnElement[Any],
        own: ColumnElement[Any],
        stored_as_text: bool,
        inside: ColumnElement[bool],
    ) -> ColumnElement[bool]:
        """``inside``, or a NULL shard key whose record key is in this shard's share of the NULL-keyed rows."""
        space = self.bounds.nulls.get(name)
        if space is None:  # no NULL-keyed rows when the group started (or an older group): shard 0 takes them
            return sa.or_(key.is_(None), inside) if self.spec.index == 0 else inside
        low, high = space.bounds(self.spec.index)
        mine = _in_range(ordered(conn, own, space.kind, stored_as_text), low, high, False)
        return sa.or_(sa.and_(key.is_(None), mine), inside)


# --------------------------------------------------------------------------
# Bounds: computed once per run group
# --------------------------------------------------------------------------


def compute_bounds(conn: sa.Connection, planners: dict[str, DatasetPlanner], shards: int) -> Bounds:
    """Cut every key space into ``shards`` ranges at the quantiles of its largest dataset."""
    members: dict[str, list[DatasetPlanner]] = {}
    datasets: dict[str, str] = {}
    for name, planner in planners.items():
        space = space_of(planner)
        datasets[name] = space
        members.setdefault(space, []).append(planner)
    spaces: dict[str, Space] = {}
    for space, group in members.items():
        kind = "int" if all(_is_integer(source_key(p)) for p in group) else "text"
        sizes = []
        for planner in group:
            key = source_key(planner)
            count = conn.execute(
                sa.select(sa.func.count()).select_from(planner.table).where(key.is_not(None))
            ).scalar_one()
            sizes.append((int(count), planner.name, planner))
        rows, _, largest = max(sizes, key=lambda s: (s[0], s[1]))
        cuts = _cuts(conn, largest, source_key(largest), kind, rows, shards, null=False)
        spaces[space] = Space(kind, cuts)
    nulls: dict[str, Space] = {}
    for name, planner in planners.items():
        if source_key(planner) is planner.key:
            continue  # a record key is never NULL
        null_rows = sa.select(planner.key).select_from(planner.table).where(source_key(planner).is_(None))
        nulls_found = conn.execute(sa.select(sa.func.count()).select_from(null_rows.subquery())).scalar_one()
        if nulls_found:
            kind = "int" if _is_integer(planner.key) else "text"
            nulls[name] = Space(kind, _cuts(conn, planner, planner.key, kind, int(nulls_found), shards, null=True))
    return Bounds(shards, spaces, datasets, nulls)


def _cuts(
    conn: sa.Connection, planner: DatasetPlanner, column: Any, kind: str, rows: int, shards: int, null: bool
) -> tuple[Any, ...]:
    """N - 1 cut points: ``column``'s values at row offsets k x rows / N, in key order, in one ordered pass.

    The rows are those whose shard key is set (``null``: those where it is
    NULL). One statement numbers them in key order (an index walk when the
    key is indexed) and keeps the N - 1 rows at the cut offsets; the
    former way, one ``OFFSET`` query per cut, walked the index from its
    start for each cut, N / 2 times the rows in all.
    """
    key = ordered(conn, column, kind, stored_as_text=False)
    wanted = sorted({rows * index // shards + 1 for index in range(1, shards)}) if rows else []
    found: dict[int, Any] = {}
    if wanted:
        where = source_key(planner).is_(None) if null else source_key(planner).is_not(None)
        numbered = (
            sa.select(key.label("k"), sa.func.row_number().over(order_by=key).label("rn"))
            .select_from(planner.table)
            .where(where)
            .subquery()
        )
        picked = sa.select(numbered.c.k, numbered.c.rn).where(numbered.c.rn.in_(wanted))
        found = {int(rn): k for k, rn in conn.execute(picked)}
    cuts: list[Any] = []
    for index in range(1, shards):
        value = found.get(rows * index // shards + 1)
        if value is None:  # an empty space (or one emptied meanwhile): the last shard takes what comes
            value = cuts[-1] if cuts else _least(kind)
        value = int(value) if kind == "int" else str(value)
        # Never below the previous cut (rows may change between the statements):
        # ranges that overlapped would let two shards move the same record.
        if cuts and _before(value, cuts[-1]):
            value = cuts[-1]
        cuts.append(value)
    return tuple(cuts)


def _least(kind: str) -> Any:
    """A cut below every key."""
    return -(2**62) if kind == "int" else ""


def _before(value: Any, other: Any) -> bool:
    """``value`` sorts before ``other`` as the space compares them (text: binary, as UTF-8)."""
    if isinstance(value, str):
        return value.encode() < str(other).encode()
    return bool(value < other)


__all__ = ["Bounds", "ShardFilter", "ShardSpec", "Space", "compute_bounds", "parse_shard", "space_of"]
