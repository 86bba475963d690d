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
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

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


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise ConfigError("an account name is 1-100 letters, digits or . _ @ + - and starts with a letter or digit")
    return name


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
) -> None:
    """Create an account; ``password`` None makes an account that signs in through the proxy only."""
    check_name(name)
    check_role(role)
    users = store.console_users
    if conn.execute(sa.select(users.c.name).where(users.c.name == name)).first() is not None:
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
    row = conn.execute(sa.select(users).where(users.c.name == name)).first()
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
    conn.execute(users.update().where(users.c.name == name).values(disabled_at=now or utcnow()))


def active_role(conn: sa.Connection, name: str) -> str | None:
    """The role of an enabled account, else None."""
    users = store.console_users
    row = conn.execute(sa.select(users.c.role).where(users.c.name == name, users.c.disabled_at.is_(None))).first()
    return None if row is None else str(row.role)


def authenticate(conn: sa.Connection, name: str, password: str) -> str | None:
    """The account's role when ``password`` is right and the account enabled, else None.

    An unknown name costs one argon2 verification too, so timing does not
    tell which names exist.
    """
    users = store.console_users
    row = conn.execute(
        sa.select(users.c.role, users.c.password_hash).where(users.c.name == name, users.c.disabled_at.is_(None))
    ).first()
    stored = row.password_hash if row is not None and row.password_hash else _DUMMY_HASH
    try:
        _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if row is None or not row.password_hash:
        return None
    if _hasher.check_needs_rehash(stored):
        conn.execute(users.update().where(users.c.name == name).values(password_hash=_hasher.hash(password)))
    return str(row.role)


# --------------------------------------------------------------------------
# Login throttling
# --------------------------------------------------------------------------


def _name_hash(secret: bytes, name: str) -> str:
    return hmac.new(secret, b"console-login\x1f" + name.strip().lower().encode("utf-8"), hashlib.sha256).hexdigest()


def throttled_for(conn: sa.Connection, secret: bytes, name: str, now: dt.datetime | None = None) -> dt.timedelta | None:
    """How long sign-in stays refused for ``name`` after too many failures (None: not throttled)."""
    when = now or utcnow()
    failures = store.console_login_failures
    rows = conn.execute(
        sa.select(failures.c.failed_at)
        .where(failures.c.name_hash == _name_hash(secret, name), failures.c.failed_at > when - THROTTLE_WINDOW)
        .order_by(failures.c.failed_at.desc())
        .limit(THROTTLE_FAILURES)
    ).all()
    if len(rows) < THROTTLE_FAILURES:
        return None
    oldest: dt.datetime = rows[-1].failed_at
    return oldest + THROTTLE_WINDOW - when


def record_failure(conn: sa.Connection, secret: bytes, name: str, now: dt.datetime | None = None) -> None:
    """Count one failed sign-in for ``name`` (kept as an HMAC, and only for the throttling window)."""
    when = now or utcnow()
    failures = store.console_login_failures
    conn.execute(failures.delete().where(failures.c.failed_at < when - THROTTLE_WINDOW))
    conn.execute(failures.insert().values(name_hash=_name_hash(secret, name), failed_at=when))


def clear_failures(conn: sa.Connection, secret: bytes, name: str) -> None:
    failures = store.console_login_failures
    conn.execute(failures.delete().where(failures.c.name_hash == _name_hash(secret, name)))


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
