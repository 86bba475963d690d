"""Reading and proving the purge ledger: the library behind ``ledger verify``, ``show``, ``lookup``, proofs and keys."""

from __future__ import annotations

import contextlib
import datetime as dt
from pathlib import Path
from typing import Any

from retention.commands import files
from retention.engine import backups
from retention.errors import ConfigError
from retention.ledger import chain as ledger
from retention.ledger import mac as ledger_mac
from retention.ledger import pseudonyms
from retention.ledger.jsonfile import loads_bounded, read_bounded, read_json
from retention.ledger.mac import configured_secret
from retention.policy import load_catalog
from retention.store.connect import open_engine
from retention.timing.clock import AsOf, utcnow


def ledger_verify(
    db_url: str, checkpoint_file: Path | None = None, public_key: Path | None = None
) -> ledger.VerifyResult:
    """Verify the chain, and with a checkpoint file that the signed head still stands.

    A ``public_key`` without a checkpoint is refused: it checks nothing else, and "ledger verified" read as if the
    signed head had been checked with it. (RETENTION_CHECKPOINT_PUBLIC_KEY, set for every job, is no such case.)
    """
    if public_key is not None and checkpoint_file is None:
        raise ConfigError("--public-key checks a signed checkpoint: give --checkpoint FILE with it")
    secret = configured_secret()
    if checkpoint_file is None:
        engine = open_engine(db_url)
        try:
            return ledger.verify(engine, secret=secret)
        finally:
            engine.dispose()
    public = ledger.configured_public_key(public_key)  # never the key the checkpoint carries
    document = read_json(checkpoint_file, "checkpoint", CHECKPOINT_BYTES)
    if not isinstance(document, dict):
        raise ConfigError(f"checkpoint {checkpoint_file} is not a checkpoint (a JSON object)")
    engine = open_engine(db_url)
    try:
        return ledger.verify_checkpoint(engine, document, public, secret=secret)
    finally:
        engine.dispose()


def _instant_option(text: AsOf | str | None, name: str) -> dt.datetime | None:
    parsed = AsOf.given(text, name)
    return None if parsed is None else parsed.resolve("UTC")


def _range(since: AsOf | str | None, until: AsOf | str | None) -> tuple[dt.datetime | None, dt.datetime | None]:
    """``--since`` and ``--until`` as UTC instants; a range no entry can fall in is refused (exit 2).

    Why: ``--since`` at or after ``--until`` (swapped by hand) printed an
    empty table and exit 0, as if nothing had been recorded then.
    """
    start, end = _instant_option(since, "--since"), _instant_option(until, "--until")
    if start is not None and end is not None and start >= end:
        raise ConfigError(
            f"--since {start.isoformat()} is not before --until {end.isoformat()}: no entry is recorded in that "
            "range (--since is inclusive, --until exclusive)"
        )
    return start, end


RUN_ID_LENGTH = 36


def run_of(engine: Any, run_id: str | None) -> str | None:
    """A ``--run`` filter as a whole run id: a shorter one is the start of a run's id, as tables show it.

    Why: tables print a run id's first 8 characters, and ``ledger show --run`` with them matched nothing (an
    empty table, exit 0). A start that names no run, or several, is refused; a whole id is taken as given (the
    run's own row may have been removed after the engine's retention while its entries stay).
    """
    if run_id is None or len(run_id) >= RUN_ID_LENGTH:
        return run_id
    import sqlalchemy as sa

    from retention.store import tables as store

    runs = store.runs
    with engine.connect() as conn:
        found = list(
            conn.execute(sa.select(runs.c.id).where(runs.c.id.startswith(run_id, autoescape=True)).limit(2)).scalars()
        )
    if len(found) == 1:
        return str(found[0])
    if not found:
        raise ConfigError(f"--run: no run id starts with {run_id!r}; give a whole run id or the start of one")
    raise ConfigError(f"--run: several run ids start with {run_id!r}; give more of it")


def ledger_entries(
    db_url: str,
    *,
    since: AsOf | str | None = None,
    until: AsOf | str | None = None,
    dataset: str | None = None,
    transition: str | None = None,
    run_id: str | None = None,
    limit: int = 0,
    record_pseudonym: str | None = None,
    subject_pseudonym: str | None = None,
) -> list[dict[str, Any]]:
    """Entries matching the filters, oldest first (at most ``limit``; 0 for all)."""
    start, end = _range(since, until)
    engine = open_engine(db_url)
    try:
        result = []
        for row in ledger.entries(
            engine,
            since=start,
            until=end,
            dataset=dataset,
            transition=transition,
            run_id=run_of(engine, run_id),
            record_pseudonym=record_pseudonym,
            subject_pseudonym=subject_pseudonym,
        ):
            result.append(row)
            if limit and len(result) >= limit:
                break
        return result
    finally:
        engine.dispose()


