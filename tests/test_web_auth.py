"""Console authorisation: every route x every role, CSRF, throttling, proxy sign-in, read-only reads."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from console_world import (
    PASSWORD,
    USERS,
    XSS_REVIEWED,
    World,
    client,
    csrf_of,
    sign_in,
)

from retention.cli import main
from retention.store import migrate
from retention.store import tables as store
from retention.subjects import review
from retention.web import create_app
from retention.web.console import Console, ConsoleSettings
from retention.web.database import read_only_engine

ROLES = ("anonymous", "auditor", "approver", "admin")


def _pdf_status() -> int:
    """200 where WeasyPrint renders here, else the 501 that names the extra to install."""
    try:
        import weasyprint  # noqa: F401
    except (ImportError, OSError):
        return 501
    return 200


PDF = _pdf_status()
A = "/login"  # where anonymous visitors of a page are sent


def expected_matrix(w: World, other_review: int) -> list[tuple[str, str, str, dict[str, Any], dict[str, int]]]:
    """(method, route, path, form, status per role), written out by hand: the policy under test."""
    page = {"anonymous": 303, "auditor": 200, "approver": 200, "admin": 200}
    admin_page = {"anonymous": 303, "auditor": 403, "approver": 403, "admin": 200}
    post = {"anonymous": 401, "auditor": 200, "approver": 200, "admin": 200}
    public = dict.fromkeys(ROLES, 200)
    return [
        ("GET", "/login", "/login", {}, {"anonymous": 200, "auditor": 303, "approver": 303, "admin": 303}),
        ("POST", "/login", "/login", {"name": "nobody", "password": "wrong password!"}, dict.fromkeys(ROLES, 401)),
        ("GET", "/healthz", "/healthz", {}, public),
        ("GET", "/static/console.css", "/static/console.css", {}, public),
        ("GET", "/", "/", {}, page),
        ("GET", "/ledger", "/ledger", {}, page),
        ("GET", "/ledger", "/ledger?dataset=customers&since=2026-01-01", {}, page),
        ("GET", "/ledger/export", "/ledger/export?format=csv", {}, page),
        ("GET", "/ledger/export", "/ledger/export?format=jsonl", {}, page),
        ("GET", "/lookup", "/lookup", {}, page),
        ("POST", "/lookup", "/lookup", {"kind": "subject", "key": "7"}, post),
        ("GET", "/person", "/person", {}, page),
        ("POST", "/person", "/person", {"kind": "subject", "key": "7"}, post),
        (
            "POST",
            "/person/proof",
            "/person/proof",
            {"ticket": "not-a-ticket"},
            {"anonymous": 401, "auditor": 400, "approver": 400, "admin": 400},
        ),
        ("GET", "/runs", "/runs", {}, page),
        ("GET", "/runs/{run_id}", f"/runs/{w.run_id}", {}, page),
        ("GET", "/runs/{run_id}/certificate", f"/runs/{w.run_id}/certificate", {}, page),
        (
            "GET",
            "/runs/{run_id}/certificate.pdf",
            f"/runs/{w.run_id}/certificate.pdf",
            {},
            {**page, **{r: PDF for r in ("auditor", "approver", "admin")}},
        ),
        ("GET", "/erasure", "/erasure", {}, page),
        ("GET", "/holds", "/holds", {}, page),
        ("GET", "/reviews", "/reviews", {}, page),
        ("GET", "/reviews/{batch_id:int}", f"/reviews/{w.review_id}", {}, page),
        # Approvers and admins decide; the approver decides first, so the admin finds the batch decided (409).
        (
            "POST",
            "/reviews/{batch_id:int}/decision",
            f"/reviews/{w.review_id}/decision",
            {"decision": "approve", "reason": "period over"},
            {"anonymous": 401, "auditor": 403, "approver": 303, "admin": 409},
        ),
        (
            "POST",
            "/reviews/{batch_id:int}/decision",
            f"/reviews/{other_review}/decision",
            {"decision": "reject", "reason": "keep for the audit"},
            {"anonymous": 401, "auditor": 403, "approver": 303, "admin": 409},
        ),
        ("GET", "/forecast", "/forecast", {}, page),
        ("GET", "/verify", "/verify", {}, page),
        ("POST", "/verify", "/verify", {}, post),
        ("GET", "/audit", "/audit", {}, page),
        ("POST", "/audit", "/audit", {"sample": "20"}, post),
        ("GET", "/users", "/users", {}, admin_page),
        (
            "POST",
            "/users",
            "/users",
            {"name": "dries.new", "role": "auditor", "password": "a long enough password"},
            {"anonymous": 401, "auditor": 403, "approver": 403, "admin": 303},
        ),
        (
            "POST",
            "/users/{name}/disable",
            "/users/dries.new/disable",
            {},
            {"anonymous": 401, "auditor": 403, "approver": 403, "admin": 303},
        ),
        ("GET", "/access-log", "/access-log", {}, admin_page),
        ("POST", "/logout", "/logout", {}, {"anonymous": 401, "auditor": 303, "approver": 303, "admin": 303}),
    ]


def snapshot(engine: sa.Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table but the console's own, in a stable order."""
    tables: dict[str, list[tuple[Any, ...]]] = {}
    md = sa.MetaData()
    md.reflect(engine)
    with engine.connect() as conn:
        for name, table in md.tables.items():
            if name.startswith("retention_console_") or name == "alembic_version":
                continue
            rows = conn.execute(sa.select(table)).all()
            tables[name] = sorted((tuple(r) for r in rows), key=repr)
    return tables


