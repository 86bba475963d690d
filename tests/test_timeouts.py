"""Connect and statement timeouts on every engine connection (issue 25): no run hangs on a silent server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from retention.errors import ConfigError
from retention.store import timeouts
from retention.store.config import create_engine


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word (a hung server or proxy)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()


@pytest.mark.parametrize("scheme", ["postgresql", "mysql"])
def test_a_silent_server_fails_the_connection_instead_of_hanging(scheme: str, silent_server: int) -> None:
    engine = create_engine(f"{scheme}://user@127.0.0.1:{silent_server}/db", connect_timeout_seconds=1)
    outcome: list[BaseException | None] = []

    def connect() -> None:
        try:
            with engine.connect():
                outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(60)  # a hang detector, not a speed check: without the timeout this waits for the kernel
    engine.dispose()
    assert not thread.is_alive(), "the connection attempt hung"
    assert len(outcome) == 1 and isinstance(outcome[0], sa.exc.OperationalError)


def test_a_statement_running_too_long_is_cancelled(db_url: str) -> None:
    engine = create_engine(db_url, statement_timeout_seconds=1)
    try:
        with engine.connect() as conn:
            name = conn.dialect.name
            if name == "sqlite":
                pytest.skip("SQLite has no server: only its lock waits (busy_timeout) can hang, and they are bounded")
            sleep = "SELECT pg_sleep(5)" if name == "postgresql" else "SELECT SLEEP(5)"
            with pytest.raises(sa.exc.OperationalError):
                conn.execute(sa.text(sleep))
    finally:
        engine.dispose()


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(timeouts.ENV_CONNECT, "7")
    monkeypatch.setenv(timeouts.ENV_STATEMENT, "0")
    assert timeouts.connect_timeout() == 7 and timeouts.statement_timeout() == 0
    monkeypatch.delenv(timeouts.ENV_CONNECT)
    monkeypatch.delenv(timeouts.ENV_STATEMENT)
    assert timeouts.connect_timeout() == 30 and timeouts.statement_timeout() == 3600
    for value in ("soon", "0"):
        monkeypatch.setenv(timeouts.ENV_CONNECT, value)
        with pytest.raises(ConfigError, match=timeouts.ENV_CONNECT):
            timeouts.connect_timeout()
