"""engine_events.on_database: a listener on every engine that sees only the test's own database.

The tests that watch a CLI command's statements listen on ``sa.Engine`` (the
command makes its own engine); the suite's background thread meanwhile makes
and drops the next tests' databases in the same process (db_templates.py).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from conftest import isolated_database
from engine_events import database_key, on_database

from retention.store.config import create_engine


def test_a_listener_on_every_engine_sees_only_its_database(db_url: str, dialect: str, tmp_path: Path) -> None:
    """Statements sent meanwhile by another thread to another database (as the templates' thread does) are not seen;
    those of an engine the code under test makes itself from the same URL are."""
    seen: list[str] = []
    started, stop = threading.Event(), threading.Event()

    def note(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    with isolated_database(dialect, tmp_path) as other_url:
        other = create_engine(other_url)

        def elsewhere() -> None:
            with other.connect() as conn:
                while not stop.is_set():
                    conn.execute(sa.text("SELECT 2 AS elsewhere"))
                    started.set()

        thread = threading.Thread(target=elsewhere)
        try:
            with on_database(db_url, "before_cursor_execute", note):
                thread.start()
                assert started.wait(30)
                own = create_engine(db_url)  # as a CLI command makes its own
                try:
                    with own.connect() as conn:
                        conn.execute(sa.text("SELECT 1 AS here"))
                finally:
                    own.dispose()
                stop.set()
                thread.join(30)
        finally:
            stop.set()
            thread.join(30)
            other.dispose()
    assert [s for s in seen if "elsewhere" in s] == []
    assert [s for s in seen if "here" in s] == ["SELECT 1 AS here"]


def test_the_key_names_the_database_and_schema_not_the_driver_or_options(tmp_path: Path) -> None:
    """The CLI's engine URL differs from the test's (driver name, other options); the database it names does not."""
    pg = "postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3Drt_a%20-csynchronous_commit%3Doff"
    assert database_key(pg) == database_key(
        "postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3Drt_a"
    )
    assert database_key(pg) != database_key(pg.replace("rt_a", "rt_b"))
    assert database_key("mysql+pymysql://root@h:3306/a") == database_key("mariadb+pymysql://root@h:3306/a")
    assert database_key("mysql+pymysql://root@h:3306/a") != database_key("mysql+pymysql://root@h:3306/b")
    (tmp_path / "d").mkdir()
    assert database_key(f"sqlite:///{tmp_path}/x.sqlite") == database_key(f"sqlite:///{tmp_path}/d/../x.sqlite")
