"""One public function per CLI command: the library behind ``retention``.

Everything the CLI does is callable from Python; the CLI only parses,
prints and exits. One module per command group, as in :mod:`retention.cli`:
``runs`` (plan, run, explain, report), ``subjects`` (hold, erasure, review),
``ledger``, ``archive`` (coverage, archive) and ``admin`` (init, db, check, pack history, demo). The
``retention user`` commands are in :mod:`retention.web.users`, ``serve`` in
:mod:`retention.web.server` and ``scheduler`` in :mod:`retention.ops.scheduler`.
"""

from __future__ import annotations

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
    ledger_audit,
    ledger_checkpoint,
    ledger_entries,
    ledger_export,
    ledger_keygen,
    ledger_lookup,
    ledger_prove,
    ledger_verify,
    ledger_verify_proof,
)
from retention.commands.runs import (
    MAX_HORIZON,
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

__all__ = [
    "MAX_HORIZON",
    "PUBLIC_KEY_FILE",
    "STATE_ONLY",
    "CheckReport",
    "Explanation",
    "archive_encrypt",
    "archive_keygen",
    "archive_rotate_key",
    "archive_show",
    "check",
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
    "pack_history",
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
