"""Policy notice periods: when each pack version was first seen, and whether it gave notice.

A shop that promises to announce policy changes ``notice`` ahead (``notice:
P8D`` on the pack) must not let a version take effect sooner: ``check``,
``plan`` and ``run`` record the first time they see each version's digest,
``check`` warns about a version whose ``effective_from`` comes less than
``notice`` after that sighting (or before it: back-dated), and ``run``
refuses to apply such a version before its notice has run out, unless the
operator accepts it (recorded in the ledger). The first version of a pack
announces nothing it changes, so it needs no notice.

A version may say when it was ``announced``: its notice then counts from the
later of that date and the first sighting. A file deployed before the
announcement gives notice only from the announcement; an announcement dated
before the engine ever saw the version cannot be verified, so it never moves
the count earlier than the first sighting.

While a version is refused, only the datasets whose rules it changes wait
(:func:`waiting_datasets`); the others run under the version in force
before it, whose rules for them are the same.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa
import structlog

from retention.engine.execute import engine_tables_missing
from retention.errors import ConcurrentChangeError, ConfigError
from retention.policy import LoadedPack
from retention.store import tables as store
from retention.timing.clock import local_date, utcnow

Status = Literal["ok", "short", "back-dated", "first version", "no notice", "not seen"]

log = structlog.get_logger("retention")


@dataclass(frozen=True)
class VersionNotice:
    """One pack version's sighting and notice status."""

    loaded: LoadedPack
    first_seen_at: dt.datetime | None
    status: Status
    not_before: dt.date | None = None  # the first day the version may take effect (first seen + notice)

    @property
    def short(self) -> bool:
        return self.status in ("short", "back-dated")

    def refuses(self, as_of: dt.datetime) -> bool:
        """Whether ``run`` at ``as_of`` must refuse the version (its notice has not run out)."""
        if not self.short or self.not_before is None:
            return False
        return local_date(as_of, self.loaded.pack.timezone) < self.not_before

    def sentence(self) -> str:
        """One line with the dates (never any data)."""
        pack = self.loaded.pack
        head = f"pack {pack.pack} version {pack.version} (digest {self.loaded.digest[:12]})"
        seen = self.first_seen_day
        if self.status == "back-dated":
            return (
                f"{head} takes effect on {pack.effective_from}, before it was first seen on {seen}; "
                f"its notice is {pack.notice}, so not before {self.not_before}"
            )
        assert seen is not None
        start = self.counted_from
        assert start is not None
        if start > seen:
            days = (pack.effective_from - start).days
            return (
                f"{head} takes effect on {pack.effective_from}, {days} days after it was announced on {start} "
                f"(first seen on {seen}); its notice is {pack.notice}, so not before {self.not_before}"
            )
        days = (pack.effective_from - seen).days
        return (
            f"{head} takes effect on {pack.effective_from}, {days} days after it was first seen on {seen}; "
            f"its notice is {pack.notice}, so not before {self.not_before}"
        )

    @property
    def counted_from(self) -> dt.date | None:
        """The day notice counts from: the later of the first sighting and ``announced``."""
        seen = self.first_seen_day
        announced = self.loaded.pack.announced
        if seen is None or announced is None:
            return seen
        return max(seen, announced)

    @property
    def first_seen_day(self) -> dt.date | None:
        if self.first_seen_at is None:
            return None
        return local_date(self.first_seen_at, self.loaded.pack.timezone)


def record(
    conn: sa.Connection,
    packs: Iterable[LoadedPack],
    now: dt.datetime,
    seen_by: str,
    *,
    known: Iterable[str] | None = None,
) -> bool:
    """Record the first sighting of each version not seen before, in the caller's transaction (True: any).

    ``known``: the digests the caller already read as seen in this same
    transaction (one SELECT fewer); a read from an earlier transaction would
    miss a sighting another process committed since.
    """
    table = store.pack_sightings
    wanted = {p.digest: p for p in packs}
    if not wanted:
        return False
    if known is None:
        known = conn.execute(sa.select(table.c.digest).where(table.c.digest.in_(sorted(wanted)))).scalars()
    known = set(known)
    rows = [
        {
            "digest": digest,
            "pack_id": p.id,
            "version": p.pack.version,
            "effective_from": p.pack.effective_from,
            "first_seen_at": now,
            "seen_by": seen_by,
        }
        for digest, p in sorted(wanted.items())
        if digest not in known
    ]
    if rows:
        conn.execute(table.insert(), rows)
    return bool(rows)