def test_authorisation_matrix(world: World, migrated: sa.Engine) -> None:
    """Every route x {anonymous, auditor, approver, admin}: expected status; no CSRF token: refused; no data changed."""
    app = create_app(world.settings)
    with migrated.connect() as conn:
        other = next(b["id"] for b in review.list_batches(conn) if b["dataset"] == XSS_REVIEWED)
    matrix = expected_matrix(world, other)
    registered = {(m, r.path) for r in app.routes if hasattr(r, "methods") for m in (r.methods or ()) if m != "HEAD"}
    assert registered - {(m, route) for m, route, *_ in matrix} == set(), "a route has no row in the matrix"
    before = snapshot(migrated)
    clients = {"anonymous": client(app), **{role: sign_in(app, role) for role in ("auditor", "approver", "admin")}}
    tokens = {role: csrf_of(c) for role, c in clients.items()}
    seen: list[tuple[str, str, str, int, int]] = []
    for method, _route, path, form, statuses in matrix:
        for role in ROLES:
            c = clients[role]
            if method == "POST":
                refused = c.post(path, data=form)  # no CSRF token at all
                forged = c.post(path, data={**form, "csrf_token": "forged"})
                assert refused.status_code == 403, (role, path, "without CSRF")
                assert forged.status_code == 403, (role, path, "forged CSRF")
                response = c.post(path, data={**form, "csrf_token": tokens[role]})
            else:
                response = c.get(path)
            seen.append((method, path, role, response.status_code, statuses[role]))
            if statuses[role] == 303 and role == "anonymous" and method == "GET":
                assert response.headers["location"] == A
    wrong = [s for s in seen if s[3] != s[4]]
    assert wrong == []
    after = snapshot(migrated)
    # The only change to application data: the two review decisions and their two ledger entries.
    ledger_name = store.ledger.name
    decided = store.review_batches.name
    assert {k: v for k, v in after.items() if k not in (ledger_name, decided)} == {
        k: v for k, v in before.items() if k not in (ledger_name, decided)
    }
    new_entries = [e for e in after[ledger_name] if e not in before[ledger_name]]
    assert sorted(e[6] for e in new_entries) == ["review_approved", "review_rejected"]
    assert all(e in after[ledger_name] for e in before[ledger_name])
    with migrated.connect() as conn:
        statuses = {b["id"]: (b["status"], b["decided_by"]) for b in review.list_batches(conn, include_done=True)}
    assert statuses[world.review_id] == ("approved", USERS["approver"])
    assert statuses[other] == ("rejected", USERS["approver"])


def test_read_only_connection_refuses_writes(world: World) -> None:
    """The console's reading engine cannot write, whatever the database."""
    engine = read_only_engine(world.db_url)
    try:
        with pytest.raises(sa.exc.DBAPIError), engine.begin() as conn:
            conn.execute(store.holds.delete())
        with engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(store.holds)).scalar_one() == 2
    finally:
        engine.dispose()


def test_login_throttled_after_five_failures(world: World) -> None:
    """Five wrong passwords lock the account name for 15 minutes, even with the right password after."""
    app = create_app(world.settings)
    c = client(app)
    token = csrf_of(c)
    for _ in range(5):
        wrong = c.post("/login", data={"csrf_token": token, "name": USERS["auditor"], "password": "not it at all"})
        assert wrong.status_code == 401
        assert "Wrong account name or password." in wrong.text
    right = c.post("/login", data={"csrf_token": token, "name": USERS["auditor"], "password": PASSWORD})
    assert right.status_code == 429
    assert "Too many failed sign-ins for this account. Try again in 15 minutes." in right.text
    assert "retention_session" not in right.headers.get("set-cookie", "")
    other = c.post("/login", data={"csrf_token": token, "name": USERS["approver"], "password": PASSWORD})
    assert other.status_code == 303