def ledger_export(db_url: str, fmt: str, output: Path | None, **filters: Any) -> int:
    import sys

    start, end = _range(filters.pop("since", None), filters.pop("until", None))
    converted = {"since": start, "until": end, **filters}
    engine = open_engine(db_url)
    try:
        converted["run_id"] = run_of(engine, converted.get("run_id"))
        if output is None:
            return ledger.export(engine, fmt, sys.stdout, **converted)
        return files.write_whole(output, lambda out: ledger.export(engine, fmt, out, **converted))
    finally:
        engine.dispose()


def ledger_lookup(
    db_url: str,
    *,
    dataset: str | None,
    record_key: str | None,
    subject_key: str | None,
    email: str | None = None,
) -> list[dict[str, Any]]:
    """Entries of one record (dataset and key), one subject or one e-mail address, found by their pseudonym."""
    if subject_key is None and email is None and (dataset is None or record_key is None):
        raise ConfigError("give --subject ID, --email ADDRESS, or --dataset and --key")
    if subject_key is not None and email is not None:
        raise ConfigError("give --subject or --email, not both (look each up in turn)")
    _one_selection("--subject" if subject_key is not None else "--email", subject_key or email, dataset, record_key)
    secret = pseudonyms.pseudonym_secret()
    from retention.ledger import items as ledger_items

    engine = open_engine(db_url)
    try:
        ledger_mac.refuse_other_key(engine, secret)
        with engine.connect() as conn:
            rows = ledger_items.lookup(
                conn, secret, dataset=dataset, record_key=record_key, subject_key=subject_key, email=email
            )
            backups.annotate(conn, rows)
            return rows
    finally:
        engine.dispose()


def ledger_checkpoint(db_url: str, key_file: Path | None) -> dict[str, Any]:
    key = ledger.load_signing_key(key_file)
    secret = configured_secret()
    engine = open_engine(db_url)
    try:
        return ledger.checkpoint(engine, key, utcnow(), secret=secret)
    finally:
        engine.dispose()


def ledger_audit(rules: Path, db_url: str, *, sample: int | None = None, dataset: str | None = None) -> Any:
    """The ledger's claims against the live tables (see :mod:`retention.reporting.ledger_audit`).

    ``--dataset`` must name a dataset of a pack under ``rules``: a typo selected no claim and the audit said
    "ok: 0 claims checked" with exit 0, an all-clear for a dataset it never looked at.
    """
    if dataset is not None:
        known = sorted({name for loaded in load_catalog(rules).packs for name in loaded.pack.datasets})  # any version
        if dataset not in known:
            raise ConfigError(
                f"--dataset: no dataset {dataset!r} in the packs under --rules; valid: {', '.join(known)}"
            )
    engine = open_engine(db_url)
    try:
        # Claims are found by pseudonym: under another key none is found, and each would read as a problem.
        ledger_mac.refuse_other_key(engine, pseudonyms.pseudonym_secret())
        return audit_claims_of(engine, rules, sample=sample, dataset=dataset)
    finally:
        engine.dispose()


def audit_claims_of(engine: Any, rules: Path, *, sample: int | None = None, dataset: str | None = None) -> Any:
    """:func:`ledger_audit` on an engine the caller holds (the console's read-only one)."""
    from retention.reporting import ledger_audit

    secret = pseudonyms.pseudonym_secret()
    return ledger_audit.audit(engine, newest_packs(rules), secret, sample=sample, dataset=dataset)


def ledger_keygen(key_file: Path) -> bytes:
    """A new signing key at ``key_file``; a file-system error is one line and leaves no empty key behind.

    Why: a key file created and then not written (a full disk) was a traceback, and the empty file then blocked
    the retry ("exists; refusing to overwrite").
    """
    try:
        return ledger.generate_signing_key(key_file)  # an existing key is refused (ConfigError), never touched
    except OSError as exc:
        with contextlib.suppress(OSError):
            key_file.unlink(missing_ok=True)  # it did not exist before: this call created it
        raise files.cannot_write(key_file, exc) from None


CHECKPOINT_BYTES = 1_000_000
PROOF_BYTES = 200_000_000


def _read_json(path: Path, what: str) -> Any:
    return read_json(path, what, CHECKPOINT_BYTES if what == "checkpoint" else PROOF_BYTES)


