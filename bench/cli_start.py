"""Benchmark: what a ``retention <command>`` process costs to start, this tree against a baseline revision.

    python bench/cli_start.py --baseline main --repeat 7

Exports the baseline revision (``git archive``) and copies this working tree
to a temporary folder and runs each command alternately from the two, as the installed
script does (``retention.launcher.main``), with ``python -S`` and
``PYTHONPATH=<tree>:<this venv's site-packages>`` so that both import their
own ``retention`` and the same libraries. Each command that touches a
database runs on a fresh copy of one demo shop (``demo_build``, SQLite, 50
customers, built once, not timed). CPU is user + system of the subprocess
(``os.wait4``): the figure to read on a loaded machine; wall is printed too.
The last line counts the modules ``-X importtime`` reports for ``run --help``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = "import sys; from retention.launcher import main; sys.argv[0] = 'retention'; main()"
COMMANDS = {
    "run --help": ["run", "--help"],
    "plan": ["plan", "--format", "json"],
    "run": ["run", "--allow-mass", "*", "--format", "json", "--no-progress"],
    "ledger verify": ["ledger", "verify"],
}


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def export(revision: str, into: Path) -> Path:
    """The tree of ``revision`` (its ``retention`` package and what it reads at run time) under ``into``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision], check=True, capture_output=True).stdout
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return shipped(into)


def copy(into: Path) -> Path:
    """This working tree's package, packs and migrations (uncommitted changes included) under ``into``."""
    for name in ("retention", "rules", "migrations"):
        shutil.copytree(ROOT / name, into / name, ignore=shutil.ignore_patterns("__pycache__"))
    return shipped(into)


def shipped(tree: Path) -> Path:
    """``retention._rules`` and ``retention._migrations`` where a wheel puts them (pyproject's package-dir)."""
    (tree / "retention" / "_rules").symlink_to(tree / "rules")
    (tree / "retention" / "_migrations").symlink_to(tree / "migrations")
    return tree


def timed(tree: Path, argv: list[str], env: dict[str, str]) -> tuple[float, float, int, str]:
    """Run ``retention argv`` from ``tree``: CPU seconds, wall seconds, exit code, output."""
    site = sysconfig.get_paths()["purelib"]
    env = {**env, "PYTHONPATH": f"{tree}:{site}"}
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-S", "-c", LAUNCH, *argv],
        env=env,
        cwd=tree,  # sys.path[0] of ``-c`` is the current folder
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    return usage.ru_utime + usage.ru_stime, wall, os.waitstatus_to_exitcode(status), out


def modules(tree: Path, argv: list[str], env: dict[str, str]) -> int:
    """How many modules ``-X importtime`` lists for ``retention argv`` from ``tree``."""
    site = sysconfig.get_paths()["purelib"]
    proc = subprocess.run(
        [sys.executable, "-S", "-X", "importtime", "-c", LAUNCH, *argv],
        env={**env, "PYTHONPATH": f"{tree}:{site}"},
        cwd=tree,
        capture_output=True,
        text=True,
    )
    return sum(1 for line in proc.stderr.splitlines() if line.startswith("import time:") and "|" in line) - 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default="main", help="the git revision to compare with")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--customers", type=int, default=50)
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from retention.commands import demo_build

    folder = Path(tempfile.mkdtemp(prefix="bench-cli-start-"))
    trees = {"baseline": export(args.baseline, folder / "baseline"), "this tree": copy(folder / "this")}
    shop = folder / "shop.sqlite"
    demo_build(f"sqlite:///{shop}", customers=args.customers, seed=7)
    key = folder / "pseudonym.key"
    key.write_text("ab" * 32)
    key.chmod(0o600)
    work = folder / "work.sqlite"
    env = {
        **os.environ,
        "RETENTION_DATABASE_URL": f"sqlite:///{work}",
        "RETENTION_PSEUDONYM_KEY_FILE": str(key),
        "RETENTION_RULES": "builtin:marketplace",
    }
    print(f"# baseline {args.baseline} against {ROOT}, {args.repeat} repeats, medians; start: {load()}")
    cpu: dict[tuple[str, str], list[float]] = {}
    wall: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.repeat):
        for name, argv in COMMANDS.items():
            for label, tree in trees.items():
                shutil.copyfile(shop, work)
                c, w, code, out = timed(tree, argv, env)
                if code != 0:
                    raise SystemExit(f"{label}: retention {' '.join(argv)} exited {code}:\n{out[-2000:]}")
                cpu.setdefault((name, label), []).append(c)
                wall.setdefault((name, label), []).append(w)
    print("| command | CPU baseline | CPU this tree | ratio | wall baseline | wall this tree |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in COMMANDS:
        before, after = (statistics.median(cpu[name, label]) for label in trees)
        wb, wa = (statistics.median(wall[name, label]) for label in trees)
        ratio = after / before
        print(f"| `retention {name}` | {before:.3f} s | {after:.3f} s | {ratio:.2f} | {wb:.2f} s | {wa:.2f} s |")
    counts = {label: modules(tree, COMMANDS["run --help"], env) for label, tree in trees.items()}
    print(f"# modules imported by `retention run --help`: {counts['baseline']} baseline, {counts['this tree']} here")
    print(f"# end: {load()}")
    shutil.rmtree(folder)


if __name__ == "__main__":
    main()
