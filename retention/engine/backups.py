"""The backup horizon: when a record purged from the live database is gone from its backups too.

A purge removes a row from the live tables; every backup taken before it
still holds the row until that backup expires. A pack may declare how long
backups are kept (``backups: {kept_for: P35D}``); the horizon of a purge
recorded on local day D is then D + kept_for.

Invariants:

- The horizon is read from the pack version that made the ledger entry (its
  digest names the version kept in ``retention_policy_versions``), not from
  whatever pack is loaded today: a later change of backup policy does not
  rewrite what was promised for earlier purges.
- Only transitions into ``purged`` remove a record from the live database
  (an archived record's payload is still there until its purge).
- "Unreadable in backups" is stated only where the ledger records the
  destruction of the data key its archive payload was encrypted under
  (see :mod:`retention.shred`).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
import yaml

from retention.engine import shred
from retention.store import tables as store
from retention.timing.clock import Period, local_date

REMOVED_FROM_LIVE = "->purged"
ARCHIVE_PURGED = "archived->purged"


@dataclass(frozen=True)
class BackupPolicy:
    """What one pack version says about backups, and the timezone its days are counted in."""

    kept_for: Period | None
    timezone: str


@dataclass(frozen=True)
class BackupHorizon:
    """One purge's dates: out of the live database, out of every backup, unreadable in backups."""

    removed_on: dt.date
    kept_for: Period
    unreadable_from: dt.date | None = None

    @property
    def gone_by(self) -> dt.date:
        return self.kept_for.add_to(self.removed_on)

    def sentence(self) -> str:
        text = (
            f"removed from the live database on {self.removed_on}; "
            f"gone from backups by {self.gone_by} ({self.removed_on} + {self.kept_for})"
        )
        if self.unreadable_from is not None:
            text += f"; archive payload unreadable in backups from {self.unreadable_from} (data key destroyed)"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "removed_on": self.removed_on.isoformat(),
            "kept_for": str(self.kept_for),
            "gone_from_backups_by": self.gone_by.isoformat(),
            "unreadable_in_backups_from": None if self.unreadable_from is None else self.unreadable_from.isoformat(),
        }


def policy_from_text(text: str) -> BackupPolicy:
    """The backup policy of a stored pack text (already validated when it was stored)."""
    data = yaml.safe_load(text) or {}
    backups = data.get("backups") if isinstance(data, dict) else None
    kept = backups.get("kept_for") if isinstance(backups, dict) else None
    timezone = data.get("timezone", "UTC") if isinstance(data, dict) else "UTC"
    return BackupPolicy(Period.parse(kept) if isinstance(kept, str) else None, str(timezone))