def _one_selection(person: str, value: str | None, dataset: str | None, record_key: str | None) -> None:
    """A person and a record together are refused: the person won and ``--dataset``/``--key`` were ignored.

    Why: ``ledger lookup --subject 7 --dataset orders --key 42`` listed subject 7's entries with exit 0, and a
    proof written for "order 42" proved something else; the reader could not tell which selection was used.
    """
    if value is not None and (dataset is not None or record_key is not None):
        given = " and ".join(n for n, v in (("--dataset", dataset), ("--key", record_key)) if v is not None)
        raise ConfigError(f"give {person} or --dataset with --key, not both: {given} would be ignored")


def ledger_prove(
    db_url: str,
    checkpoint_file: Path,
    *,
    dataset: str | None,
    record_key: str | None,
    subject_key: str | None,
) -> dict[str, Any]:
    """The inclusion proof of one record or subject up to a signed checkpoint (see :mod:`retention.ledger.proof`)."""
    from retention.ledger import proof as ledger_proof

    if subject_key is None and (dataset is None or record_key is None):
        raise ConfigError("give --subject ID, or --dataset and --key")
    _one_selection("--subject", subject_key, dataset, record_key)
    document = _read_json(checkpoint_file, "checkpoint")
    if not isinstance(document, dict):
        raise ConfigError(f"checkpoint {checkpoint_file} is not a checkpoint (a JSON object)")
    secret = pseudonyms.pseudonym_secret()
    engine = open_engine(db_url)
    try:
        ledger_mac.refuse_other_key(engine, secret)
        with engine.connect() as conn:
            return ledger_proof.build(
                conn, secret, document, dataset=dataset, record_key=record_key, subject_key=subject_key
            )
    finally:
        engine.dispose()


def ledger_verify_proof(
    proof_file: Path,
    public_key: Path | None,
    *,
    dataset: str | None = None,
    record_key: str | None = None,
    db_url: str | None = None,
    rules: Path | None = None,
) -> Any:
    """Check a proof file offline: no database, the signer's key as the verifier configured it.

    With ``db_url`` and ``rules`` (a database at hand), its purge and
    anonymisation claims are also checked against the live tables, as
    ``ledger audit`` does.
    """

    from retention.ledger import proof as ledger_proof

    public = ledger.configured_public_key(public_key)
    if (dataset is None) != (record_key is None):
        raise ConfigError("give both --dataset and --key to check which record the proof is about")
    if (db_url is None) != (rules is None):
        raise ConfigError("give both --db and --rules to check the proof's claims against the live tables")
    needs_key = record_key is not None or db_url is not None
    secret = pseudonyms.pseudonym_secret() if needs_key else configured_secret()
    text = read_bounded(proof_file, "proof", PROOF_BYTES)
    try:
        document = loads_bounded(text, "proof", proof_file)
    except ValueError:  # a damaged proof is a rejected one, not a usage error
        return ledger_proof.ProofResult(False, "the file is not JSON (damaged, or not a proof)")
    if db_url is None or rules is None or secret is None:
        return check_proof(document, public, secret, dataset=dataset, record_key=record_key)
    engine = open_engine(db_url)
    try:
        # Entries from before a ledger's first MAC (formats 1-2) pass the proof check without one, so the live
        # tables would be searched under whatever key is configured, and another key finds nothing and says "ok".
        ledger_mac.refuse_other_key(engine, secret)
        return check_proof(
            document, public, secret, dataset=dataset, record_key=record_key, engine=engine, packs=newest_packs(rules)
        )
    finally:
        engine.dispose()


def newest_packs(rules: Path) -> dict[str, Any]:
    """The newest version of each pack under ``rules``: the one that names the tables claims are checked in."""
    return {loaded.id: loaded for loaded in sorted(load_catalog(rules).packs, key=lambda p: p.pack.effective_from)}


def check_proof(
    document: Any,
    public: Any,
    secret: bytes | None,
    *,
    dataset: str | None = None,
    record_key: str | None = None,
    engine: Any = None,
    packs: dict[str, Any] | None = None,
) -> Any:
    """What ``verify-proof`` decides of a parsed proof; with ``engine`` and ``packs``, its claims against the data.

    Shared by the CLI and the console's person page, so both give one verdict in the same words.
    """
    from retention.ledger import proof as ledger_proof

    verdict = ledger_proof.verify(document, public, secret=secret, dataset=dataset, record_key=record_key)
    if not verdict.ok or engine is None or packs is None or secret is None:
        return verdict
    from retention.reporting import ledger_audit

    found = ledger_audit.audit_claims(engine, packs, secret, ledger_audit.proof_claims(document))
    if found.problems:
        return ledger_proof.ProofResult(False, f"the live data contradicts it: {found.problems[0]}")
    checked = f"{found.checked} claim(s) hold in the live tables" + (
        f"; not checked: {'; '.join(found.skipped)}" if found.skipped else ""
    )
    return ledger_proof.ProofResult(True, "", (*verdict.lines, checked))
