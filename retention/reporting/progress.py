"""How far a run has got: a bar per dataset on a terminal, a log event off one.

Both are fed by the ``on_batch`` callback of :func:`retention.engine.execute.run`,
once per committed batch. They count transitions (a record that goes from
active to archived in one run counts twice), the unit ``plan`` and the run's
summary count in, so a plan's counts are the bars' totals.

Off a terminal, or with JSON logs, nothing but log lines may reach the
output: a ``run_progress`` event every ``every`` batches of a dataset carries
the same figures (transitions so far, rate, and with a total the expected
remaining seconds).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from retention.engine.plan import Batch

LOG_EVERY = 10
"""Batches of one dataset between two ``run_progress`` log events."""


def batch_counts(batch: Batch) -> dict[str, int]:
    """Transitions per dataset in one batch, its followers' included."""
    counts: dict[str, int] = {}
    for follower in batch.followers:
        for name, count in batch_counts(follower).items():
            counts[name] = counts.get(name, 0) + count
    own = sum(len(move.steps) for move in batch.moves) + batch.moved
    counts[batch.dataset] = counts.get(batch.dataset, 0) + own
    return counts


def totals_from_plan(transitions: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
    """Per-dataset totals from a plan summary's transition counts, datasets with nothing due left out."""
    return {name: sum(per.values()) for name, per in transitions.items() if sum(per.values())}


class _RateColumn(ProgressColumn):
    """Transitions per second since the dataset's work began."""

    def render(self, task: Task) -> Text:
        elapsed = task.finished_time if task.finished else task.elapsed
        speed = task.completed / elapsed if elapsed else None
        return Text("-/s" if speed is None else f"{speed:,.0f}/s", style="progress.data.speed")


class _TimeLeftColumn(ProgressColumn):
    """Time left at the dataset's average rate so far, shown from its first batch.

    rich's own column waits for a speed estimate over several samples, which
    on a run of large batches left "-:--:--" for minutes.
    """

    def render(self, task: Task) -> Text:
        if task.finished:
            return Text("0:00:00", style="progress.remaining")
        elapsed = task.elapsed
        if task.total is None or not task.completed or not elapsed:
            return Text("-:--:--", style="progress.remaining")
        seconds = int(max(task.total - task.completed, 0) * elapsed / task.completed)
        hours, rest = divmod(seconds, 3600)
        return Text(f"{hours}:{rest // 60:02d}:{rest % 60:02d}", style="progress.remaining")


@contextmanager
def planning_status(console: Console, what: str) -> Iterator[None]:
    """A spinner with the time spent so far, while a long plan runs (it may take minutes)."""
    with Progress(
        SpinnerColumn(),
        TextColumn(what),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        progress.add_task(what, total=None)
        yield


class BarProgress:
    """One rich progress bar per dataset, on the error console (stdout stays for results)."""

    def __init__(self, console: Console, totals: Mapping[str, int]) -> None:
        self._progress = Progress(
            TextColumn("{task.description}", style="bold"),
            BarColumn(bar_width=None),
            MofNCompleteColumn(),
            TextColumn("transitions"),
            _RateColumn(),
            _TimeLeftColumn(),
            TimeElapsedColumn(),
            console=console,
            expand=True,
        )
        self._tasks: dict[str, TaskID] = {}
        self._width = max((len(name) for name in totals), default=8)
        self._last_batch_at: float | None = None
        for name, total in totals.items():
            self._task(name, total)

    def _task(self, name: str, total: int | None) -> TaskID:
        if name not in self._tasks:
            self._tasks[name] = self._progress.add_task(name.ljust(self._width), total=total, start=False)
        return self._tasks[name]

    def __enter__(self) -> BarProgress:
        self._progress.start()
        self._last_batch_at = self._progress.get_time()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

    @property
    def console(self) -> Console:
        return self._progress.console

    def on_batch(self, batch: Batch) -> None:
        now = self._progress.get_time()
        for name, count in batch_counts(batch).items():
            task_id = self._task(name, None)
            task = self._progress.tasks[task_id]
            if task.start_time is None:
                self._progress.start_task(task_id)
                # The dataset's work began when the previous batch ended, not when its first one did.
                task.start_time = self._last_batch_at if self._last_batch_at is not None else now
            self._progress.advance(task_id, count)
        self._last_batch_at = now

    def finish(self, counts: Mapping[str, Mapping[str, int]]) -> None:
        """Show what the run actually did (partition drops come in no batch)."""
        for name, per in counts.items():
            done = sum(per.values())
            if name in self._tasks or done:
                task = self._task(name, done)
                total = self._progress.tasks[task].total
                self._progress.update(task, completed=done, total=max(done, int(total or 0)))
        for task_id in self._tasks.values():
            self._progress.stop_task(task_id)
        self._progress.refresh()


class LogProgress:
    """A ``run_progress`` log event every ``every`` batches of a dataset."""

    def __init__(
        self,
        log: Any,
        totals: Mapping[str, int] | None = None,
        every: int = LOG_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._totals = dict(totals or {})
        self._every = every
        self._clock = clock
        self._last_event = clock()
        self._started: dict[str, float] = {}
        self._done: dict[str, int] = {}
        self._batches: dict[str, int] = {}

    def on_batch(self, batch: Batch) -> None:
        now = self._clock()
        # A dataset's work began when the previous batch (of whatever dataset) ended.
        self._started.setdefault(batch.dataset, self._last_event)
        for name, count in batch_counts(batch).items():
            self._done[name] = self._done.get(name, 0) + count
        self._batches[batch.dataset] = self._batches.get(batch.dataset, 0) + 1
        self._last_event = now
        if self._batches[batch.dataset] % self._every == 0:
            self._emit(batch.dataset, now)

    def _emit(self, name: str, now: float) -> None:
        done = self._done.get(name, 0)
        seconds = max(now - self._started[name], 1e-9)
        rate = done / seconds
        fields: dict[str, Any] = {
            "dataset": name,
            "count": done,
            "batches": self._batches[name],
            "seconds": round(seconds, 3),
            "rate": round(rate, 1),
        }
        total = self._totals.get(name)
        if total is not None:
            fields["total"] = total
            fields["eta_seconds"] = round(max(total - done, 0) / rate, 1) if rate > 0 else None
        self._log.info("run_progress", **fields)