class Policies:
    """Backup policies per pack digest, read once each from ``retention_policy_versions``."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn
        self._known: dict[str, BackupPolicy | None] = {}

    def of(self, digest: str | None) -> BackupPolicy | None:
        if digest is None:
            return None
        if digest not in self._known:
            pv = store.policy_versions
            text = self.conn.execute(sa.select(pv.c.content).where(pv.c.digest == digest)).scalar()
            self._known[digest] = None if text is None else policy_from_text(str(text))
        return self._known[digest]


def _aware(instant: dt.datetime) -> dt.datetime:
    return instant if instant.tzinfo is not None else instant.replace(tzinfo=dt.UTC)


def horizon(
    policy: BackupPolicy | None,
    transition: str | None,
    recorded_at: dt.datetime,
    shredded_at: dt.datetime | None = None,
) -> BackupHorizon | None:
    """The horizon of one ledger entry; None when it removed nothing or its pack declares no backups."""
    if policy is None or policy.kept_for is None or not (transition or "").endswith(REMOVED_FROM_LIVE):
        return None
    removed = local_date(_aware(recorded_at), policy.timezone)
    unreadable = None if shredded_at is None else local_date(_aware(shredded_at), policy.timezone)
    return BackupHorizon(removed, policy.kept_for, unreadable)


def _destroyed(conn: sa.Connection, run_ids: set[str]) -> dict[tuple[str, str], tuple[dt.datetime, set[dt.date]]]:
    """Per (run, dataset): when the run destroyed data keys of the dataset, and the purge days of those keys."""
    if not run_ids:
        return {}
    table = store.ledger
    result: dict[tuple[str, str], tuple[dt.datetime, set[dt.date]]] = {}
    for row in conn.execute(
        sa.select(table.c.run_id, table.c.dataset, table.c.recorded_at, table.c.detail).where(
            table.c.transition == shred.DESTROYED, table.c.run_id.in_(sorted(run_ids))
        )
    ):
        days = {dt.date.fromisoformat(d) for d in json.loads(row.detail or "{}").get("purge_days", [])}
        known = result.get((row.run_id, row.dataset))
        result[(row.run_id, row.dataset)] = (row.recorded_at, days | (known[1] if known else set()))
    return result


def _shredded_at(
    destroyed: dict[tuple[str, str], tuple[dt.datetime, set[dt.date]]],
    run_id: str | None,
    dataset: str | None,
    due_days: set[dt.date],
) -> dt.datetime | None:
    """When the keys of every one of ``due_days`` (purge buckets) were destroyed by the run; None if one was not."""
    found = destroyed.get((run_id or "", dataset or ""))
    if found is None or not due_days or not due_days <= found[1]:
        return None
    return found[0]


def annotate(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    """Add ``backups`` (a :class:`BackupHorizon` or None) to ledger rows (seq, pack_digest, transition, recorded_at)."""
    policies = Policies(conn)
    destroyed = _destroyed(
        conn, {r["run_id"] for r in rows if r.get("transition") == ARCHIVE_PURGED and r.get("run_id")}
    )
    for row in rows:
        shredded = None
        if row.get("transition") == ARCHIVE_PURGED and row.get("due_at") is not None:
            shredded = _shredded_at(destroyed, row.get("run_id"), row.get("dataset"), {shred.bucket_of(row["due_at"])})
        row["backups"] = horizon(
            policies.of(row.get("pack_digest")), row.get("transition"), row["recorded_at"], shredded
        )


def run_horizons(conn: sa.Connection, run_id: str, digest: str | None) -> dict[tuple[str | None, str], BackupHorizon]:
    """Per (dataset, transition) of a run's purges: the horizon of its latest entry (a run may pass midnight).

    An archive purge's payloads are unreadable in backups when the run
    destroyed the data keys of every purge day among its records.
    """
    policy = Policies(conn).of(digest)
    if policy is None or policy.kept_for is None:
        return {}
    table, items = store.ledger, store.ledger_items
    rows = conn.execute(
        sa.select(table.c.dataset, table.c.transition, sa.func.max(table.c.recorded_at).label("last"))
        .where(table.c.run_id == run_id, table.c.transition.like(f"%{REMOVED_FROM_LIVE}"))
        .group_by(table.c.dataset, table.c.transition)
    ).all()
    destroyed = _destroyed(conn, {run_id})
    result: dict[tuple[str | None, str], BackupHorizon] = {}
    for row in rows:
        shredded = None
        if row.transition == ARCHIVE_PURGED and (run_id, row.dataset) in destroyed:
            where = [table.c.run_id == run_id, table.c.dataset == row.dataset, table.c.transition == ARCHIVE_PURGED]
            dues = conn.execute(
                sa.select(items.c.due_at).join(table, table.c.seq == items.c.entry_seq).where(*where)
            ).scalars()
            days = {shred.bucket_of(d) for d in dues}
            if not days:  # v1 entries: one per record, the due instant on the entry
                days = {
                    shred.bucket_of(d) for d in conn.execute(sa.select(table.c.due_at).where(*where)).scalars() if d
                }
            shredded = _shredded_at(destroyed, run_id, row.dataset, days)
        found = horizon(policy, row.transition, row.last, shredded)
        if found is not None:
            result[(row.dataset, row.transition)] = found
    return result
