"""The one time zone people read dates in: the CLI's tables, the console and the HTML report.

The engine stores and logs instants in UTC; people read them in one display
zone, chosen in this order: ``--tz``, ``RETENTION_TZ``, ``TZ``, the pack's
timezone, UTC. Every surface formats through this module, so a date shown
without a time is the same calendar date in the terminal, the console and
the report (it used to be the UTC date on the web, a day off east or west).

A date shown alone is the date of the instant in the display zone, and it
is shown alone only when the instant is that date's local midnight (a due
date the engine computed as the start of a day in the pack's zone): any
other instant keeps its time of day, so nothing is silently rounded.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from retention.errors import ConfigError

UTC = "UTC"
# Where a zone comes from when --tz is not given, in order.
ZONE_VARIABLES = ("RETENTION_TZ", "TZ")


@lru_cache(maxsize=64)
def _zone(name: str) -> dt.tzinfo:
    return dt.UTC if name == UTC else ZoneInfo(name)


def checked(name: str, source: str) -> str:
    """``name`` if it is an IANA zone; a configuration error naming ``source`` otherwise.

    POSIX ``TZ`` values such as ``:Europe/Paris`` name a zone after the colon;
    a path (``:/etc/localtime``) names the zone file it links to.
    """
    text = name.strip()
    if text.startswith(":"):
        text = text[1:]
    if text.startswith("/"):
        target = os.path.realpath(text)
        text = target.split("/zoneinfo/", 1)[1] if "/zoneinfo/" in target else text
    if text in ("UTC", "Etc/UTC", "Z", "UTC0"):
        return UTC
    try:
        _zone(text)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigError(
            f"{source}: unknown time zone; use an IANA name such as Europe/Paris, America/New_York or UTC"
        ) from None
    return text


def chosen(explicit: str | None = None, environ: Mapping[str, str] | None = None) -> str | None:
    """The zone people asked for (``--tz``, else ``RETENTION_TZ``, else ``TZ``), or None.

    An unusable ``TZ`` (a path, a POSIX rule such as ``EST5EDT,M3.2.0``) is
    refused like the others: it would otherwise be silently ignored.
    """
    if explicit:
        return checked(explicit, "--tz")
    env = os.environ if environ is None else environ
    for variable in ZONE_VARIABLES:
        value = env.get(variable, "").strip()
        if value:
            return checked(value, variable)
    return None


def resolve(explicit: str | None, pack_zones: Iterable[str] = (), environ: Mapping[str, str] | None = None) -> str:
    """The display zone: asked for, else the pack's (when the packs agree on one), else UTC."""
    asked = chosen(explicit, environ)
    if asked is not None:
        return asked
    zones = set(pack_zones)
    return zones.pop() if len(zones) == 1 else UTC


def local(value: dt.datetime, zone: str) -> dt.datetime:
    """``value`` in ``zone`` (a naive value is UTC: some drivers hand stored instants back naive)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(_zone(zone))


def is_midnight(value: dt.datetime, zone: str) -> bool:
    moment = local(value, zone)
    return (moment.hour, moment.minute, moment.second, moment.microsecond) == (0, 0, 0, 0)


def day(value: Any, zone: str) -> str:
    """A calendar date: a ``date`` as it is, an instant as its date in ``zone``."""
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return local(value, zone).strftime("%Y-%m-%d")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def cell(value: Any, zone: str) -> str:
    """A table cell: an instant to the minute in ``zone``, its date alone at local midnight."""
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        if is_midnight(value, zone):
            return day(value, zone)
        return local(value, zone).strftime("%Y-%m-%d %H:%M")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def when(value: Any, zone: str) -> str:
    """An instant in a sentence: to the minute, with the zone's abbreviation (EST, JST, UTC)."""
    if value is None:
        return ""
    if not isinstance(value, dt.datetime):
        return day(value, zone)
    return local(value, zone).strftime("%Y-%m-%d %H:%M %Z")
