"""Console accounts, the access log and login throttling (the console's own tables).

Passwords are hashed with argon2id (argon2-cffi's defaults, RFC 9106's
second recommended profile). Roles are cumulative: an approver can do what
an auditor does and also decide reviews; an admin can also manage accounts.
The access log records who did what kind of thing and when, with a count or
a verdict as outcome: never a looked-up id, a reason text or a password.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from retention.dialects import dialect_for
from retention.errors import ConfigError
from retention.store import tables as store
from retention.timing.clock import utcnow

ROLES = ("auditor", "approver", "admin")
RANK = {role: rank for rank, role in enumerate(ROLES, start=1)}
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}$")
MIN_PASSWORD = 12

THROTTLE_FAILURES = 5
THROTTLE_WINDOW = dt.timedelta(minutes=15)

_hasher = PasswordHasher()
# Verified against when the account does not exist, so a wrong name costs as much as a wrong password.
_DUMMY_HASH = _hasher.hash("retention-console-no-such-account")


def allows(role: str | None, needed: str) -> bool:
    """Whether ``role`` may do what ``needed`` may (roles are cumulative)."""
    return role is not None and RANK.get(role, 0) >= RANK[needed]


def normalise_name(name: str) -> str:
    """An account name as it is stored and compared: NFKC, trimmed, case-folded.

    Full-width ``ADA`` and ``Ada`` are the account ``ada``. A name that is not then
    of :data:`NAME_PATTERN` (``äda``) names no account: it is never handed to
    the database, whose collation might find ``ada`` for it (MariaDB's
    accent-insensitive default does).
    """
    return unicodedata.normalize("NFKC", name).strip().casefold()


def check_name(name: str) -> str:
    """The normalised name, or a ConfigError when it is not a valid account name."""
    name = normalise_name(name)
    if not NAME_PATTERN.fullmatch(name):
        raise ConfigError("an account name is 1-100 letters, digits or . _ @ + - and starts with a letter or digit")
    return name


def find_account(conn: sa.Connection, name: str, *, lock: bool = False) -> Any:
    """The account row ``name`` names exactly once normalised (any state), else None.

    The database compares under its collation; the row is kept only when
    its own normalised name is the one asked for, so a collation that equals
    ``a`` and ``ä`` or ignores trailing spaces finds nothing more. ``lock``
    holds the row until the transaction ends (PostgreSQL, MariaDB).
    """
    wanted = normalise_name(name)
    if not NAME_PATTERN.fullmatch(wanted):
        return None
    users = store.console_users
    query = sa.select(users).where(sa.func.lower(users.c.name) == wanted)
    if lock:
        query = query.with_for_update()
    for row in conn.execute(query).all():
        if normalise_name(row.name) == wanted:
            return row
    return None


def check_role(role: str) -> str:
    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r}; valid: {', '.join(ROLES)}")
    return role


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise ConfigError(f"a console password needs at least {MIN_PASSWORD} characters")
    return _hasher.hash(password)


def add_user(
    conn: sa.Connection,
    name: str,
    role: str,
    password: str | None,
    *,
    created_by: str,
    now: dt.datetime | None = None,
) -> str:
    """Create an account under its normalised name (returned); ``password`` None: signs in through the proxy only."""
    name = check_name(name)
    check_role(role)
    users = store.console_users
    # Any row the database finds equal under its collation, or case-insensitively, is the same account.
    same = sa.or_(users.c.name == name, sa.func.lower(users.c.name) == name)
    if conn.execute(sa.select(users.c.name).where(same)).first() is not None:
        raise ConfigError(f"account {name} exists; disable it first or choose another name")
    conn.execute(
        users.insert().values(
            name=name,
            role=role,
            password_hash=hash_password(password) if password is not None else None,
            created_at=now or utcnow(),
            created_by=created_by,
        )
    )
    return name


def list_users(conn: sa.Connection) -> list[dict[str, Any]]:
    users = store.console_users
    return [
        dict(r._mapping)
        for r in conn.execute(
            sa.select(
                users.c.name,
                users.c.role,
                (users.c.password_hash.is_not(None)).label("has_password"),
                users.c.created_at,
                users.c.created_by,
                users.c.disabled_at,
            ).order_by(users.c.name)
        )
    ]


def disable_user(conn: sa.Connection, name: str, *, now: dt.datetime | None = None) -> None:
    """Disable an account at once (its open sessions stop working); the last active admin stays."""
    users = store.console_users
    row = find_account(conn, name)
    if row is None:
        raise ConfigError(f"no account {name}; list them with: retention user list")
    if row.disabled_at is not None:
        raise ConfigError(f"account {name} is already disabled")
    if row.role == "admin":
        admins = conn.execute(
            sa.select(sa.func.count()).where(users.c.role == "admin", users.c.disabled_at.is_(None))
        ).scalar_one()
        if admins <= 1:
            raise ConfigError(f"account {name} is the last active admin; add another admin first")
    conn.execute(users.update().where(users.c.name == row.name).values(disabled_at=now or utcnow()))


def active_role(conn: sa.Connection, name: str) -> str | None:
    """The role of an enabled account, else None."""
    row = find_account(conn, name)
    return None if row is None or row.disabled_at is not None else str(row.role)


def authenticate(conn: sa.Connection, name: str, password: str) -> str | None:
    """The account's role when ``password`` is right and the account enabled, else None.

    An unknown name costs one argon2 verification too, so timing does not
    tell which names exist.
    """
    users = store.console_users
    found = find_account(conn, name)
    row = found if found is not None and found.disabled_at is None else None
    stored = row.password_hash if row is not None and row.password_hash else _DUMMY_HASH
    try:
        _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if row is None or not row.password_hash:
        return None
    if _hasher.check_needs_rehash(stored):
        conn.execute(users.update().where(users.c.name == row.name).values(password_hash=_hasher.hash(password)))
    return str(row.role)


# --------------------------------------------------------------------------
# Login throttling
# --------------------------------------------------------------------------


def _name_hash(secret: bytes, name: str) -> str:
    return hmac.new(secret, b"console-login\x1f" + normalise_name(name).encode("utf-8"), hashlib.sha256).hexdigest()


def _account_hash(secret: bytes, account: str) -> str:
    """The throttle key of an account found: its stored name, however it was typed."""
    return hmac.new(secret, b"console-account\x1f" + account.encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class SignIn:
    """The outcome of one sign-in attempt."""

    outcome: Literal["ok", "wrong", "throttled"]
    account: str | None = None  # the stored name of the account signed in to, or that exists under the name
    role: str | None = None
    wait: dt.timedelta | None = None


def attempt_sign_in(
    conn: sa.Connection, secret: bytes, name: str, password: str, now: dt.datetime | None = None
) -> SignIn:
    """One sign-in attempt, throttled per account and atomic under concurrency (in the caller's transaction).

    The attempt is recorded *before* the password is checked, under a lock
    of the account's row (PostgreSQL, MariaDB) or the database's write lock
    (SQLite, taken by the first statement), so that of any number of
    parallel attempts at most :data:`THROTTLE_FAILURES` per window reach the
    password check. The throttle is keyed on the account found, not on the
    spelling typed. A right password clears the account's failures.
    """
    when = now or utcnow()
    failures = store.console_login_failures
    if dialect_for(conn).write_lock_on_first_write:  # a write first: the database's write lock, held to the commit
        conn.execute(failures.delete().where(failures.c.failed_at < when - THROTTLE_WINDOW))
    row = find_account(conn, name, lock=True)
    key = _account_hash(secret, row.name) if row is not None else _name_hash(secret, name)
    conn.execute(failures.delete().where(failures.c.name_hash == key, failures.c.failed_at < when - THROTTLE_WINDOW))
    inserted = conn.execute(failures.insert().values(name_hash=key, failed_at=when)).inserted_primary_key
    assert inserted is not None
    mine = inserted[0]
    earlier = conn.execute(
        sa.select(failures.c.failed_at)
        .where(failures.c.name_hash == key, failures.c.failed_at > when - THROTTLE_WINDOW, failures.c.id != mine)
        .order_by(failures.c.failed_at.desc())
        .limit(THROTTLE_FAILURES)
    ).all()
    account = None if row is None else str(row.name)
    if len(earlier) >= THROTTLE_FAILURES:
        conn.execute(failures.delete().where(failures.c.id == mine))  # not checked: not a failure either
        oldest: dt.datetime = earlier[-1].failed_at
        return SignIn("throttled", account, wait=oldest + THROTTLE_WINDOW - when)
    role = authenticate(conn, name, password)
    if role is None:
        return SignIn("wrong", account if row is not None and row.disabled_at is None else None)
    conn.execute(failures.delete().where(failures.c.name_hash == key))
    return SignIn("ok", account, role)


# --------------------------------------------------------------------------
# Access log
# --------------------------------------------------------------------------


def log_access(
    conn: sa.Connection, user: str | None, kind: str, outcome: str | None = None, now: dt.datetime | None = None
) -> None:
    """One access-log line: who, when, what kind, and a count or verdict (never an id or a reason)."""
    conn.execute(
        store.console_access_log.insert().values(
            at=now or utcnow(), user_name=user, kind=kind[:40], outcome=outcome[:200] if outcome else None
        )
    )


def access_log(conn: sa.Connection, *, limit: int = 200, before: int | None = None) -> list[dict[str, Any]]:
    log = store.console_access_log
    query = sa.select(log).order_by(log.c.id.desc()).limit(limit)
    if before is not None:
        query = query.where(log.c.id < before)
    return [dict(r._mapping) for r in conn.execute(query)]


def last_access(conn: sa.Connection, kind: str) -> dict[str, Any] | None:
    """The newest access-log line of ``kind`` (e.g. the last ledger verification)."""
    log = store.console_access_log
    row = conn.execute(sa.select(log).where(log.c.kind == kind).order_by(log.c.id.desc()).limit(1)).first()
    return None if row is None else dict(row._mapping)
