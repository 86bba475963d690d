"""Instructions the pack cannot act on, refused before anything is written.

The principle (docs/rules.md, "Nothing silent"): a command that names a
subject, a dataset, an identity or a date the pack cannot act on is refused
with exit 2 and one line saying why and what to do, never accepted as a
no-op. A GDPR erasure request that silently reaches nothing is the worst
failure this product can have, and an operator who typed a name expects it
to matter.
"""

from __future__ import annotations

import datetime as dt
import difflib
from collections.abc import Iterable, Sequence

import sqlalchemy as sa

from retention.errors import ConfigError
from retention.policy.model import Pack
from retention.timing import display

MAIL_HINTS = ("mail",)
"""A column whose name contains one of these may hold an e-mail address (a hint, never a rule)."""


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """`` (did you mean 'customers'?)`` when a valid name is close, else ''."""
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def refuse_unknown_datasets(pack: Pack, names: Sequence[str], option: str) -> None:
    """Every name is a dataset of ``pack`` (``*`` stands for all): a typo would override nothing."""
    for name in names:
        if name != "*" and name not in pack.datasets:
            raise ConfigError(
                f"{option} {name!r}: no such dataset in pack {pack.pack}{did_you_mean(name, pack.datasets)}; "
                f"valid: {', '.join(pack.datasets)} or '*'"
            )


def refuse_future_as_of(as_of: dt.datetime, now: dt.datetime, allowed: bool, zone: str = "UTC") -> None:
    """A run as of a moment still to come would apply transitions before their term.

    The as-of is named as the operator typed it: in ``zone``, the pack's
    timezone a date is read in, a date alone at its midnight (``--as-of
    2027-12-06`` for Paris is 2027-12-06, not 2027-12-05 23:00 UTC).
    """
    if as_of > now and not allowed:
        raise ConfigError(
            f"--as-of {display.cell(as_of, zone)} ({zone}) is in the future: the run would apply transitions before "
            "they are due; preview it with retention plan, or add --allow-future-as-of if that is the intent"
        )


def identity_datasets(pack: Pack, identity: str, erasing: bool) -> list[str]:
    """The datasets whose records a request (``erasing``) or a hold naming ``identity`` can reach."""
    found = []
    for name, ds in pack.datasets.items():
        if erasing and ds.on_erasure is None:
            continue
        if (identity == "email" and ds.email is not None) or (identity == "subject" and ds.has_subject):
            found.append(name)
    return found


def refuse_unreachable_identity(
    pack: Pack,
    *,
    subject_key: str | None,
    email: str | None,
    erasing: bool,
    conn: sa.Connection | None = None,
) -> None:
    """Each identity a request or a hold names reaches some dataset of the pack, or the command is refused.

    With a connection, the message names the datasets whose tables have a
    column that looks like an e-mail address: where an ``email:`` identity
    could be declared.
    """
    what = "erasure request" if erasing else "hold"
    if email and not identity_datasets(pack, "email", erasing):
        candidates = _mail_candidates(pack, erasing, conn)
        where = (
            f"datasets that could carry one: {', '.join(candidates)}"
            if candidates
            else "no dataset's table has an e-mail-like column"
        )
        scope = " with on_erasure" if erasing else ""
        raise ConfigError(
            f"--email reaches no record: no dataset{scope} of pack {pack.pack} declares an 'email:' identity "
            f"({where}); name the person by --subject, or declare 'email:' (docs/rules.md, 'Identities'), "
            f"then file the {what}"
        )
    if subject_key and not identity_datasets(pack, "subject", erasing):
        scope = " with on_erasure" if erasing else ""
        raise ConfigError(
            f"--subject reaches no record: no dataset{scope} of pack {pack.pack} has a subject_key or subject; "
            f"declare one (docs/rules.md, 'Subjects'), then file the {what}"
        )


def _mail_candidates(pack: Pack, erasing: bool, conn: sa.Connection | None) -> list[str]:
    """Datasets whose table has a column named like an e-mail address (all of them without a database)."""
    names = [n for n, ds in pack.datasets.items() if not erasing or ds.on_erasure is not None]
    if conn is None:
        return names
    inspector = sa.inspect(conn)
    found = []
    for name in names:
        ds = pack.datasets[name]
        try:
            columns = inspector.get_columns(ds.table, schema=ds.schema_)
        except sa.exc.NoSuchTableError:
            continue
        mail = [c["name"] for c in columns if any(h in c["name"].lower() for h in MAIL_HINTS)]
        if mail:
            found.append(f"{name} ({ds.table}.{mail[0]})")
    return found
