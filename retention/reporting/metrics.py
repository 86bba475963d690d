"""Prometheus metrics as a textfile for node_exporter's textfile collector.

A batch job has no port to scrape; node_exporter picks up ``*.prom`` files
from a folder instead. The file is written atomically (temporary file, then
rename) so the collector never reads half a file.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from retention.engine.execute import RunResult
from retention.logs import get_logger


def not_written(path: Path, exc: OSError) -> str:
    """One line for a metrics file that failed after the work committed; also logged, for the journal.

    The CLI checks the file can be written before a run starts, so this is a
    disk filled or a folder removed during the night. The run's work and
    ledger are committed by then and stand: only the side file is missing,
    which ``RetentionRunMissing`` alerts on from node_exporter's side.
    """
    reason = exc.strerror or type(exc).__name__
    get_logger().error("metrics_not_written", path=str(path), error=reason)
    return f"the metrics file {path} could not be written ({reason}); the run's work stands"


def _last_success(path: Path) -> float | None:
    """Keep the last success timestamp across failed runs (the file is the only memory)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    match = re.search(r"^retention_last_success_timestamp_seconds (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def write_run_metrics(
    path: Path,
    result: RunResult,
    *,
    pack: str,
    started: dt.datetime,
    finished: dt.datetime,
    anomalies: dict[str, dict[str, int]] | None = None,
) -> None:
    """Write the run's figures to ``path`` (a .prom file in the collector's folder)."""
    registry = CollectorRegistry()
    moved = Gauge(
        "retention_records_transitioned",
        "Records moved by the last run, per dataset and transition.",
        ["pack", "dataset", "transition"],
        registry=registry,
    )
    for dataset, per in result.counts.items():
        for transition, count in per.items():
            moved.labels(pack, dataset, transition).set(count)
    skipped = Gauge(
        "retention_clock_anomalies",
        "Active records skipped for a NULL, zero, invalid or future clock, at the last run.",
        ["pack", "dataset", "kind"],
        registry=registry,
    )
    for dataset, per in (anomalies or {}).items():
        for kind, count in per.items():
            skipped.labels(pack, dataset, kind).set(count)
    guards = Gauge(
        "retention_guard_trips",
        "Datasets refused by a mass-deletion guard at the last run.",
        ["pack", "dataset"],
        registry=registry,
    )
    for dataset in result.guarded:
        guards.labels(pack, dataset).set(1)
    failures = Gauge(
        "retention_dataset_failures",
        "Datasets that failed at the last run.",
        ["pack", "dataset"],
        registry=registry,
    )
    for dataset in result.failures:
        failures.labels(pack, dataset).set(1)
    Gauge("retention_run_duration_seconds", "Wall time of the last run.", ["pack"], registry=registry).labels(pack).set(
        (finished - started).total_seconds()
    )
    status = Gauge(
        "retention_last_run_status",
        "1 for the status of the last run.",
        ["pack", "status"],
        registry=registry,
    )
    status.labels(pack, result.status).set(1)
    last_success = finished.timestamp() if result.status == "succeeded" else _last_success(path)
    if last_success is not None:
        Gauge(
            "retention_last_success_timestamp_seconds",
            "When a run last succeeded (unix time).",
            registry=registry,
        ).set(last_success)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)
