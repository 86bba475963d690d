"""The console's pages: one function per route, listed in :data:`ROUTES`.

Handlers read the engine's tables through ``console.reader`` (read-only) and
the ledger only through :mod:`retention.ledger.query`; they write only the
console's own tables and, for review decisions, call
:func:`retention.subjects.review.decide` as ``retention review approve`` does. A
looked-up id is turned into its pseudonym and dropped: it is not echoed on
the page, logged or stored.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from retention.engine import backups
from retention.engine.null_keys import NO_KEY, split_anomalies
from retention.errors import ConfigError, RetentionError
from retention.ledger import chain as ledger
from retention.ledger import query as ledger_query
from retention.store import tables as store
from retention.subjects import events as subjects
from retention.subjects import review
from retention.timing.clock import AsOf, utcnow
from retention.web import accounts
from retention.web.console import Console, Viewer
from retention.web.page_tools import (
    _loaded_pack,
    _pack_datasets,
    _pseudonym_secret,
    _see_other,
    _text,
    _unchecked_secret,
)
from retention.web.review_pages import forecast_page, review_decision, review_page, reviews_page
from retention.web.security import CSRF_COOKIE, SESSION_COOKIE, cookie_options

KNOWN_TRANSITIONS = (
    "active->inactive",
    "active->archived",
    "active->purged",
    "inactive->archived",
    "inactive->purged",
    "archived->purged",
    "hold_placed",
    "hold_released",
    "erasure_received",
    "erasure_extended",
    "erasure_processed",
    "erasure_mask",
    "review_approved",
    "review_rejected",
    "guard_overridden",
)


# --------------------------------------------------------------------------
# Sign-in
# --------------------------------------------------------------------------


def login_form(console: Console, request: Request, viewer: Viewer | None, form: FormData | None) -> Response:
    if viewer is not None:
        return _see_other("/")
    return console.render(request, "login.html", error=None)


def login(console: Console, request: Request, viewer: Viewer | None, form: FormData | None) -> Response:
    if console.settings.auth == "proxy":
        return console.render(request, "login.html", status_code=400, error="proxy")
    name, password = _text(form, "name"), (form.get("password") if form is not None else None)
    if not name or not isinstance(password, str) or not password:
        return console.render(request, "login.html", status_code=400, error="missing")
    with console.writer.begin() as conn:
        attempt = accounts.attempt_sign_in(conn, console.secret, name, password)
        if attempt.outcome == "throttled":
            accounts.log_access(conn, None, "sign_in_throttled")
            minutes = max(1, int((attempt.wait or dt.timedelta()).total_seconds() // 60) + 1)
            return console.render(request, "login.html", status_code=429, error="throttled", minutes=minutes)
        if attempt.outcome == "wrong" or attempt.account is None:
            accounts.log_access(conn, attempt.account, "sign_in_failed")
            return console.render(request, "login.html", status_code=401, error="wrong")
        accounts.log_access(conn, attempt.account, "sign_in", attempt.role)
    # A new session, and with it a new CSRF token bound to it: a token seen before sign-in is worth nothing after.
    token, csrf_cookie = console.signer.new_csrf()
    response = _see_other("/")
    options = cookie_options(console.signer.max_age)
    response.set_cookie(SESSION_COOKIE, console.signer.session_cookie(attempt.account, token), **options)
    response.set_cookie(CSRF_COOKIE, csrf_cookie, **options)
    return response


def logout(console: Console, request: Request, viewer: Viewer, form: FormData | None) -> Response:
    console.log_access(viewer, "sign_out")
    response = _see_other("/login")
    options = cookie_options(None)
    response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite=options["samesite"])
    return response


def healthz(console: Console, request: Request, viewer: Viewer | None, form: FormData | None) -> Response:
    with console.reader.connect() as conn:
        conn.execute(sa.select(1))
    return Response("ok\n", media_type="text/plain")


# --------------------------------------------------------------------------
# Overview
# --------------------------------------------------------------------------


def overview(console: Console, request: Request, viewer: Viewer, form: FormData | None) -> Response:
    now = utcnow()
    with console.reader.connect() as conn:
        runs = _runs(conn, limit=10)
        head_seq, head_hash, head_at = ledger_query.head(conn)
        requests = subjects.list_requests(conn, console.today())
        pending_reviews = [b for b in review.list_batches(conn) if b["status"] == "pending"]
    with console.writer.connect() as conn:
        verified = accounts.last_access(conn, "ledger_verified")
    checkpoint = _latest_checkpoint(console)
    return console.render(
        request,
        "overview.html",
        runs=runs,
        head_seq=head_seq,
        head_hash=head_hash,
        head_at=head_at,
        overdue=[r for r in requests if r["flag"] == "overdue"],
        due_soon=[r for r in requests if r["flag"] == "due soon"],
        pending_reviews=pending_reviews,
        verified=verified,
        checkpoint=checkpoint,
        checkpoint_age=(now - checkpoint["signed"]) if checkpoint and checkpoint.get("signed") else None,
        next_run=_next_run(console, now),
        now=now,
    )


def _next_run(console: Console, now: dt.datetime) -> dt.datetime | None:
    if not console.settings.schedule:
        return None
    from retention.ops.scheduler import trigger_for

    trigger = trigger_for(console.settings.schedule, console.settings.schedule_timezone)
    fire = trigger.get_next_fire_time(None, now)
    return fire.astimezone(dt.UTC) if fire is not None else None


# --------------------------------------------------------------------------
# Ledger
# --------------------------------------------------------------------------


def _filters(request: Request) -> tuple[ledger_query.LedgerFilters, dict[str, str], str | None]:
    """The ledger filters from the query string, the raw values (for the form) and an error."""
    raw = {k: request.query_params.get(k, "").strip() for k in ("since", "until", "dataset", "transition", "run")}
    error = None
    instants: dict[str, dt.datetime | None] = {"since": None, "until": None}
    for name in ("since", "until"):
        if raw[name]:
            try:
                instants[name] = AsOf.parse(raw[name]).resolve("UTC")
            except ValueError:
                error = f"“{name}” must be a date (YYYY-MM-DD) or an ISO 8601 instant"
    filters = ledger_query.LedgerFilters(
        since=instants["since"],
        until=instants["until"],
        dataset=raw["dataset"] or None,
        transition=raw["transition"] or None,
        run_id=raw["run"] or None,
    )
    return filters, raw, error


def _cursor(request: Request, name: str) -> int | None:
    value = request.query_params.get(name, "")
    return int(value) if value.isdigit() else None


def ledger_page(console: Console, request: Request, viewer: Viewer, form: FormData | None) -> Response:
    filters, raw, error = _filters(request)
    with console.reader.connect() as conn:
        result = ledger_query.page(conn, filters, before=_cursor(request, "before"), after=_cursor(request, "after"))
    return console.render(
        request,
        "ledger.html",
        page=result,
        raw=raw,
        error=error,
        query={k: v for k, v in raw.items() if v},
        datasets=_pack_datasets(console),
        transitions=KNOWN_TRANSITIONS,
    )


def ledger_export(console: Console, request: Request, viewer: Viewer, form: FormData | None) -> Response:
    fmt = request.query_params.get("format", "csv")
    if fmt not in ("csv", "jsonl"):
        return Response("format must be csv or jsonl\n", status_code=400, media_type="text/plain")
    filters, _, error = _filters(request)
    if error:
        return Response(error + "\n", status_code=400, media_type="text/plain")
    # Closed by the response's generator once sent (a with-block would close it before streaming).
    spool = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024, mode="w+", encoding="utf-8", newline="")  # noqa: SIM115
    with console.reader.connect() as conn:
        count = ledger_query.export(conn, fmt, spool, filters)  # type: ignore[arg-type]
    console.log_access(viewer, "ledger_exported", f"{count} entries as {fmt}")
    spool.seek(0)

    def chunks() -> Iterator[bytes]:
        try:
            while block := spool.read(64 * 1024):
                yield block.encode("utf-8")
        finally:
            spool.close()

    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    media = "text/csv" if fmt == "csv" else "application/x-ndjson"
    return StreamingResponse(
        chunks(),
        media_type=f"{media}; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="retention-ledger-{stamp}.{fmt}"'},
    )


# --------------------------------------------------------------------------
# Lookup
# --------------------------------------------------------------------------


def lookup_form(console: Console, request: Request, viewer: Viewer, form: FormData | None) -> Response:
    return console.render(
        request,
        "lookup.html",
        entries=None,
        kind="subject",
        dataset="",
        error=None if _pseudonym_secret(console) is not None else "nokey",
        datasets=_pack_datasets(console),
    )


def lookup(console: Console, request: Request, viewer: Viewer, form: FormData | None) -> Response:
    kind = _text(form, "kind") or "subject"
    dataset = _text(form, "dataset")
    key = _text(form, "key")
    context: dict[str, Any] = {"kind": kind, "dataset": dataset, "datasets": _pack_datasets(console), "entries": None}
    secret = _pseudonym_secret(console)
    if secret is None:
        return console.render(request, "lookup.html", status_code=503, error="nokey", **context)
    if kind not in ("subject", "record") or not key or (kind == "record" and not dataset):
        return console.render(request, "lookup.html", status_code=400, error="missing", **context)
    # The key goes no further than the pseudonym: it is not echoed, logged or stored.
    with console.reader.connect() as conn:
        if kind == "subject":
            entries = ledger_query.lookup(conn, secret, subject_key=key)
        else:
            entries = ledger_query.lookup(conn, secret, dataset=dataset, record_key=key)
        backups.annotate(conn, entries)
    console.log_access(viewer, f"lookup_{kind}", f"{len(entries)} entries")
    return console.render(request, "lookup.html", error=None, **{**context, "entries": entries})


# --------------------------------------------------------------------------
# Person: every dataset's state, the ledger timeline, a proof and its verdict
# --------------------------------------------------------------------------


def person_form(console: Console, request: Request, viewer: Viewer, form: FormData | None) -> Response:
    return console.render(
        request,
        "person.html",
        person=None,
        kind="subject",
        error=None if _pseudonym_secret(console) is not None else "nokey",
    )


def person_page(console: Console, request: Request, viewer: Viewer, form: FormData | None) -> Response:
    """The person as ``explain``, ``ledger lookup`` and ``ledger prove`` + ``verify-proof --db`` see them.

    The proof is built and verified here, on the server (the console runs
    no script in the browser): against the configured public key, the
    entries' MACs and the live tables. The page offers the same proof for
    download; the typed id goes no further than this request and an
    encrypted ticket for that button.
    """
    from retention.commands import person as people

    kind = _text(form, "kind") or "subject"
    key = _text(form, "key")
    context: dict[str, Any] = {"kind": kind, "person": None}
    secret = _pseudonym_secret(console)
    if secret is None:
        return console.render(request, "person.html", status_code=503, error="nokey", **context)
    loaded = _loaded_pack(console)
    if loaded is None:
        return console.render(request, "person.html", status_code=503, error="norules", **context)
    if kind not in ("subject", "email") or not key or len(key) > 320:
        return console.render(request, "person.html", status_code=400, error="missing", **context)
    named = {"subject_key": key} if kind == "subject" else {"email": key}
    when = utcnow()
    try:
        with console.reader.connect() as conn:
            found = people.person(conn, loaded, when, secret, **named)
    except ConfigError as exc:
        return console.render(request, "person.html", status_code=409, error="config", message=str(exc), **context)
    proof = _person_proof(console, secret, named) if found.entries else None
    console.log_access(viewer, f"person_{kind}", f"{len(found.entries)} entries")
    return console.render(
        request,
        "person.html",
        error=None,
        found=found,
        proof=proof,
        ticket=console.tickets.issue(viewer.name, kind, key),
        no_key=NO_KEY,
        **{**context, "person": found},
    )


def _person_proof(console: Console, secret: bytes, named: dict[str, str]) -> dict[str, Any]:
    """The person's proof up to the latest checkpoint and its verdict, or why there is none."""
    from retention.commands import check_proof, newest_packs
    from retention.commands import person as people

    checkpoint = _latest_checkpoint(console)
    public = _public_key(console)
    result: dict[str, Any] = {"problem": None, "checkpoint": checkpoint, "document": None, "verdict": None}
    if checkpoint is None:
        return {**result, "problem": "no checkpoint is configured (serve --checkpoints)"}
    try:
        with console.reader.connect() as conn:
            document = people.person_proof(conn, secret, checkpoint["document"], **named)
    except RetentionError as exc:
        return {**result, "problem": str(exc)}
    if public is None:
        return {**result, "document": document}
    packs = newest_packs(console.settings.rules) if console.settings.rules is not None else None
    verdict = check_proof(document, public, secret, engine=console.reader, packs=packs)
    return {**result, "document": document, "verdict": verdict}


