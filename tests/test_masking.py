"""Masking strategies: hand-written expectations, and set-based application on every database."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

import pytest
import sqlalchemy as sa

from retention.engine.masking import mask_rows, strategy_for
from retention.errors import SchemaError
from retention.policy.model import Mask

TEXT = sa.String(100)


@pytest.mark.parametrize(
    ("mask", "value", "expected"),
    [
        ({"strategy": "null"}, "alice@example.com", None),
        ({"strategy": "fixed", "value": "deleted user"}, "Alice", "deleted user"),
        ({"strategy": "redact", "keep": "domain"}, "alice@example.com", "***@example.com"),
        ({"strategy": "redact", "keep": "domain"}, "no-at-sign", "***"),
        ({"strategy": "redact", "keep": "last4"}, "4111111111111111", "************1111"),
        ({"strategy": "redact", "keep": "first", "chars": 2}, "Martin", "Ma****"),
        ({"strategy": "truncate_date", "to": "month"}, dt.date(2023, 5, 17), dt.date(2023, 5, 1)),
        ({"strategy": "truncate_date", "to": "year"}, dt.datetime(2023, 5, 17, 10, 20), dt.datetime(2023, 1, 1)),
        ({"strategy": "truncate_date", "to": "month"}, "2023-05-17 10:20:00", "2023-05-01 00:00:00"),
        ({"strategy": "generalise", "chars": 2}, "75011", "75***"),
        ({"strategy": "redact", "keep": "domain"}, None, None),
    ],
)
def test_strategies(mask: dict[str, object], value: object, expected: object) -> None:
    """Each strategy masks as described in docs/rules.md."""
    assert strategy_for(Mask.model_validate(mask)).mask(value, secret=b"k", column_type=TEXT) == expected


def test_hash_is_keyed_and_fits_the_column() -> None:
    """The hash is HMAC-SHA256 under the secret, cut to the column's length."""
    strategy = strategy_for(Mask.model_validate("hash"))
    expected = hmac.new(b"k", b"mask\x1falice@example.com", hashlib.sha256).hexdigest()
    assert strategy.mask("alice@example.com", secret=b"k", column_type=sa.String(40)) == expected[:40]
    assert strategy.mask("alice@example.com", secret=b"other", column_type=TEXT) != expected


def test_unknown_strategy_lists_the_valid_ones() -> None:
    """A name outside the registry is refused with the valid names (packs catch it earlier, with a line)."""
    with pytest.raises(
        ValueError, match="unknown strategy 'hsh'; valid: null, fixed, hash, redact, truncate_date, generalise"
    ):
        strategy_for(Mask.model_construct(strategy="hsh"))


def test_mask_rows_changes_only_the_given_rows(engine: sa.Engine) -> None:
    """mask_rows masks the listed keys, leaves the others, and a hash fits VARCHAR(40)."""
    md = sa.MetaData()
    people = sa.Table(
        "people",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("email", sa.String(40)),
        sa.Column("name", sa.String(50)),
        sa.Column("born", sa.Date),
        sa.Column("postcode", sa.String(10)),
    )
    md.create_all(engine)
    rows = [
        {"id": i, "email": f"p{i}@mail.test", "name": f"Person {i}", "born": dt.date(1980, 6, i), "postcode": "69003"}
        for i in range(1, 5)
    ]
    with engine.begin() as conn:
        conn.execute(people.insert(), rows)
        masks = {
            "email": Mask.model_validate("hash"),
            "name": Mask.model_validate("null"),
            "born": Mask.model_validate({"strategy": "truncate_date", "to": "year"}),
            "postcode": Mask.model_validate({"strategy": "generalise", "chars": 2}),
        }
        assert mask_rows(conn, people, "id", [2, 3], masks, b"k") == 2
    with engine.connect() as conn:
        after = {r.id: r for r in conn.execute(sa.select(people))}
    for i in (1, 4):
        assert after[i].email == f"p{i}@mail.test" and after[i].name == f"Person {i}"
    for i in (2, 3):
        expected = hmac.new(b"k", f"mask\x1fp{i}@mail.test".encode(), hashlib.sha256).hexdigest()[:40]
        assert after[i].email == expected
        assert after[i].name is None
        assert after[i].born == dt.date(1980, 1, 1)
        assert after[i].postcode == "69***"


def test_mask_rows_names_a_missing_column(engine: sa.Engine) -> None:
    """Masking a column the table lacks is a schema error naming table and column."""
    md = sa.MetaData()
    table = sa.Table("t", md, sa.Column("id", sa.Integer, primary_key=True))
    md.create_all(engine)
    with engine.begin() as conn, pytest.raises(SchemaError, match="table t has no column 'email'; columns: id"):
        mask_rows(conn, table, "id", [1], {"email": Mask.model_validate("null")}, b"k")
