"""Benchmark: how soon a second ``retention run`` started beside a running one exits 5.

    python bench/lock_refusal.py --db sqlite --customers 30000 --repeat 3

Builds the demo shop (``builtin:marketplace``, not timed), then per repeat:
starts ``retention run`` as a subprocess, starts a second one a second later
(``--gap``), and times the second from its start to its exit: wall clock and
its CPU (user + system, from ``os.wait4``). The second must exit 5 with the
message naming the first; a repeat where the first had already finished is
reported, not counted. The first run is stopped (SIGTERM, after its current
batch) once the second has exited, and the shop is rebuilt for the next
repeat so that each first run has the same work ahead of it.

Both runs are the installed ``retention`` script of this venv, so the time
includes what a cron line pays: the interpreter, the imports, the options.
``python -X importtime``-style detail is not printed; for where the time
goes, run the second command under ``python -m cProfile``.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(sys.executable).with_name("retention")


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def second_run(argv: list[str], env: dict[str, str]) -> tuple[float, float, int, str]:
    """Start ``argv`` and wait for it: wall seconds, CPU seconds, exit code, stderr."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    out = (proc.stdout.read() if proc.stdout else "") + (proc.stderr.read() if proc.stderr else "")
    return wall, usage.ru_utime + usage.ru_stime, proc.returncode, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default="sqlite", help="sqlite (a file in a temporary folder) or a database URL")
    parser.add_argument("--customers", type=int, default=30_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--gap", type=float, default=1.0, help="seconds between the two starts")
    parser.add_argument("--rules", default="builtin:marketplace")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="bench-lock-"))
    url = f"sqlite:///{folder / 'shop.sqlite'}" if args.db == "sqlite" else args.db
    key = folder / "pseudonym.key"
    key.write_text("ab" * 32)
    key.chmod(0o600)
    env = {
        **os.environ,
        "RETENTION_DATABASE_URL": url,
        "RETENTION_PSEUDONYM_KEY_FILE": str(key),
        "RETENTION_RULES": args.rules,
    }
    run = [str(SCRIPT), "run", "--allow-mass", "*", "--format", "json", "--no-progress"]
    print(f"# {args.customers} customers on {args.db}, gap {args.gap} s, {args.repeat} repeats; {load()}")
    walls: list[float] = []
    cpus: list[float] = []
    for i in range(args.repeat):
        from retention.commands import demo_build

        demo_build(url, customers=args.customers, seed=7)
        first = subprocess.Popen(run, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(args.gap)
        before = load()
        wall, cpu, code, out = second_run(run, env)
        first_done = first.poll() is not None
        first.send_signal(signal.SIGTERM)
        first.wait()
        message = next((line for line in out.splitlines() if "another retention run" in line), out.strip()[-300:])
        print(f"repeat {i + 1}: exit {code}, wall {wall:.2f} s, cpu {cpu:.2f} s; {before}; {message}")
        if code != 5 or first_done:
            print(f"repeat {i + 1}: not counted (the first run had {'ended' if first_done else 'not ended'})")
            continue
        walls.append(wall)
        cpus.append(cpu)
    if walls:
        print(
            f"second run, exit 5: median wall {statistics.median(walls):.2f} s, "
            f"median cpu {statistics.median(cpus):.2f} s over {len(walls)} repeats; {load()}"
        )
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()


if __name__ == "__main__":
    main()