def sightings(conn: sa.Connection, digests: Iterable[str]) -> dict[str, dt.datetime]:
    """First sighting of each of ``digests`` that has one."""
    table = store.pack_sightings
    wanted = sorted(set(digests))
    if not wanted:
        return {}
    query = sa.select(table.c.digest, table.c.first_seen_at).where(table.c.digest.in_(wanted))
    return {row.digest: row.first_seen_at for row in conn.execute(query)}


def _raced(conn: sa.Connection, digests: Iterable[str], seen: dict[str, dt.datetime]) -> bool:
    """Whether another process recorded a sighting of one of ``digests`` since ``seen`` was read.

    A failed insert of first sightings is a lost race only then; any other
    integrity error (a constraint or trigger the operator added) would fail
    every retry the same way.
    """
    try:
        return bool(set(sightings(conn, digests)) - set(seen))
    finally:
        conn.rollback()


def status(loaded: LoadedPack, versions: Sequence[LoadedPack], seen: dict[str, dt.datetime]) -> VersionNotice:
    """The notice status of ``loaded`` among the catalog's ``versions`` (all packs)."""
    pack = loaded.pack
    first_seen = seen.get(loaded.digest)
    earlier = [v for v in versions if v.id == loaded.id and v.pack.effective_from < pack.effective_from]
    if not earlier:
        return VersionNotice(loaded, first_seen, "first version")
    if pack.notice is None:
        return VersionNotice(loaded, first_seen, "no notice")
    if first_seen is None:
        return VersionNotice(loaded, None, "not seen")
    seen_day = local_date(first_seen, pack.timezone)
    start = seen_day if pack.announced is None else max(seen_day, pack.announced)
    not_before = pack.notice.add_to(start)
    if pack.effective_from < seen_day:
        return VersionNotice(loaded, first_seen, "back-dated", not_before)
    if pack.effective_from < not_before:
        return VersionNotice(loaded, first_seen, "short", not_before)
    return VersionNotice(loaded, first_seen, "ok", not_before)


def statuses(
    conn: sa.Connection | None, versions: Sequence[LoadedPack], *, seen: dict[str, dt.datetime] | None = None
) -> list[VersionNotice]:
    """Every version's status, oldest first per pack (without a connection: none seen, or those of ``seen``)."""
    if seen is None:
        seen = sightings(conn, (v.digest for v in versions)) if conn is not None else {}
    ordered = sorted(versions, key=lambda v: (v.id, v.pack.effective_from, v.digest))
    return [status(v, versions, seen) for v in ordered]


UNREADABLE_NOTE = (
    "retention_pack_sightings cannot be read by this database role: every pack version's notice is counted "
    "as if it were first seen now, as a first run would"
)
"""The note of a run-less caller (``plan``) whose role may not read the sightings (never any data)."""


_DENIED = {"42501", 1142, 1143}  # PostgreSQL's insufficient_privilege; MariaDB's table and column access denied


def _denied(exc: sa.exc.DBAPIError) -> bool:
    """Whether the database refused the statement for want of a privilege."""
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    args: tuple[object, ...] = getattr(orig, "args", ())
    return sqlstate in _DENIED or (len(args) > 0 and args[0] in _DENIED)


def _refused(privilege: str) -> ConfigError:
    return ConfigError(
        f"this database role lacks the {privilege} privilege on retention_pack_sightings, where each pack "
        "version's first sighting is recorded and its notice counted from; grant it, or use another role"
    )


