"""structlog configuration, done once at the CLI entry point.

Logs go to stderr: JSON lines when stderr is not a terminal (cron, systemd,
Kubernetes), a readable console format otherwise. A processor keeps only
fields from an allowlist, so a careless ``log.info(..., email=row.email)``
can never put personal data in a log: unknown fields are dropped and their
names counted, never their values.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

SAFE_FIELDS = frozenset(
    {
        "event",
        "level",
        "timestamp",
        "logger",
        "run_id",
        "pack",
        "pack_digest",
        "version",
        "dataset",
        "transition",
        "action",
        "state",
        "count",
        "counts",
        "batch",
        "batches",
        "seconds",
        "status",
        "exit_code",
        "as_of",
        "mode",
        "error",
        "error_type",
        "database",
        "revision",
        "anomalies",
        "share",
        "limit",
        "hold_id",
        "request_id",
        "override",
        "partition",
        "rows",
        "entries",
        "seq",
        "first_bad_seq",
        "job",
        "next_run",
        "review_id",
        "path",
        "dropped_fields",
        "total",
        "rate",
        "eta_seconds",
        "target",  # a fleet target's name (fleet files name databases, not people)
        "targets",
        "failed",
        "queue",
        "run_group",
        "display_tz",  # the zone people read dates in (timestamps stay UTC)
    }
)


def drop_unsafe_fields(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Keep only allowlisted fields; name (never show) what was dropped."""
    dropped = sorted(k for k in event_dict if k not in SAFE_FIELDS)
    for key in dropped:
        del event_dict[key]
    if dropped:
        event_dict["dropped_fields"] = dropped
    return event_dict


def uses_json(json: bool | None = None, stream: TextIO | None = None) -> bool:
    """Whether logs are JSON lines: as asked, else when the stream is not a terminal."""
    return (not (stream or sys.stderr).isatty()) if json is None else json


def drop_events(names: frozenset[str]) -> Any:
    """A processor that drops the events named, e.g. per-batch events while a progress bar shows them."""

    def processor(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if event_dict.get("event") in names:
            raise structlog.DropEvent
        return event_dict

    return processor


def configure(
    *,
    json: bool | None = None,
    level: str = "info",
    stream: TextIO | None = None,
    quiet: frozenset[str] = frozenset(),
) -> None:
    """Configure structlog for this process; JSON unless writing to a terminal.

    ``quiet`` names events not to print (the progress bar already shows them).
    """
    out = stream or sys.stderr
    use_json = uses_json(json, out)
    renderer: Any = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[
            drop_events(quiet),
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            drop_unsafe_fields,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


def get_logger() -> Any:
    return structlog.get_logger("retention")
