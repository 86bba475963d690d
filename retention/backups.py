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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
import yaml

from retention import store
from retention.clock import Period, local_date

REMOVED_FROM_LIVE = "->purged"


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


def annotate(
    conn: sa.Connection, rows: list[dict[str, Any]], shredded: Mapping[int, dt.datetime] | None = None
) -> None:
    """Add ``backups`` (a :class:`BackupHorizon` or None) to ledger rows (seq, pack_digest, transition, recorded_at).

    ``shredded`` maps an entry's seq to when the data key of its archive
    payloads was destroyed.
    """
    policies = Policies(conn)
    for row in rows:
        row["backups"] = horizon(
            policies.of(row.get("pack_digest")),
            row.get("transition"),
            row["recorded_at"],
            (shredded or {}).get(int(row["seq"])),
        )


def run_horizons(conn: sa.Connection, run_id: str, digest: str | None) -> dict[tuple[str | None, str], BackupHorizon]:
    """Per (dataset, transition) of a run's purges: the horizon of its latest entry (a run may pass midnight)."""
    policy = Policies(conn).of(digest)
    if policy is None or policy.kept_for is None:
        return {}
    table = store.ledger
    rows = conn.execute(
        sa.select(table.c.dataset, table.c.transition, sa.func.max(table.c.recorded_at).label("last"))
        .where(table.c.run_id == run_id, table.c.transition.like(f"%{REMOVED_FROM_LIVE}"))
        .group_by(table.c.dataset, table.c.transition)
    ).all()
    result: dict[tuple[str | None, str], BackupHorizon] = {}
    for row in rows:
        found = horizon(policy, row.transition, row.last)
        if found is not None:
            result[(row.dataset, row.transition)] = found
    return result
