"""Console sign-in against the review's attacks (issue 28): name spellings, parallel guesses, CSRF tokens.

On MariaDB the default collation is accent-insensitive: `äppr`, `áppr` and
`ÄPPR` found the account `appr`, each with five fresh guesses, and the
session kept the spelling typed. 20 parallel wrong passwords were 18 checks
against a limit of 5. A CSRF token lived on across sign-in and was bound to
no session.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.testclient import TestClient

from retention.errors import ConfigError
from retention.store import tables as store
from retention.web import accounts, create_app
from retention.web.console import ConsoleSettings

PASSWORD = "a long enough password"
CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def app(migrated: sa.Engine, db_url: str) -> Starlette:
    with migrated.begin() as conn:
        accounts.add_user(conn, "appr", "approver", PASSWORD, created_by="test")
        accounts.add_user(conn, "other", "auditor", PASSWORD, created_by="test")
    return create_app(ConsoleSettings(db_url=db_url, secret=b"s" * 32))


def client(app: Starlette) -> TestClient:
    return TestClient(app, base_url="https://testserver", follow_redirects=False)


def token_of(c: TestClient, path: str = "/login") -> str:
    match = CSRF_INPUT.search(c.get(path).text)
    assert match is not None
    return match.group(1)


def try_sign_in(c: TestClient, name: str, password: str, token: str | None = None) -> int:
    data = {"csrf_token": token or token_of(c), "name": name, "password": password}
    return c.post("/login", data=data).status_code


def test_spellings_of_one_account_share_its_throttle(app: Starlette, migrated: sa.Engine) -> None:
    """Case and full-width forms are the account (and its throttle); accented forms name no account at all."""
    c = client(app)
    for _ in range(5):
        assert try_sign_in(c, "appr", "not the password") == 401
    for spelling in ("APPR", "Appr", "ａｐｐｒ", " appr "):
        assert try_sign_in(c, spelling, PASSWORD) == 429, spelling
    for spelling in ("äppr", "áppr", "ÄPPR", "ăppr", "appr\u0301"):
        assert try_sign_in(c, spelling, PASSWORD) == 401, spelling  # the right password, and still no way in


def test_a_session_names_the_account_not_the_spelling(app: Starlette, migrated: sa.Engine) -> None:
    c = client(app)
    assert try_sign_in(c, "ＡＰＰＲ", PASSWORD) == 303
    assert c.get("/").status_code == 200
    with migrated.connect() as conn:
        names = conn.execute(
            sa.select(store.console_access_log.c.user_name).where(store.console_access_log.c.kind == "sign_in")
        ).scalars()
        assert list(names) == ["appr"]


def test_account_names_are_unique_once_normalised(migrated: sa.Engine) -> None:
    with migrated.begin() as conn:
        assert accounts.add_user(conn, "Zoe.Admin", "admin", PASSWORD, created_by="test") == "zoe.admin"
    for twin in ("ZOE.ADMIN", "ｚｏｅ.admin"):
        with migrated.begin() as conn, pytest.raises(ConfigError, match=r"account zoe\.admin exists"):
            accounts.add_user(conn, twin, "admin", PASSWORD, created_by="test")
    with migrated.begin() as conn, pytest.raises(ConfigError, match="an account name is 1-100 letters"):
        accounts.add_user(conn, "zöe", "admin", PASSWORD, created_by="test")


def test_twenty_parallel_wrong_passwords_check_at_most_the_limit(app: Starlette, migrated: sa.Engine) -> None:
    """Each attempt is counted before its password is checked, under the account's lock."""
    clients = [client(app) for _ in range(20)]
    tokens = [token_of(c) for c in clients]
    with ThreadPoolExecutor(max_workers=20) as pool:
        codes = list(
            pool.map(
                lambda pair: try_sign_in(pair[0], "appr", "wrong guess!!", pair[1]), zip(clients, tokens, strict=True)
            )
        )
    assert sorted(set(codes)) <= [401, 429], codes
    assert codes.count(401) <= accounts.THROTTLE_FAILURES, codes
    assert codes.count(401) + codes.count(429) == 20
    with migrated.connect() as conn:
        checked = conn.execute(sa.select(sa.func.count()).select_from(store.console_login_failures)).scalar_one()
    assert checked == codes.count(401)


def test_the_csrf_token_is_new_at_sign_in(app: Starlette) -> None:
    """A token seen before sign-in (planted, or read off the sign-in page) is refused once signed in."""
    c = client(app)
    before = token_of(c)
    assert try_sign_in(c, "appr", PASSWORD, before) == 303
    assert c.post("/verify", data={"csrf_token": before}).status_code == 403
    after = token_of(c, "/verify")
    assert after != before
    assert c.post("/verify", data={"csrf_token": after}).status_code == 200


def _replace_cookie(c: TestClient, name: str, value: str) -> None:
    """Put ``value`` in place of the client's own cookie ``name`` (same domain and path: one cookie, not two)."""
    own = [cookie for cookie in c.cookies.jar if cookie.name == name]
    assert len(own) == 1, own
    c.cookies.set(name, value, domain=own[0].domain, path=own[0].path)
    assert [cookie.value for cookie in c.cookies.jar if cookie.name == name] == [value]


def test_a_csrf_token_of_another_session_is_refused(app: Starlette) -> None:
    """Session B holding session A's token and A's CSRF cookie (and no other): refused; the token is A's session's.

    A double-submit token alone (cookie equals form field) would let B in: the
    pair is consistent. Only a token bound to the session cookie refuses it.
    An earlier version of this test set A's cookie beside B's own (another
    cookie domain), so B's own cookie was the one read and the test passed
    without the binding too.
    """
    a, b = client(app), client(app)
    assert try_sign_in(a, "appr", PASSWORD) == 303
    assert try_sign_in(b, "other", PASSWORD) == 303
    stolen = token_of(a, "/verify")
    _replace_cookie(b, "retention_csrf", a.cookies["retention_csrf"])
    assert b.post("/verify", data={"csrf_token": stolen}).status_code == 403
    assert b.post("/verify", data={"csrf_token": token_of(b, "/verify")}).status_code == 200


def test_a_post_from_another_origin_is_refused(app: Starlette) -> None:
    c = client(app)
    assert try_sign_in(c, "appr", PASSWORD) == 303
    token = token_of(c, "/verify")
    for header in ({"origin": "https://evil.example"}, {"referer": "https://evil.example/page"}, {"origin": "null"}):
        assert c.post("/verify", data={"csrf_token": token}, headers=header).status_code == 403, header
    same = c.post("/verify", data={"csrf_token": token}, headers={"origin": "https://testserver"})
    assert same.status_code == 200
