"""Per-database SQL lives in retention/dialects/ only, every dialect answers every hook, and the hooks work.

The source scan reads the package's own files (an AST walk, not the code
under test); the database tests compare with values written by hand here.
"""

from __future__ import annotations

import ast
import datetime as dt
import inspect
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from retention import dialects
from retention.dialects import Dialect, dialect_for

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "retention"
DATABASE_NAMES = {"sqlite", "postgresql", "mysql", "mariadb"}

# (path relative to the repository, source line stripped) -> why it may stay.
# Empty today; an entry needs a reason a reviewer accepts (for example a
# branch that picks test data, not SQL).
ALLOWED: dict[tuple[str, str], str] = {}


def _names_a_database(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value in DATABASE_NAMES
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return any(_names_a_database(e) for e in node.elts)
    return False


def _branches(path: Path) -> list[tuple[int, str]]:
    """Lines that compare with a database name or read a dialect's name."""
    source = path.read_text(encoding="utf-8")
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare) and any(_names_a_database(n) for n in [node.left, *node.comparators]):
            found.append(node.lineno)
        elif isinstance(node, ast.Attribute):
            owner = node.value
            dialect_name = (
                node.attr == "name" and isinstance(owner, ast.Attribute) and owner.attr == "dialect"
            )  # conn.dialect.name, engine.dialect.name
            if dialect_name or node.attr == "get_backend_name":
                found.append(node.lineno)
    lines = source.splitlines()
    return [(n, lines[n - 1].strip()) for n in sorted(set(found))]


def test_no_module_outside_dialects_branches_on_the_database() -> None:
    """No module outside retention/dialects/ compares with a database name or reads ``dialect.name``."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if (PACKAGE / "dialects") in path.parents:
            continue
        relative = str(path.relative_to(ROOT))
        for line_no, line in _branches(path):
            if (relative, line) not in ALLOWED:
                offenders.append(f"{relative}:{line_no}: {line}")
    assert offenders == []


def test_the_scan_finds_a_branch(tmp_path: Path) -> None:
    """The scan above flags each form of a dialect branch, and not ``with_variant`` type declarations."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "def f(conn, url, d):\n"
        "    if conn.dialect.name == 'x':\n"
        "        pass\n"
        "    if d in ('mysql', 'mariadb'):\n"
        "        pass\n"
        "    b = url.get_backend_name()\n"
        "    return 'postgresql' != d\n"
        "t = T().with_variant(U, 'mysql', 'mariadb')\n",
        encoding="utf-8",
    )
    assert [n for n, _ in _branches(sample)] == [2, 4, 6, 7]


def _declaring(hook: str) -> type:
    """The class of Dialect's bases (base.py and the parts it is built from) that declares ``hook``."""
    return next(klass for klass in Dialect.__mro__ if hook in vars(klass))


def _hooks() -> list[str]:
    """Every hook of Dialect, including those of the parts it is built from (clock values, items, bulk writes)."""
    return sorted(
        {
            name
            for klass in Dialect.__mro__
            if klass is not object
            for name, value in vars(klass).items()
            if not name.startswith("_")
            and name != "names"
            and (callable(value) or isinstance(value, bool | str | None))
        }
    )


def test_every_registered_dialect_implements_every_hook() -> None:
    """Each registered class answers every hook with a signature the base's callers can use; each is documented."""
    registry = dialects.registry()
    assert {name: cls.__name__ for name, cls in registry.items()} == {
        "sqlite": "SQLiteDialect",
        "postgresql": "PostgreSQLDialect",
        "mysql": "MySQLDialect",
        "mariadb": "MySQLDialect",
    }
    hooks = _hooks()
    assert len(hooks) >= 25
    docs = (ROOT / "docs" / "dialects.md").read_text(encoding="utf-8")
    undocumented = [h for h in hooks if f"`{h}`" not in docs]
    assert undocumented == []
    for hook in hooks:
        base = getattr(Dialect, hook)
        if callable(base):
            assert inspect.getdoc(base), f"Dialect.{hook} says why it exists"
        else:
            lines = inspect.getsource(sys.modules[_declaring(hook).__module__]).splitlines()
            declared = next(n for n, line in enumerate(lines) if line.startswith(f"    {hook}: ClassVar"))
            assert lines[declared - 1].strip().startswith("#:"), f"Dialect.{hook} says why it exists"
        for cls in set(registry.values()):
            mine = getattr(cls, hook)
            if not callable(base):
                assert isinstance(mine, type(base)) or base is None or mine is None, (cls, hook)
                continue
            wanted = list(inspect.signature(base).parameters.values())
            have = inspect.signature(mine).parameters
            for p in wanted:
                assert p.name in have, (cls.__name__, hook, p.name)
            extra = [p for n, p in have.items() if n not in {w.name for w in wanted}]
            assert all(p.default is not inspect.Parameter.empty for p in extra), (cls.__name__, hook)


def test_dialect_for_finds_the_class() -> None:
    """Names, URLs and engines map to their class; an unknown database gets the generic one."""
    assert type(dialect_for("mariadb")).__name__ == "MySQLDialect"
    assert type(dialect_for(sa.make_url("postgresql://u@h/db"))).__name__ == "PostgreSQLDialect"
    assert type(dialect_for(sa.create_engine("sqlite://"))).__name__ == "SQLiteDialect"
    generic = dialect_for("cockroachdb")
    assert type(generic) is Dialect and generic.name == "cockroachdb"
    assert generic.run_lock_statements() is None and not generic.supports_partition_drop