def person_proof(console: Console, request: Request, viewer: Viewer, form: FormData | None) -> Response:
    """The proof file of the person a ticket names: byte for byte what ``ledger prove --output`` writes."""
    from retention.commands import person as people

    named = console.tickets.read(viewer.name, _text(form, "ticket"))
    secret = _pseudonym_secret(console)
    checkpoint = _latest_checkpoint(console)
    if named is None or secret is None or checkpoint is None:
        return Response(
            "This proof link has expired or is not yours; look the person up again.\n",
            status_code=400,
            media_type="text/plain",
        )
    kind, value = named
    who = {"subject_key": value} if kind == "subject" else {"email": value}
    try:
        with console.reader.connect() as conn:
            document = people.person_proof(conn, secret, checkpoint["document"], **who)
    except RetentionError as exc:
        return Response(str(exc) + "\n", status_code=409, media_type="text/plain")
    console.log_access(viewer, "proof_downloaded", f"{len(document['records'])} records")
    text = json.dumps(document, indent=1, sort_keys=True) + "\n"
    return Response(
        text.encode("utf-8"),
        media_type="application/json",
        headers={"content-disposition": f'attachment; filename="proof-to-entry-{int(checkpoint["seq"])}.json"'},
    )


# --------------------------------------------------------------------------
# Runs and certificates
# --------------------------------------------------------------------------


