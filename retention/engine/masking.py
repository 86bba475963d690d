"""Masking strategies for ``anonymise`` (and archive with ``then: anonymise``).

One small class per strategy, one explicit registry dict (no registration by
import side effects), and an error that lists the valid names. Strategies
that need no row value (null, fixed) run as one set-based UPDATE; the others
read the batch's values once and write them back with one executemany.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

import sqlalchemy as sa

from retention.errors import SchemaError
from retention.policy.model import Mask
from retention.store import tables as store


class Strategy(Protocol):
    """Masks one column's values."""

    needs_value: ClassVar[bool]

    def mask(self, value: Any, *, secret: bytes, column_type: sa.types.TypeEngine[Any]) -> Any: ...


class _Configured:
    """Keeps the strategy's options (the validated Mask) for ``mask``."""

    def __init__(self, config: Mask) -> None:
        self.config = config


class NullStrategy(_Configured):
    needs_value: ClassVar[bool] = False

    def mask(self, value: Any, *, secret: bytes, column_type: sa.types.TypeEngine[Any]) -> Any:
        return None


class FixedStrategy(_Configured):
    needs_value: ClassVar[bool] = False

    def mask(self, value: Any, *, secret: bytes, column_type: sa.types.TypeEngine[Any]) -> Any:
        return self.config.value


class HashStrategy(_Configured):
    """Keyed hash: equal inputs stay joinable, the input cannot be recovered without the key."""

    needs_value: ClassVar[bool] = True

    def mask(self, value: Any, *, secret: bytes, column_type: sa.types.TypeEngine[Any]) -> Any:
        if value is None:
            return None
        digest = hmac.new(secret, f"mask\x1f{value}".encode(), hashlib.sha256).hexdigest()
        length = getattr(column_type, "length", None) or 64
        return digest[: min(64, length)]


class RedactStrategy(_Configured):
    """Stars out a value but keeps a useful part: an email's domain, the last 4, the first N."""

    needs_value: ClassVar[bool] = True

    def mask(self, value: Any, *, secret: bytes, column_type: sa.types.TypeEngine[Any]) -> Any:
        if value is None:
            return None
        text = str(value)
        keep = self.config.keep
        if keep == "domain":
            _, at, domain = text.rpartition("@")
            return f"***@{domain}" if at else "***"
        if keep == "last4":
            return "*" * max(len(text) - 4, 0) + text[-4:]
        chars = self.config.chars if self.config.chars is not None else 1
        return text[:chars] + "*" * max(len(text) - chars, 0)


class TruncateDateStrategy(_Configured):
    """Keeps only the month or the year of a date (first day, midnight)."""

    needs_value: ClassVar[bool] = True

    def mask(self, value: Any, *, secret: bytes, column_type: sa.types.TypeEngine[Any]) -> Any:
        if value is None:
            return None
        parsed = value
        if isinstance(value, str):
            parsed = dt.datetime.fromisoformat(value) if len(value) > 10 else dt.date.fromisoformat(value)
        month = parsed.month if self.config.to == "month" else 1
        if isinstance(parsed, dt.datetime):
            result: Any = parsed.replace(month=month, day=1, hour=0, minute=0, second=0, microsecond=0)
        else:
            result = parsed.replace(month=month, day=1)
        return (
            result.isoformat(sep=" ")
            if isinstance(value, str) and isinstance(result, dt.datetime)
            else (result.isoformat() if isinstance(value, str) else result)
        )


class GeneraliseStrategy(_Configured):
    """Keeps a prefix (a postcode's district) and stars the rest, same length."""

    needs_value: ClassVar[bool] = True

    def mask(self, value: Any, *, secret: bytes, column_type: sa.types.TypeEngine[Any]) -> Any:
        if value is None:
            return None
        text = str(value)
        chars = self.config.chars or 0
        return text[:chars] + "*" * max(len(text) - chars, 0)


STRATEGIES: dict[str, type[Any]] = {
    "null": NullStrategy,
    "fixed": FixedStrategy,
    "hash": HashStrategy,
    "redact": RedactStrategy,
    "truncate_date": TruncateDateStrategy,
    "generalise": GeneraliseStrategy,
}


def strategy_for(config: Mask) -> Strategy:
    """The strategy object for a mask; unknown names list the valid ones."""
    try:
        factory = STRATEGIES[config.strategy]
    except KeyError:
        raise ValueError(f"unknown strategy {config.strategy!r}; valid: {', '.join(STRATEGIES)}") from None
    strategy: Strategy = factory(config)
    return strategy


def mask_rows(
    conn: sa.Connection,
    table: sa.Table,
    key_column: str,
    keys: Sequence[Any],
    masks: dict[str, Mask],
    secret: bytes,
) -> int:
    """Mask ``masks``' columns of the rows with ``keys``, in the caller's transaction."""
    if not keys or not masks:
        return 0
    missing = [c for c in masks if c not in table.c]
    if missing:
        raise SchemaError(
            [f"table {table.name} has no column {c!r}; columns: {', '.join(table.c.keys())}" for c in missing]
        )
    key = table.c[key_column]
    strategies = {c: strategy_for(m) for c, m in masks.items()}
    constant = {
        c: s.mask(None, secret=secret, column_type=table.c[c].type) for c, s in strategies.items() if not s.needs_value
    }
    if constant:
        conn.execute(table.update().where(store.one_of(conn, key, list(keys))).values(**constant))
    per_row = [c for c, s in strategies.items() if s.needs_value]
    if not per_row:
        return len(keys)
    rows = conn.execute(sa.select(key, *(table.c[c] for c in per_row)).where(store.one_of(conn, key, list(keys)))).all()
    params = []
    for row in rows:
        values = {
            f"v_{c}": strategies[c].mask(row._mapping[c], secret=secret, column_type=table.c[c].type) for c in per_row
        }
        params.append({"k_": row._mapping[key_column], **values})
    if params:
        statement = table.update().where(key == sa.bindparam("k_")).values({c: sa.bindparam(f"v_{c}") for c in per_row})
        conn.execute(statement, params)
    return len(keys)
