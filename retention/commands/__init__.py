"""One public function per CLI command: the library behind ``retention``.

Everything the CLI does is callable from Python; the CLI only parses,
prints and exits. One module per command group, as in :mod:`retention.cli`:
``runs`` (plan, run, explain, report), ``subjects`` (hold, erasure, review),
``ledger``, ``archive`` (coverage, archive) and ``admin`` (init, db, check, pack history, demo). The
``retention user`` commands are in :mod:`retention.web.users`, ``serve`` in
:mod:`retention.web.server` and ``scheduler`` in :mod:`retention.ops.scheduler`.

Importing this package imports none of them: each name is loaded from its
module the first time it is asked for (:func:`__getattr__`), so a
``retention run`` process does not import the ledger, archive and admin
commands it never calls (they were most of its start-up CPU). ``from
retention.commands import run`` and ``commands.run(...)`` work as before;
the imports under ``TYPE_CHECKING`` give mypy and readers the real types.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from retention.commands.admin import (
        PUBLIC_KEY_FILE,
        CheckReport,
        check,
        db_current,
        db_downgrade,
        db_upgrade,
        demo_build,
        demo_key_file,
        init,
        pack_history,
    )
    from retention.commands.archive import (
        archive_encrypt,
        archive_keygen,
        archive_rotate_key,
        archive_show,
        coverage,
    )
    from retention.commands.ledger import (
        audit_claims_of,
        check_proof,
        ledger_audit,
        ledger_checkpoint,
        ledger_entries,
        ledger_export,
        ledger_keygen,
        ledger_lookup,
        ledger_prove,
        ledger_verify,
        ledger_verify_proof,
        newest_packs,
    )
    from retention.commands.partitions import (
        partitions_status,
        partitions_track,
        partitions_untrack,
    )
    from retention.commands.runs import (
        MAX_HORIZON,
        NULL_KEY_ROWS,
        STATE_ONLY,
        Explanation,
        explain,
        load_pack,
        lock_status,
        plan,
        plan_shards,
        report,
        run,
        step_action,
    )
    from retention.commands.subjects import (
        erasure_add,
        erasure_close,
        erasure_extend,
        erasure_list,
        hold_add,
        hold_list,
        hold_release,
        review_decide,
        review_list,
        review_show,
        subject_known,
    )

# name -> the module of retention.commands that defines it
_WHERE = {
    "CheckReport": "admin",
    "Explanation": "runs",
    "MAX_HORIZON": "runs",
    "NULL_KEY_ROWS": "runs",
    "PUBLIC_KEY_FILE": "admin",
    "STATE_ONLY": "runs",
    "archive_encrypt": "archive",
    "archive_keygen": "archive",
    "archive_rotate_key": "archive",
    "archive_show": "archive",
    "audit_claims_of": "ledger",
    "check": "admin",
    "check_proof": "ledger",
    "coverage": "archive",
    "db_current": "admin",
    "db_downgrade": "admin",
    "db_upgrade": "admin",
    "demo_build": "admin",
    "demo_key_file": "admin",
    "erasure_add": "subjects",
    "erasure_close": "subjects",
    "erasure_extend": "subjects",
    "erasure_list": "subjects",
    "explain": "runs",
    "hold_add": "subjects",
    "hold_list": "subjects",
    "hold_release": "subjects",
    "init": "admin",
    "ledger_audit": "ledger",
    "ledger_checkpoint": "ledger",
    "ledger_entries": "ledger",
    "ledger_export": "ledger",
    "ledger_keygen": "ledger",
    "ledger_lookup": "ledger",
    "ledger_prove": "ledger",
    "ledger_verify": "ledger",
    "ledger_verify_proof": "ledger",
    "load_pack": "runs",
    "lock_status": "runs",
    "newest_packs": "ledger",
    "pack_history": "admin",
    "partitions_status": "partitions",
    "partitions_track": "partitions",
    "partitions_untrack": "partitions",
    "plan": "runs",
    "plan_shards": "runs",
    "report": "runs",
    "review_decide": "subjects",
    "review_list": "subjects",
    "review_show": "subjects",
    "run": "runs",
    "step_action": "runs",
    "subject_known": "subjects",
}

__all__ = [
    "MAX_HORIZON",
    "NULL_KEY_ROWS",
    "PUBLIC_KEY_FILE",
    "STATE_ONLY",
    "CheckReport",
    "Explanation",
    "archive_encrypt",
    "archive_keygen",
    "archive_rotate_key",
    "archive_show",
    "audit_claims_of",
    "check",
    "check_proof",
    "coverage",
    "db_current",
    "db_downgrade",
    "db_upgrade",
    "demo_build",
    "demo_key_file",
    "erasure_add",
    "erasure_close",
    "erasure_extend",
    "erasure_list",
    "explain",
    "hold_add",
    "hold_list",
    "hold_release",
    "init",
    "ledger_audit",
    "ledger_checkpoint",
    "ledger_entries",
    "ledger_export",
    "ledger_keygen",
    "ledger_lookup",
    "ledger_prove",
    "ledger_verify",
    "ledger_verify_proof",
    "load_pack",
    "lock_status",
    "newest_packs",
    "pack_history",
    "partitions_status",
    "partitions_track",
    "partitions_untrack",
    "plan",
    "plan_shards",
    "report",
    "review_decide",
    "review_list",
    "review_show",
    "run",
    "step_action",
    "subject_known",
]


def __getattr__(name: str) -> Any:
    """Import the module that defines ``name`` on first use and keep the name here."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