def _runs(conn: sa.Connection, limit: int) -> list[dict[str, Any]]:
    runs = store.runs
    rows = conn.execute(
        sa.select(runs).where(runs.c.mode == "run").order_by(runs.c.started_at.desc()).limit(limit)
    ).all()
    return [_run_view(dict(r._mapping)) for r in rows]


def _json(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _first_line(message: str) -> str:
    """A database error's first line: the DETAIL that follows may quote key values."""
    return message.split("\n", 1)[0].split("DETAIL:", 1)[0].strip()[:300]


def _run_view(run: dict[str, Any]) -> dict[str, Any]:
    counts = _json(run.get("counts")) or {}
    problems = _json(run.get("error"))
    run["counts_by_dataset"] = counts
    run["moved"] = sum(sum(per.values()) for per in counts.values())
    stored = _json(run.get("anomalies"))
    # Why erasure requests stayed open (rows with no key) is kept beside the anomalies: shown apart, as sentences.
    run["anomaly_counts"], open_requests = split_anomalies(stored if isinstance(stored, dict) else {})
    run["open_requests"] = [note.sentence for note in open_requests]
    run["override_list"] = _json(run.get("overrides")) or []
    if isinstance(problems, dict):
        run["problems"] = {str(k): _first_line(str(v)) for k, v in problems.items()}
    elif run.get("error"):
        run["problems"] = {"": _first_line(str(run["error"]))}
    else:
        run["problems"] = {}
    started, finished = run.get("started_at"), run.get("finished_at")
    run["duration"] = (finished - started).total_seconds() if started and finished else None
    return run


def runs_page(console: Console, request: Request, viewer: Viewer, form: FormData | None) -> Response:
    with console.reader.connect() as conn:
        runs = _runs(conn, limit=200)
    return console.render(request, "runs.html", runs=runs)


def _run(conn: sa.Connection, run_id: str) -> dict[str, Any] | None:
    runs = store.runs
    row = conn.execute(sa.select(runs).where(runs.c.id == run_id, runs.c.mode == "run")).first()
    return None if row is None else _run_view(dict(row._mapping))


def run_page(console: Console, request: Request, viewer: Viewer, form: FormData | None) -> Response:
    with console.reader.connect() as conn:
        run = _run(conn, request.path_params["run_id"])
        if run is None:
            return console.render(request, "missing.html", status_code=404, what="run")
        summary = ledger_query.run_summary(conn, run["id"])
    return console.render(request, "run.html", run=run, summary=summary)


def certificate(console: Console, request: Request, viewer: Viewer, form: FormData | None) -> Response:
    with console.reader.connect() as conn:
        run = _run(conn, request.path_params["run_id"])
        if run is None:
            return console.render(request, "missing.html", status_code=404, what="run")
        summary = ledger_query.run_summary(conn, run["id"])
        pv = store.policy_versions
        policy = conn.execute(
            sa.select(pv.c.pack_id, pv.c.version, pv.c.effective_from).where(pv.c.digest == run["pack_digest"])
        ).first()
        cover = _covering_checkpoint(console, conn, summary.last_seq) if summary.last_seq else None
        horizons = backups.run_horizons(conn, run["id"], run["pack_digest"])
    disposed = [line for line in summary.lines if "->" in (line["transition"] or "")]
    for line in disposed:
        line["backups"] = horizons.get((line["dataset"], line["transition"]))
    console.log_access(viewer, "certificate_viewed", f"{summary.entries} entries")
    return console.render(
        request,
        "certificate.html",
        run=run,
        summary=summary,
        disposed=disposed,
        events=[line for line in summary.lines if line not in disposed],
        policy=dict(policy._mapping) if policy else None,
        cover=cover,
        issued=utcnow(),
    )


def certificate_pdf(console: Console, request: Request, viewer: Viewer, form: FormData | None) -> Response:
    """The certificate as PDF, rendered by WeasyPrint when it is installed (``retention[pdf]``)."""
    try:
        import weasyprint
    except (ImportError, OSError):  # OSError: WeasyPrint present but Pango missing
        return Response(
            "PDF needs WeasyPrint (pip install 'retention[pdf]'); or print the certificate page from the browser.\n",
            status_code=501,
            media_type="text/plain",
        )
    page = certificate(console, request, viewer, form)
    if page.status_code != 200:
        return page
    # The stylesheet goes inline and the <link>s go, so WeasyPrint has nothing to fetch.
    css = (Path(__file__).parent / "static" / "console.css").read_text(encoding="utf-8")
    text = re.sub(r"<link [^>]*>", "", bytes(page.body).decode("utf-8"))
    text = text.replace("</head>", f"<style>{css}</style></head>", 1)
    pdf = weasyprint.HTML(string=text).write_pdf()
    run_id = request.path_params["run_id"]
    return Response(
        pdf,
        media_type="application/pdf",
        headers={"content-disposition": f'attachment; filename="certificate-{run_id[:36]}.pdf"'},
    )


# --------------------------------------------------------------------------
# Checkpoints (files written by `retention ledger checkpoint`, kept elsewhere)
# --------------------------------------------------------------------------


def _checkpoint_files(console: Console) -> list[Path]:
    where = console.settings.checkpoints
    if where is None:
        return []
    if where.is_dir():
        return sorted(p for p in where.iterdir() if p.suffix == ".json" and p.is_file())
    return [where] if where.is_file() else []


def _read_checkpoints(console: Console) -> list[dict[str, Any]]:
    documents = []
    for path in _checkpoint_files(console):
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            seq = int(document["seq"])
            signed = dt.datetime.fromisoformat(str(document["signed_at"]).replace("Z", "+00:00"))
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            continue
        documents.append({"document": document, "seq": seq, "signed": signed, "file": path.name})
    return sorted(documents, key=lambda d: (d["seq"], d["signed"]))


def _public_key(console: Console) -> Any:
    if console.settings.public_key is None:
        return None
    try:
        return ledger.public_key_from(console.settings.public_key)
    except ConfigError:  # checked when serve started; a file broken since shows checkpoints as not trusted
        return None


def _latest_checkpoint(console: Console) -> dict[str, Any] | None:
    documents = _read_checkpoints(console)
    if not documents:
        return None
    latest = documents[-1]
    public = _public_key(console)
    latest["trusted"] = public is not None and ledger.signature_valid(latest["document"], public)
    return latest


def _covering_checkpoint(console: Console, conn: sa.Connection, last_seq: int) -> dict[str, Any] | None:
    """The first checkpoint at or after ``last_seq``: its signature covers the run's entries."""
    for candidate in _read_checkpoints(console):
        if candidate["seq"] >= last_seq:
            public = _public_key(console)
            candidate["key_configured"] = public is not None
            candidate["signature_ok"] = public is not None and ledger.signature_valid(candidate["document"], public)
            candidate["hash_matches"] = ledger_query.hash_at(conn, candidate["seq"]) == candidate["document"].get(
                "hash"
            )
            return candidate
    return None


# --------------------------------------------------------------------------
# Registers: erasure requests, holds
# --------------------------------------------------------------------------


def erasure_page(console: Console, request: Request, viewer: Viewer, form: FormData | None) -> Response:
    secret = _pseudonym_secret(console)
    with console.reader.connect() as conn:
        requests = subjects.list_requests(conn, console.today(), include_closed=True)
    for item in requests:
        subject = item.pop("subject_key")
        item.pop("email", None)  # the console shows pseudonyms only
        mail = item.pop("email_pseudonym", None)
        if subject is not None:  # a minimised request keeps only its pseudonym (engine_retention)
            item["subject_pseudonym"] = ledger_query.pseudonym_of_subject(secret, str(subject)) if secret else None
        elif item.get("subject_pseudonym") is None and mail is not None:  # a request by e-mail alone
            item["subject_pseudonym"] = mail
    return console.render(request, "erasure.html", requests=requests, keyed=secret is not None)


def holds_page(console: Console, request: Request, viewer: Viewer, form: FormData | None) -> Response:
    secret = _pseudonym_secret(console)
    with console.reader.connect() as conn:
        holds = subjects.list_holds(conn, include_released=True)
    for hold in holds:
        subject, record = hold.pop("subject_key"), hold.pop("record_key")
        hold.pop("email", None)  # the console shows pseudonyms only
        mail = hold.pop("email_pseudonym", None)
        hold["pseudonym"] = hold.pop("subject_pseudonym", None) or mail  # a minimised hold keeps only this
        if secret and subject is not None:
            hold["pseudonym"] = ledger_query.pseudonym_of_subject(secret, str(subject))
        elif secret and record is not None and hold["dataset"]:
            hold["pseudonym"] = ledger_query.pseudonym_of_record(secret, hold["dataset"], str(record))
    return console.render(request, "holds.html", holds=holds, keyed=secret is not None)


# --------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------


def verify_page(console: Console, request: Request, viewer: Viewer, form: FormData | None) -> Response:
    with console.writer.connect() as conn:
        last = accounts.last_access(conn, "ledger_verified")
    return console.render(request, "verify.html", verdict=None, last=last, checkpoint=_latest_checkpoint(console))


def verify(console: Console, request: Request, viewer: Viewer, form: FormData | None) -> Response:
    checkpoint = _latest_checkpoint(console)
    public = _public_key(console)
    secret = _unchecked_secret(
        console
    )  # the MACs are checked under the key held; a failing one is named, as by the CLI
    if checkpoint is not None and public is not None:
        verdict = ledger.verify_checkpoint(console.reader, checkpoint["document"], public, secret=secret)
    else:
        verdict = ledger.verify(console.reader, secret=secret)
    outcome = (
        f"ok: {verdict.entries} entries"
        + (f", checkpoint of entry {checkpoint['seq']} holds" if public and checkpoint else "")
        if verdict.ok
        else f"broken at entry {verdict.first_bad_seq}"
    )
    console.log_access(viewer, "ledger_verified", outcome)
    with console.writer.connect() as conn:
        last = accounts.last_access(conn, "ledger_verified")
    return console.render(
        request,
        "verify.html",
        verdict=verdict,
        last=last,
        checkpoint=checkpoint,
        used_checkpoint=checkpoint is not None and public is not None,
    )


# --------------------------------------------------------------------------
# Ledger audit: the ledger's claims checked against the live tables
# --------------------------------------------------------------------------

AUDIT_SHOWN = 50  # problems listed on the page, as the CLI prints at most 50


def audit_page(console: Console, request: Request, viewer: Viewer, form: FormData | None) -> Response:
    with console.writer.connect() as conn:
        last = accounts.last_access(conn, "ledger_audited")
    return console.render(
        request,
        "audit.html",
        result=None,
        last=last,
        sample="",
        dataset="",
        error=None,
        datasets=_pack_datasets(console),
    )


def audit(console: Console, request: Request, viewer: Viewer, form: FormData | None) -> Response:
    """``retention ledger audit`` on the read-only connection: every claim (or a sample), named when it fails."""
    from retention.commands import audit_claims_of

    sample_text, dataset = _text(form, "sample"), _text(form, "dataset")
    context: dict[str, Any] = {"sample": sample_text, "dataset": dataset, "datasets": _pack_datasets(console)}
    sample = int(sample_text) if sample_text.isdigit() and 0 < int(sample_text) <= 10**9 else None
    rules = console.settings.rules
    error = None
    if _pseudonym_secret(console) is None:
        error = "nokey"
    elif rules is None:
        error = "norules"
    elif sample_text and sample is None:
        error = "sample"
    if error is not None or rules is None:
        with console.writer.connect() as conn:
            last = accounts.last_access(conn, "ledger_audited")
        return console.render(request, "audit.html", status_code=400, result=None, last=last, error=error, **context)
    result = audit_claims_of(console.reader, rules, sample=sample, dataset=dataset or None)
    outcome = f"{len(result.problems)} of {result.checked} claims do not hold" if result.problems else "ok"
    console.log_access(viewer, "ledger_audited", f"{outcome} ({result.checked} checked)")
    with console.writer.connect() as conn:
        last = accounts.last_access(conn, "ledger_audited")
    return console.render(
        request,
        "audit.html",
        status_code=200,
        result=result,
        shown=result.problems[:AUDIT_SHOWN],
        sampled=sample is not None,
        last=last,
        error=None,
        **context,
    )


# --------------------------------------------------------------------------
# Accounts and the access log (admins)
# --------------------------------------------------------------------------


def users_page(console: Console, request: Request, viewer: Viewer, form: FormData | None) -> Response:
    return _users(console, request, None, 200)


def _users(console: Console, request: Request, error: str | None, status: int) -> Response:
    with console.writer.connect() as conn:
        users = accounts.list_users(conn)
    return console.render(request, "users.html", status_code=status, users=users, roles=accounts.ROLES, error=error)


def user_add(console: Console, request: Request, viewer: Viewer, form: FormData | None) -> Response:
    name, role = _text(form, "name"), _text(form, "role")
    password = form.get("password") if form is not None else None
    try:
        with console.writer.begin() as conn:
            accounts.add_user(
                conn,
                name,
                role,
                password if isinstance(password, str) and password else None,
                created_by=viewer.name,
            )
            accounts.log_access(conn, viewer.name, "account_added", f"{name} ({role})")
    except ConfigError as exc:
        return _users(console, request, str(exc), 400)
    return _see_other("/users")


def user_disable(console: Console, request: Request, viewer: Viewer, form: FormData | None) -> Response:
    name = request.path_params["name"]
    try:
        with console.writer.begin() as conn:
            accounts.disable_user(conn, name)
            accounts.log_access(conn, viewer.name, "account_disabled", name)
    except ConfigError as exc:
        return _users(console, request, str(exc), 400)
    return _see_other("/users")


def access_log_page(console: Console, request: Request, viewer: Viewer, form: FormData | None) -> Response:
    with console.writer.connect() as conn:
        lines = accounts.access_log(conn, before=_cursor(request, "before"))
    return console.render(request, "access_log.html", lines=lines)


Page = Callable[[Console, Request, Any, FormData | None], Response]

# (method, path, least role or None for public, handler, name). The authorisation
# matrix test holds this table to its own expectations.
ROUTES: list[tuple[str, str, str | None, Page, str]] = [
    ("GET", "/login", None, login_form, "login_form"),
    ("POST", "/login", None, login, "login"),
    ("POST", "/logout", "auditor", logout, "logout"),
    ("GET", "/healthz", None, healthz, "healthz"),
    ("GET", "/", "auditor", overview, "overview"),
    ("GET", "/ledger", "auditor", ledger_page, "ledger"),
    ("GET", "/ledger/export", "auditor", ledger_export, "ledger_export"),
    ("GET", "/lookup", "auditor", lookup_form, "lookup_form"),
    ("POST", "/lookup", "auditor", lookup, "lookup"),
    ("GET", "/person", "auditor", person_form, "person_form"),
    ("POST", "/person", "auditor", person_page, "person"),
    ("POST", "/person/proof", "auditor", person_proof, "person_proof"),
    ("GET", "/runs", "auditor", runs_page, "runs"),
    ("GET", "/runs/{run_id}", "auditor", run_page, "run"),
    ("GET", "/runs/{run_id}/certificate", "auditor", certificate, "certificate"),
    ("GET", "/runs/{run_id}/certificate.pdf", "auditor", certificate_pdf, "certificate_pdf"),
    ("GET", "/erasure", "auditor", erasure_page, "erasure"),
    ("GET", "/holds", "auditor", holds_page, "holds"),
    ("GET", "/reviews", "auditor", reviews_page, "reviews"),
    ("GET", "/reviews/{batch_id:int}", "auditor", review_page, "review"),
    ("POST", "/reviews/{batch_id:int}/decision", "approver", review_decision, "review_decision"),
    ("GET", "/forecast", "auditor", forecast_page, "forecast"),
    ("GET", "/verify", "auditor", verify_page, "verify_form"),
    ("POST", "/verify", "auditor", verify, "verify"),
    ("GET", "/audit", "auditor", audit_page, "audit_form"),
    ("POST", "/audit", "auditor", audit, "audit"),
    ("GET", "/users", "admin", users_page, "users"),
    ("POST", "/users", "admin", user_add, "user_add"),
    ("POST", "/users/{name}/disable", "admin", user_disable, "user_disable"),
    ("GET", "/access-log", "admin", access_log_page, "access_log"),
]
