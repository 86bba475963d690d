"""How two xdist workers share the fast tier: `--dist load` against `--dist worksteal`, file order against long first.

The whole fast tier may be timed once on a loaded machine, and its wall time
there says little about scheduling; its per-test durations say more. This
replays xdist 3.8's two schedulers (xdist/scheduler/load.py and worksteal.py,
their hand-out and steal rules) over measured per-test durations (setup, call
and teardown of each test, from `pytest --durations=0`) in two orders: the
files' (`pytest --collect-only -q` without the long-first sort) and the
suite's (tests/conftest.py, LONG_FIRST). It prints the simulated wall time
(the later worker's finish), the idle time of the earlier worker, and the
ratio against xdist's default (load, file order).

What it leaves out: a test's duration as if it did not depend on which
worker runs it and what runs beside it (a session template is built by the
first test of each worker that needs it; two heavy tests side by side slow
each other), and xdist's own messaging. So it compares schedules; the wall
time of a real run is the lead's quiet measurement.

    pytest -q --durations=0 > durations.txt
    pytest --collect-only -q -n 0 | grep :: > order-new.txt   # and the same on main: order-base.txt
    python bench/xdist_schedule.py durations.txt order-base.txt order-new.txt
    python bench/xdist_schedule.py --flat 0.6 known.txt order-base.txt order-new.txt   # a model: see main
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from pathlib import Path

LINE = re.compile(r"^\s*([0-9.]+)s (setup|call|teardown)\s+(\S.*)$")
WORKERS = 2
MIN_PENDING = 2  # xdist.scheduler.worksteal.MIN_PENDING


def durations(path: Path) -> dict[str, float]:
    """Seconds per test id: its setup, call and teardown summed (pytest hides those under 5 ms: counted 0)."""
    out: dict[str, float] = defaultdict(float)
    for line in path.read_text(encoding="utf-8").splitlines():
        found = LINE.match(line)
        if found:
            out[found.group(3).strip()] += float(found.group(1))
    return out


def _next_done(queues: list[list[int]], clock: list[float], times: list[float]) -> int:
    """The worker whose running test (the head of its queue) ends first."""
    return min((i for i in range(WORKERS) if queues[i]), key=lambda i: clock[i] + times[queues[i][0]])


def simulate_load(times: list[float]) -> list[float]:
    """xdist's LoadScheduling: a first chunk each, then refills up to half a worker's share of the rest; no stealing.

    A worker's queue holds its running test first; ``clock[w]`` is when its last test ended.
    """
    pending = list(range(len(times)))
    chunk = max(len(times) // WORKERS // 4, 2)
    queues: list[list[int]] = []
    for _ in range(WORKERS):
        queues.append(pending[:chunk])
        del pending[:chunk]
    clock = [0.0] * WORKERS
    while any(queues):
        w = _next_done(queues, clock, times)
        done = queues[w].pop(0)
        clock[w] += times[done]
        if pending:
            low = max(2, len(pending) // WORKERS // 4)
            high = max(2, len(pending) // WORKERS // 2)
            if len(queues[w]) < low and not (times[done] >= 0.1 and len(queues[w]) >= 2):
                send = high - len(queues[w])
                queues[w].extend(pending[:send])
                del pending[:send]
    return clock


def simulate_worksteal(times: list[float]) -> list[float]:
    """xdist's WorkStealingScheduling: the queue split in contiguous even parts; a worker down to its running test
    takes the second half of the longest queue (keeping two there)."""
    n = len(times)
    queues = [list(range(i * n // WORKERS, (i + 1) * n // WORKERS)) for i in range(WORKERS)]
    clock = [0.0] * WORKERS
    while any(queues):
        w = _next_done(queues, clock, times)
        done = queues[w].pop(0)
        clock[w] += times[done]
        for i in range(WORKERS):
            if len(queues[i]) >= MIN_PENDING:
                continue
            victim = max(range(WORKERS), key=lambda j: len(queues[j]))
            steal = min(len(queues[victim]) // 2, max(0, len(queues[victim]) - MIN_PENDING))
            if steal and victim != i:
                if not queues[i]:
                    clock[i] = max(clock[i], clock[w])  # idle until now
                queues[i].extend(queues[victim][-steal:])
                del queues[victim][-steal:]
    return clock


def main(durations_file: str, *orders: str, flat: float | None = None) -> None:
    """``flat``: a test of the orders without a measured duration counts ``flat`` seconds (else it is left out)."""
    measured = durations(Path(durations_file))
    print(f"{len(measured)} tests measured, {sum(measured.values()):.0f} s of worker time in all", end="")
    print(f"; each other test {flat} s\n" if flat is not None else "; the other tests left out\n")
    print(f"| order | --dist | wall (s) | idle at the end (s) | ratio to load, {Path(orders[0]).stem} |")
    print("|---|---|---:|---:|---:|")
    baseline = None
    for order_file in orders:
        ids = [i.strip() for i in Path(order_file).read_text(encoding="utf-8").splitlines() if i.strip()]
        if flat is None:
            ids = [i for i in ids if i in measured]
        times = [measured.get(i, flat or 0.0) for i in ids]
        for name, simulate in (("load", simulate_load), ("worksteal", simulate_worksteal)):
            clock = simulate(times)
            wall = max(clock)
            baseline = baseline or wall
            idle = wall - min(clock)
            print(f"| {Path(order_file).stem} | {name} | {wall:.0f} | {idle:.0f} | {wall / baseline:.2f} |")


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[0] == "--flat":
        main(*args[2:], flat=float(args[1]))
    else:
        main(*args)