def test_disabled_account_loses_its_session(world: World, migrated: sa.Engine) -> None:
    """Disabling an account ends its open session at the next request."""
    app = create_app(world.settings)
    c = sign_in(app, "auditor")
    assert c.get("/ledger").status_code == 200
    runner = CliRunner()
    result = runner.invoke(main, ["user", "disable", USERS["auditor"], "--db", world.db_url])
    assert result.exit_code == 0, result.output
    assert result.output == f"account {USERS['auditor']} disabled\n"
    assert c.get("/ledger").status_code == 303


def test_session_cookie_attributes_and_tampering(world: World) -> None:
    """The session cookie is HttpOnly, Secure, SameSite=Strict; a tampered one is ignored."""
    app = create_app(world.settings)
    c = client(app)
    token = csrf_of(c)
    response = c.post("/login", data={"csrf_token": token, "name": USERS["admin"], "password": PASSWORD})
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("retention_session=")
    for attribute in ("HttpOnly", "Secure", "SameSite=strict", "Path=/"):
        assert attribute in cookie
    value = cookie.split(";")[0].split("=", 1)[1]
    forged = client(app)
    forged.cookies.set("retention_session", value.replace(value[-3:], "AAA"), domain="testserver")
    assert forged.get("/").status_code == 303
    page = c.get("/")
    for header, expected in (
        ("content-security-policy", "script-src 'none'"),
        ("x-frame-options", "DENY"),
        ("cache-control", "no-store"),
    ):
        assert expected in page.headers[header]


def test_proxy_auth_trusts_only_configured_addresses(world: World) -> None:
    """With --auth proxy the user header counts only from a trusted proxy, and only for enabled accounts."""
    from dataclasses import replace

    settings = replace(world.settings, auth="proxy", trusted_proxies=("10.1.2.0/24",))
    app = create_app(settings)
    header = {"X-Forwarded-User": USERS["approver"]}
    trusted = client(app, "10.1.2.3")
    untrusted = client(app, "10.9.9.9")
    assert trusted.get("/ledger", headers=header).status_code == 200
    refused = untrusted.get("/ledger", headers=header)
    assert refused.status_code == 401
    assert "accepts only requests signed in by its authenticating proxy" in refused.text
    assert trusted.get("/ledger", headers={"X-Forwarded-User": "unknown.person"}).status_code == 401
    assert trusted.get("/ledger").status_code == 401
    assert trusted.get("/users", headers=header).status_code == 403
    login = trusted.get("/login")
    assert "signs you in through your organisation's proxy" in login.text


def test_proxy_auth_needs_a_trusted_proxy(world: World) -> None:
    """Starting in proxy mode without a trusted address is a configuration error naming the option."""
    from retention.errors import ConfigError

    with pytest.raises(ConfigError, match="--auth proxy needs at least one --trusted-proxy"):
        Console(ConsoleSettings(db_url=world.db_url, auth="proxy"))


def test_user_commands(migrated: sa.Engine, db_url: str) -> None:
    """user add / list / disable print what a person needs; bad input exits 2 with a sentence."""
    runner = CliRunner()
    added = runner.invoke(
        main,
        ["user", "add", "emma", "--role", "approver", "--password-stdin", "--db", db_url],
        input="a long enough password\n",
    )
    assert added.exit_code == 0, added.output
    assert added.output == "account emma added as approver (signs in with a password)\n"
    proxy = runner.invoke(main, ["user", "add", "farid", "--role", "admin", "--no-password", "--db", db_url])
    assert proxy.output == "account farid added as admin (signs in through the proxy)\n"
    short = runner.invoke(
        main, ["user", "add", "greta", "--role", "auditor", "--password-stdin", "--db", db_url], input="short\n"
    )
    assert short.exit_code == 2
    assert short.output == "error: a console password needs at least 12 characters\n"
    again = runner.invoke(main, ["user", "add", "farid", "--role", "admin", "--no-password", "--db", db_url])
    assert again.exit_code == 2
    assert again.output == "error: account farid exists; disable it first or choose another name\n"
    listed = runner.invoke(main, ["user", "list", "--format", "json", "--db", db_url])
    rows = json.loads(listed.output)
    assert [(r["name"], r["role"], r["has_password"], r["disabled_at"]) for r in rows] == [
        ("emma", "approver", True, None),
        ("farid", "admin", False, None),
    ]
    last_admin = runner.invoke(main, ["user", "disable", "farid", "--db", db_url])
    assert last_admin.exit_code == 2
    assert last_admin.output == "error: account farid is the last active admin; add another admin first\n"
    with migrated.connect() as conn:
        stored = conn.execute(sa.select(store.console_users.c.password_hash)).scalars().all()
    assert any(h and h.startswith("$argon2id$") for h in stored)
    assert not any(h and "a long enough password" in h for h in stored)


