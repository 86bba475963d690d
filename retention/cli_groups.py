"""`retention run-groups`: the open shard groups, and closing those whose shards are gone (docs/scaling.md).

Kept apart from the main CLI module so that it moves with the command
groups it sits beside; :func:`retention.groups.close_stale` does the work
(another command, such as a `status` overview, can call it as well).
"""

from __future__ import annotations

import json

import click

from retention.cli import console, db_option, format_option, handled, main
from retention.config import database_url


@main.command("run-groups")
@db_option
@click.option(
    "--close-stale",
    is_flag=True,
    help="Close open groups whose shards no process holds (each shard's lock is taken as the evidence).",
)
@click.option("--run-group", "run_group", default=None, help="Only this group.")
@format_option
@handled
def run_groups(db: str | None, close_stale: bool, run_group: str | None, fmt: str) -> None:
    """Open run groups (shards done, attempts); --close-stale closes those left by dead shards."""
    from retention import commands, groups

    engine = commands._engine(database_url(db))
    try:
        if close_stale:
            closed = groups.close_stale(engine, run_group)
            if fmt == "json":
                console.print_json(json.dumps([c.__dict__ for c in closed]))
            elif not closed:
                console.print("no open run group", highlight=False)
            for item in closed if fmt != "json" else []:
                console.print(f"{item.run_group}: {item.reason}", highlight=False)
            return
        with engine.connect() as conn:
            found = [g for g in groups.open_groups(conn) if run_group is None or g.run_group == run_group]
        rows = [
            {
                "run_group": g.run_group,
                "shards": g.shards,
                "done": g.done,
                "attempts": g.attempts,
                "started_at": g.started_at.isoformat(),
            }
            for g in found
        ]
        if fmt == "json":
            console.print_json(json.dumps(rows))
        elif fmt == "csv":
            console.print("run_group,shards,done,attempts,started_at", highlight=False)
            for r in rows:
                console.print(",".join(str(v) for v in r.values()), highlight=False, soft_wrap=True)
        elif not rows:
            console.print("no open run group", highlight=False)
        else:
            for r in rows:
                console.print(
                    f"{r['run_group']}: {r['done']} of {r['shards']} shards done, {r['attempts']} attempts, "
                    f"started {r['started_at']}",
                    highlight=False,
                    soft_wrap=True,
                )
    finally:
        engine.dispose()