# --------------------------------------------------------------------------
# The hooks on the real databases
# --------------------------------------------------------------------------

ODD_TEXT = [
    "plain",
    "tab\there",
    "new\nline",
    "back\\slash",
    "crlf\r\n",
    None,
    "ünïcode €",
    "\\N",
    "",
    "it's",
    'say "x"',
    "%s %(x)s",
    "'); DROP TABLE hook_rows; --",
    "abc123",
    "ÀBC",  # letters, not ASCII: escaped, not written as they are
]
WHEN = dt.datetime(2024, 2, 29, 13, 45, 6, 123456)


@pytest.fixture
def table(engine: sa.Engine) -> sa.Table:
    md = sa.MetaData()
    t = sa.Table(
        "hook_rows",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("label", sa.String(40)),
        sa.Column("at", dialect_for(engine).instant_type()),  # microseconds kept on MariaDB too
    )
    md.create_all(engine)
    return t


def test_bulk_insert_keeps_every_value(engine: sa.Engine, table: sa.Table) -> None:
    """COPY (PostgreSQL), multi-row INSERT text (MariaDB) or executemany: every value comes back as written."""
    rows = [(i, ODD_TEXT[i % len(ODD_TEXT)], WHEN + dt.timedelta(seconds=i)) for i in range(1, 1201)]
    with engine.begin() as conn:
        dialect_for(conn).bulk_insert(conn, table, ("id", "label", "at"), rows)
    with engine.connect() as conn:
        back = [tuple(r) for r in conn.execute(sa.select(table).order_by(table.c.id))]
    assert back == rows


def test_key_lookups(engine: sa.Engine, table: sa.Table) -> None:
    """``one_of`` selects exactly the listed keys; ``key_text`` compares a number with the engine's text keys."""
    with engine.begin() as conn:
        conn.execute(table.insert(), [{"id": i, "label": "abcde"[i - 1], "at": WHEN} for i in range(1, 6)])
    with engine.connect() as conn:
        d = dialect_for(conn)
        chosen = conn.execute(sa.select(table.c.id).where(d.one_of(table.c.label, ["b", "d", "zz"]))).scalars()
        assert sorted(chosen) == [2, 4]
        by_text = conn.execute(sa.select(table.c.id).where(d.key_text(table.c.id) == "3")).scalars().all()
        assert by_text == [3]
        locked = conn.execute(d.for_update(sa.select(table.c.id).where(table.c.id <= 2), table)).scalars()
        assert sorted(locked) == [1, 2]
        head = d.lock_ledger_head(conn, sa.select(table.c.id).order_by(table.c.id.desc()).limit(1), 12345)
        assert conn.execute(head).scalar_one() == 5
        conn.rollback()
        parent = conn.dialect.identifier_preparer.format_table(table)
        assert d.range_partitions(conn, parent, "at") == []


def test_epoch_text_valid(engine: sa.Engine) -> None:
    """Digits without a leading zero are valid epoch text; anything else is not."""
    md = sa.MetaData()
    t = sa.Table("epochs", md, sa.Column("id", sa.Integer, primary_key=True), sa.Column("v", sa.String(20)))
    md.create_all(engine)
    values = {1: "1", 2: "10", 3: "01", 4: "", 5: "1a", 6: "1700000000", 7: "-5", 8: " 7", 9: "0"}
    with engine.begin() as conn:
        conn.execute(t.insert(), [{"id": k, "v": v} for k, v in values.items()])
        d = dialect_for(conn)
        valid = conn.execute(sa.select(t.c.id).where(d.epoch_text_valid(t.c.v)).order_by(t.c.id)).scalars().all()
    assert valid == [1, 2, 6]


def test_run_lock_excludes_a_second_session(engine: sa.Engine) -> None:
    """The advisory lock is taken once per database: a second session is refused until it is given back."""
    statements = dialect_for(engine).run_lock_statements()
    if statements is None:
        assert engine.dialect.name == "sqlite"  # the lock is a row of retention_run_lock (tests/test_locks.py)
        return
    take, give = statements
    with engine.connect() as first, engine.connect() as second:
        results: list[Any] = [first.execute(sa.text(take)).scalar_one()]
        results.append(second.execute(sa.text(take)).scalar_one())
        first.execute(sa.text(give))
        results.append(second.execute(sa.text(take)).scalar_one())
        second.execute(sa.text(give))
    assert [bool(r) for r in results] == [True, False, True]


def test_connections_share_one_tls_context_where_the_driver_builds_one_each(engine: sa.Engine) -> None:
    """PyMySQL's "preferred TLS" context is built once per process, with the settings the driver gives its own.

    The context costs 40-80 ms of CPU to build (the system's CA store) and PyMySQL built one per connection;
    the other drivers make their connections themselves.
    """
    d = dialect_for(engine)
    if engine.dialect.driver != "pymysql":
        assert d.new_connection(engine.dialect.driver, (), {}) is None
        return
    import ssl

    import pymysql.connections

    contexts = []
    for _ in range(2):
        with engine.connect() as conn:
            contexts.append(conn.connection.dbapi_connection.ctx)  # type: ignore[union-attr]
        engine.dispose()  # the next connection is a new one, not the pool's
    assert contexts[0] is contexts[1]
    own = pymysql.connections.Connection._create_ssl_ctx(object(), {})
    assert isinstance(contexts[0], ssl.SSLContext)
    settings = ("verify_mode", "check_hostname", "verify_flags", "options", "minimum_version", "maximum_version")
    assert [getattr(contexts[0], s) for s in settings] == [getattr(own, s) for s in settings]