def test_access_log_names_kind_never_the_id(world: World, migrated: sa.Engine) -> None:
    """A lookup and a decision are logged with who, when and what kind, and no looked-up id."""
    app = create_app(world.settings)
    c = sign_in(app, "approver")
    token = csrf_of(c)
    canary = "canary-subject-4711"
    assert c.post("/lookup", data={"csrf_token": token, "kind": "subject", "key": canary}).status_code == 200
    c.post(
        f"/reviews/{world.review_id}/decision",
        data={"csrf_token": token, "decision": "approve", "reason": "period over"},
    )
    with migrated.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.select(store.console_access_log))]
    kinds = [(r["user_name"], r["kind"], r["outcome"]) for r in rows]
    assert (USERS["approver"], "lookup_subject", "0 entries") in kinds
    assert (USERS["approver"], "review_approved", f"batch {world.review_id}") in kinds
    assert (USERS["approver"], "sign_in", "approver") in kinds
    assert all(isinstance(r["at"], dt.datetime) for r in rows)
    assert canary not in repr(rows)


def test_serve_refuses_bad_settings_with_a_sentence(engine: sa.Engine, db_url: str) -> None:
    """`retention serve` on a database without the engine's tables, or proxy mode without a proxy, exits 2."""
    with engine.connect():  # an empty database; a SQLite path naming no file is refused before (test_cli_hostile)
        pass
    runner = CliRunner()
    empty = runner.invoke(main, ["serve", "--db", db_url])
    assert empty.exit_code == 2
    assert empty.output.splitlines()[-1] == (
        f"error: the engine's tables are at revision none, not {migrate.head_revision()}; run: retention db upgrade"
    )
    proxy = runner.invoke(main, ["serve", "--db", db_url, "--auth", "proxy"])
    assert proxy.exit_code == 2
    assert proxy.output.splitlines()[-1] == "error: --auth proxy needs at least one --trusted-proxy address or network"
    bad = runner.invoke(main, ["serve", "--db", db_url, "--auth", "proxy", "--trusted-proxy", "10.0.0.300"])
    assert bad.exit_code == 2
    assert bad.output.splitlines()[-1].startswith("error: --trusted-proxy: ")


def test_passwords_are_hashed_at_argon2id_default_cost_outside_the_test_process() -> None:
    """The console's own hasher, in a process the tests did not touch: argon2id at argon2-cffi's default cost.

    tests/conftest.py lowers the cost in the test process (RETENTION_TEST_ARGON2); this pins what users get.
    """
    import subprocess
    import sys

    probe = "from retention.web import accounts; print(accounts.hash_password('a long enough password'))"
    made = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert made.stdout.startswith("$argon2id$v=19$m=65536,t=3,p=4$")


def test_a_review_decision_under_another_key_is_a_page_message(
    world: World, migrated: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The console holding another key than the ledger's: the decision is refused on the page (503), not written.

    It used to write the approval under that key; the check then accepted the wrong key for every command.
    503 since keycheck3: the review page itself needs the key (its pseudonyms), so it refuses before the decision.
    """
    app = create_app(world.settings)
    c = sign_in(app, "approver")
    token = csrf_of(c)
    count = sa.select(sa.func.count()).select_from(store.ledger)
    with migrated.connect() as conn:
        before = conn.execute(count).scalar_one()
    monkeypatch.setenv("RETENTION_PSEUDONYM_KEY", "another-environments-key")
    page = c.post(
        f"/reviews/{world.review_id}/decision",
        data={"csrf_token": token, "decision": "approve", "reason": "period over"},
    )
    assert page.status_code == 503
    assert "is not the one this database&#39;s ledger was begun with" in page.text
    with migrated.connect() as conn:
        assert conn.execute(count).scalar_one() == before
        assert review.show_batch(conn, world.review_id)[0]["status"] == "pending"
