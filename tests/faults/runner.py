"""`retention run` in a subprocess with one fault injected at a chosen point (the fault suite's driver).

Usage: python runner.py RETENTION-ARGS...   with RETENTION_FAULT set to JSON,
or python runner.py --serve (see :func:`serve`), which the suite uses:

- ``{"kind": "kill", "at": N, "out": PATH}``: SIGKILL this process just
  before its N-th statement (inside a batch transaction, between two of
  them, or in the run's bookkeeping: wherever N falls); PATH says where.
- ``{"kind": "terminate", "at": N, "admin": URL}``: just before the N-th
  statement, another session terminates the session about to run it
  (PostgreSQL ``pg_terminate_backend``, MariaDB ``KILL CONNECTION``).
- ``{"kind": "lock_tables", "at_begin": N, "admin": URL}``: when the N-th
  transaction begins, another session locks the source tables (SQLite: the
  whole database) and holds them until this process ends.
- ``{"kind": "second_run", "points": [[N, H], ...], "out": PATH}``: when
  the N-th transaction begins, move the SQLite lock row's heartbeat H hours
  back (0: leave it), start a second ``retention run`` with the same
  arguments while this one waits; PATH gets the list of their exit codes.
- ``{"kind": "disk_full", "max_pages": P}``: every SQLite connection may
  grow the file to P pages only.

The hooks are SQLAlchemy engine events on every engine of the process, so
they see the CLI's own engines; the fault's own sessions are opened on a
separate engine that the hooks ignore.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import sqlalchemy as sa

FAULT: dict[str, Any] = json.loads(os.environ.get("RETENTION_FAULT", '{"kind": "none"}'))
ARGS = sys.argv[1:]
statements = 0
begins = 0
done = False
_own: list[sa.Engine] = []
_held: list[Any] = []
_wrote: set[int] = set()


def _admin() -> sa.Engine:
    """An engine for the fault's own sessions, which the hooks leave alone."""
    if not _own:
        _own.append(sa.create_engine(FAULT["admin"], poolclass=sa.pool.NullPool))
    return _own[0]


def _ours(conn: sa.Connection) -> bool:
    return bool(_own) and conn.engine is _own[0]


def before_statement(conn: sa.Connection, _cursor: Any, _statement: str, *_: Any) -> None:
    global statements, done
    if _ours(conn):
        return
    statements += 1
    at = FAULT.get("at")
    due = statements == at
    if FAULT.get("after_write") and isinstance(at, int) and statements >= at:
        # The first statement from `at` on that runs inside a transaction which has written.
        due = conn.in_transaction() and id(conn) in _wrote
    if done or not due:
        if _statement.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE"):
            _wrote.add(id(conn))
        return
    if FAULT["kind"] == "kill":
        if "out" in FAULT:  # where it struck, for the test to check that kills land inside batches
            where = {"in_transaction": conn.in_transaction(), "after_a_write": id(conn) in _wrote}
            Path(FAULT["out"]).write_text(json.dumps(where))
        os.kill(os.getpid(), signal.SIGKILL)
    if FAULT["kind"] == "terminate":
        driver = conn.connection.dbapi_connection
        assert driver is not None
        with _admin().connect() as admin:
            if admin.dialect.name == "postgresql":
                admin.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": driver.info.backend_pid})
            else:
                admin.execute(sa.text(f"KILL CONNECTION {int(driver.thread_id())}"))
        done = True


def on_begin(conn: sa.Connection) -> None:
    global begins, done
    if _ours(conn):
        return
    begins += 1
    _wrote.discard(id(conn))  # writes since this transaction began
    if FAULT["kind"] == "second_run":
        for at, age_hours in FAULT["points"]:
            if begins == at:
                _second_run(age_hours)
        return
    if done or begins < FAULT.get("at_begin", 0):
        return
    if FAULT["kind"] == "lock_tables":
        done = _lock_tables()  # a holder that cannot get its lock at once tries again at the next transaction


def _lock_tables() -> bool:
    admin = _admin()
    holder = admin.connect()
    name = admin.dialect.name
    try:
        if name == "sqlite":
            driver = holder.connection.dbapi_connection
            assert driver is not None
            driver.execute("PRAGMA busy_timeout = 0")
            driver.execute("BEGIN IMMEDIATE")
        elif name == "postgresql":
            holder.execute(sa.text("SET lock_timeout = 500"))
            holder.execute(sa.text("LOCK TABLE customers, orders, events IN ACCESS EXCLUSIVE MODE"))
        else:
            holder.execute(sa.text("SET SESSION lock_wait_timeout = 1"))
            holder.execute(sa.text("LOCK TABLES customers WRITE, orders WRITE, events WRITE"))
    except sa.exc.DBAPIError:
        holder.close()
        return False
    except Exception as exc:  # sqlite3's own errors are not wrapped on the raw connection
        if type(exc).__module__ != "sqlite3":
            raise
        holder.close()
        return False
    _held.append(holder)  # held until this process ends
    return True


def _second_run(age_hours: float) -> None:
    if age_hours:
        from retention.store import tables as store

        with _admin().begin() as conn:
            conn.execute(store.run_lock.update().values(heartbeat_at=_aged(conn, age_hours)))
    second = subprocess.run(
        [sys.executable, "-m", "retention.cli", *ARGS],
        env={k: v for k, v in os.environ.items() if k != "RETENTION_FAULT"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = Path(FAULT["out"])
    seen = json.loads(out.read_text()) if out.exists() else []
    seen.append({"age_hours": age_hours, "exit": second.returncode, "stderr": second.stderr[-2000:]})
    out.write_text(json.dumps(seen))


def _aged(conn: sa.Connection, age_hours: float) -> Any:
    import datetime as dt

    from retention.store import tables as store

    beat = conn.execute(sa.select(store.run_lock.c.heartbeat_at)).scalar_one()
    return beat - dt.timedelta(hours=age_hours)


def on_connect(dbapi_conn: Any, _record: Any) -> None:
    if FAULT["kind"] == "disk_full":
        dbapi_conn.execute(f"PRAGMA max_page_count = {int(FAULT['max_pages'])}")


def install(fault: dict[str, Any], args: list[str]) -> None:
    """Arm ``fault`` for the run with ``args`` in this process."""
    global FAULT, ARGS
    FAULT, ARGS = fault, args
    sa.event.listen(sa.Engine, "before_cursor_execute", before_statement)
    sa.event.listen(sa.Engine, "begin", on_begin)
    sa.event.listen(sa.Engine, "connect", on_connect)


def main() -> None:
    install(FAULT, ARGS)
    from retention.cli import main as cli

    cli.main(ARGS, prog_name="retention")


def serve() -> None:
    """Fork each requested run from this process, which has imported the CLI once.

    Requests are JSON lines on stdin: {"args", "env", "stdout", "stderr"};
    each answer is a JSON line {"exit": code}, minus the signal number for a
    run killed by a signal (as subprocess reports it). A forked child is a
    process of its own, so a SIGKILL ends that run and nothing else; the
    import costs a couple of seconds per interpreter on a busy machine, paid
    here once per test session.
    """
    from retention.cli import main as cli

    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.environ.clear()
                os.environ.update(request["env"])
                for fd, name in ((1, "stdout"), (2, "stderr")):
                    target = os.open(request[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                    os.dup2(target, fd)
                    os.close(target)
                install(json.loads(request["env"].get("RETENTION_FAULT", '{"kind": "none"}')), request["args"])
                try:
                    cli.main(request["args"], prog_name="retention")
                    code = 0
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"exit": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
    else:
        main()