def sight_versions(
    engine: sa.Engine,
    packs: Sequence[LoadedPack],
    seen_by: str,
    *,
    must_record: bool = False,
    notes: list[str] | None = None,
) -> list[VersionNotice] | None:
    """Record the first sighting of each version and return every version's notice status.

    None where the engine's tables are missing or cannot be read. The
    sightings are read and the new ones written in one transaction, so a
    sighting another process commits meanwhile is either read or makes the
    insert fail on its key (then both are done again): a status is never
    built from a read older than the write.

    ``must_record`` (``run``): a role that may not read the sightings, or
    not write a version's first one, is refused (ConfigError, naming the
    privilege), and so is any other failure to write, but another process's
    sighting of the same digest; a version still without a sighting after
    that is refused too. The notice check is never skipped silently.
    ``notes`` (``plan``): a role that may not read them plans as a first run
    would, every version taken as first seen now, and a note says so there;
    one that may read but not write them counts each version not seen yet
    from now, as the run that records it will.
    Otherwise (``check``) a role that may not read them is refused; one that
    may not write them records nothing, and a version not seen yet is
    reported as not seen.
    """
    digests = sorted({v.digest for v in packs})
    with engine.connect() as conn:
        if engine_tables_missing(conn) is not None:
            return None
        conn.rollback()
        now = utcnow()
        recorded: bool | None = None  # None: could not record
        for _attempt in range(_ATTEMPTS):
            conn.begin()
            try:
                seen = sightings(conn, digests)
            except sa.exc.DBAPIError as exc:
                if exc.connection_invalidated or not _denied(exc):
                    raise
                conn.rollback()  # PostgreSQL needs a fresh transaction after an error
                if notes is None:
                    raise _refused("SELECT") from None
                notes.append(UNREADABLE_NOTE)
                return statuses(None, packs, seen={v.digest: now for v in packs})
            try:
                recorded = record(conn, packs, now, seen_by, known=seen)
                conn.commit()
                break
            except sa.exc.DBAPIError as exc:
                if exc.connection_invalidated:
                    raise
                conn.rollback()
                recorded = None
                if isinstance(exc, sa.exc.IntegrityError) and _raced(conn, digests, seen):
                    continue  # another process recorded one of them first: read and record again
                # Any other failure, an operator's CHECK or trigger included: no retry would record it, and
                # blaming other processes would send the operator the wrong way.
                if must_record:
                    if _denied(exc):
                        raise _refused("INSERT") from None
                    raise
                if isinstance(exc, sa.exc.IntegrityError):
                    log.warning("sighting_not_recorded", error=type(exc.orig).__name__)
                break  # a read-only plan's or check's: they go on without
        if recorded is None or recorded:
            seen = sightings(conn, digests)  # as stored (the database's precision), and others' since
            conn.rollback()
        if recorded is None and notes is not None:
            seen = {**{d: now for d in digests}, **seen}  # not seen yet: counted from now, as the run will
        result = statuses(None, packs, seen=seen)
        if must_record:
            unseen = [v for v in result if v.first_seen_at is None]
            if unseen:
                pack = unseen[0].loaded.pack
                raise ConcurrentChangeError(
                    f"the first sighting of pack {pack.pack} version {pack.version} could not be recorded, "
                    "as other processes kept recording sightings meanwhile; its notice cannot be checked: run again"
                )
        return result


_ATTEMPTS = 3
"""Reads and writes of the sightings, each after another process's sighting of the same digest won."""


_NOT_RULES = ("version", "title", "effective_from", "notice", "announced", "datasets")
"""Pack keys that describe the version itself: changing them changes no dataset's rules."""


def previous_version(loaded: LoadedPack, versions: Sequence[LoadedPack]) -> LoadedPack | None:
    """The version of the same pack in force just before ``loaded`` takes effect."""
    earlier = [v for v in versions if v.id == loaded.id and v.pack.effective_from < loaded.pack.effective_from]
    return max(earlier, key=lambda v: v.pack.effective_from) if earlier else None


def waiting_datasets(loaded: LoadedPack, previous: LoadedPack) -> set[str] | None:
    """The datasets that must wait while ``loaded`` is refused; None: all of them.

    A dataset waits when ``loaded`` changes its rules, adds or removes it. A
    change to a pack-wide key (timezone, financial year, erasure deadlines,
    guard, ...) changes every dataset's rules: None. Datasets joined by
    ``follows`` wait together, since a follower's records move in its
    leader's transactions: running one under the old rules while the other
    waits would split what moves together.
    """
    new = loaded.pack.model_dump(mode="json", by_alias=True)
    old = previous.pack.model_dump(mode="json", by_alias=True)
    if {k: v for k, v in new.items() if k not in _NOT_RULES} != {k: v for k, v in old.items() if k not in _NOT_RULES}:
        return None
    waiting = {name for name, rules in old["datasets"].items() if new["datasets"].get(name) != rules}
    datasets = previous.pack.datasets
    grown = True
    while grown:
        grown = False
        for name, ds in datasets.items():
            leader = ds.follows.dataset if ds.follows is not None else None
            if leader is None or (name in waiting) == (leader in waiting):
                continue
            waiting |= {name, leader}
            grown = True
    if waiting >= set(datasets):
        return None
    return waiting | (set(new["datasets"]) - set(old["datasets"]))  # a dataset it adds waits too
