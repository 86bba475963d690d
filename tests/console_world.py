"""A populated database for the console's tests: the demo shop after a run, and a hostile pack.

The shop runs under the marketplace pack with ``review: true`` on payment
tokens (so a review batch waits), plus a hold, an erasure request, a signed
checkpoint and three console accounts. A second pack names a dataset and a
basis with ``<script>`` and quotes, so every page shows text a careless
template would execute.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from starlette.applications import Starlette
from starlette.testclient import TestClient

from retention.demo import PII_COLUMNS, build_shop
from retention.engine import execute
from retention.ledger import chain as ledger
from retention.policy import LoadedPack, load_file
from retention.subjects import events as subjects
from retention.web import ConsoleSettings, accounts

ROOT = Path(__file__).resolve().parent.parent
SECRET = b"console-test-pseudonym-key"
PASSWORD = "correct horse battery staple"
USERS = {"auditor": "ada.auditor", "approver": "bruno.approver", "admin": "chloe.admin"}
AS_OF = dt.datetime(2026, 11, 2, 3, tzinfo=dt.UTC)
SHOP_END = dt.date(2026, 11, 1)

XSS_DATASET = "notes<script>window.xss=1</script>\"'"
XSS_BASIS = 'Basis "quoted" \'single\' <script>window.xss=2</script><img src=x onerror="window.xss=3">'
XSS_REASON = 'hold <script>window.xss=4</script> "why"'
XSS_REVIEWED = "reviewed<script>window.xss=5</script>\"'"
TS = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


@dataclass
class World:
    """What the console tests need to know about the populated database."""

    db_url: str
    settings: ConsoleSettings
    run_id: str
    xss_run_id: str
    review_id: int
    customer_with_entries: int
    pii: set[str]
    signing_key: Path


def review_pack(tmp_path: Path) -> LoadedPack:
    """The marketplace pack with disposition review on payment tokens and backups kept 35 days."""
    text = (ROOT / "rules" / "marketplace.yaml").read_text(encoding="utf-8")
    text = text.replace("  payment_tokens:\n", "  payment_tokens:\n    review: true\n", 1)
    # Small batches: ledger v2 writes one entry per batch, and the ledger pages need many entries.
    text = text.replace("timezone: Europe/Paris\n", "timezone: Europe/Paris\nbatch_size: 3\n", 1)
    # Backups kept 35 days: certificates and lookups state when purged records leave them.
    text = text.replace("guard:\n  max_share: 0.2\n", "guard:\n  max_share: 0.2\nbackups:\n  kept_for: P35D\n", 1)
    path = tmp_path / "marketplace-review.yaml"
    path.write_text(text, encoding="utf-8")
    return load_file(path)


def xss_pack(tmp_path: Path) -> LoadedPack:
    """A pack whose dataset name and basis are hostile HTML."""
    text = f"""pack: hostile
version: "1"
effective_from: 2020-01-01
timezone: UTC
guard:
  max_share: 1.0
datasets:
  {json.dumps(XSS_DATASET)}:
    table: notes
    key: id
    subject_key: owner
    basis: {json.dumps(XSS_BASIS)}
    keep:
      - clock: {{column: created_at, type: timestamptz}}
        period: P1Y
    lifecycle:
      - to: purged
        action: delete
  {json.dumps(XSS_REVIEWED)}:
    table: reviewed_notes
    key: id
    subject_key: owner
    basis: {json.dumps(XSS_BASIS)}
    review: true
    keep:
      - clock: {{column: created_at, type: timestamptz}}
        period: P1Y
    lifecycle:
      - to: purged
        action: delete
"""
    path = tmp_path / "hostile.yaml"
    path.write_text(text, encoding="utf-8")
    return load_file(path)


def _notes(engine: sa.Engine) -> None:
    md = sa.MetaData()
    tables = [
        sa.Table(
            name,
            md,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("owner", sa.Integer),
            sa.Column("created_at", TS, index=True),
        )
        for name in ("notes", "reviewed_notes")
    ]
    md.drop_all(engine)
    md.create_all(engine)
    base = dt.datetime(2023, 1, 10, tzinfo=dt.UTC)
    with engine.begin() as conn:
        for notes in tables:
            conn.execute(
                notes.insert(),
                [
                    {
                        "id": i,
                        "owner": i,
                        "created_at": (base + dt.timedelta(days=20 * i)).replace(
                            tzinfo=dt.UTC if engine.dialect.name == "postgresql" else None
                        ),
                    }
                    for i in range(1, 9)
                ],
            )


def pii_values(engine: sa.Engine) -> set[str]:
    """Every value of a personal-data column of the shop, as text."""
    from retention.demo import shop_metadata

    md = shop_metadata()
    values: set[str] = set()
    with engine.connect() as conn:
        for table, columns in PII_COLUMNS.items():
            for row in conn.execute(sa.select(*(md.tables[table].c[c] for c in columns))):
                values.update(str(v) for v in row if v is not None)
    return values


def build_world(engine: sa.Engine, db_url: str, tmp_path: Path, customers: int = 60) -> World:
    """Shop, runs, review batches, hold, erasure request, checkpoint, accounts."""
    build_shop(engine, seed=11, customers=customers, end=SHOP_END)
    pii = pii_values(engine)
    _notes(engine)
    shop = review_pack(tmp_path)
    hostile = xss_pack(tmp_path)
    with engine.begin() as conn:
        subjects.place_hold(
            conn, scope="subject", reason="tax audit 2026-17", placed_by="legal", secret=SECRET, subject_key="7"
        )
        subjects.place_hold(
            conn,
            scope="record",
            dataset=XSS_DATASET,
            record_key="2",
            reason=XSS_REASON,
            placed_by="legal",
            secret=SECRET,
        )
        subjects.add_request(
            conn, subject_key="12", received=dt.date(2026, 9, 1), pack=shop.pack, note="by post", secret=SECRET
        )
    result = execute.run(engine, shop, AS_OF, secret=SECRET, allow_mass=("*",))
    assert result.status == "succeeded", result
    hostile_result = execute.run(engine, hostile, AS_OF, secret=SECRET, allow_mass=("*",))
    assert hostile_result.status == "succeeded", hostile_result
    from retention.subjects import review

    with engine.connect() as conn:
        batches = {b["dataset"]: b["id"] for b in review.list_batches(conn)}
    assert set(batches) == {"payment_tokens", XSS_REVIEWED}, batches
    from retention.ledger import items as ledger_items

    with engine.connect() as conn:
        customer = next(
            c
            for c in range(1, customers + 1)
            if any("->" in r["transition"] for r in ledger_items.lookup(conn, SECRET, subject_key=str(c)))
        )
    key_file = tmp_path / "signing.pem"
    public = ledger.generate_signing_key(key_file)
    (tmp_path / "public.pem").write_bytes(public)
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    document = ledger.checkpoint(engine, ledger.load_signing_key(key_file), dt.datetime.now(dt.UTC), secret=SECRET)
    (folder / "checkpoint-1.json").write_text(json.dumps(document), encoding="utf-8")
    with engine.begin() as conn:
        for role, name in USERS.items():
            accounts.add_user(conn, name, role, PASSWORD, created_by="test")
    settings = ConsoleSettings(
        db_url=db_url,
        rules=tmp_path / "marketplace-review.yaml",
        checkpoints=folder,
        public_key=tmp_path / "public.pem",
        schedule="30 2 * * *",
        schedule_timezone="Europe/Paris",
        forecast_horizon="P1M",
        secret=b"console-test-cookie-secret",
    )
    return World(
        db_url=db_url,
        settings=settings,
        run_id=result.run_id,
        xss_run_id=hostile_result.run_id,
        review_id=batches["payment_tokens"],
        customer_with_entries=customer,
        pii=pii,
        signing_key=key_file,
    )


def relocated(world: World, db_url: str, folder: Path) -> World:
    """``world`` as seen from a copy of its database at ``db_url`` with its files copied into ``folder``."""

    home = world.signing_key.parent  # every file of the world is in one folder

    def moved(path: Path | None) -> Path | None:
        return None if path is None else folder / path.relative_to(home)

    settings = replace(
        world.settings,
        db_url=db_url,
        rules=moved(world.settings.rules),
        checkpoints=moved(world.settings.checkpoints),
        public_key=moved(world.settings.public_key),
    )
    return replace(world, db_url=db_url, settings=settings, signing_key=folder / world.signing_key.name)


CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


def client(app: Starlette, address: str = "127.0.0.1") -> TestClient:
    """A client over HTTPS (the cookies are Secure) that does not follow redirects."""
    return TestClient(app, base_url="https://testserver", follow_redirects=False, client=(address, 50000))


def csrf_of(test_client: TestClient) -> str:
    """The CSRF token a page's forms carry for this client (fetched from the sign-in page)."""
    page = test_client.get("/login")
    match = CSRF_INPUT.search(page.text)
    if match is None:  # signed in: the sign-in page redirects; any page's sign-out form carries it
        match = CSRF_INPUT.search(test_client.get("/ledger").text)
    assert match is not None
    return match.group(1)


def sign_in(app: Starlette, role: str) -> TestClient:
    """A client signed in with the test account of ``role``."""
    test_client = client(app)
    token = csrf_of(test_client)
    response = test_client.post("/login", data={"csrf_token": token, "name": USERS[role], "password": PASSWORD})
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/"
    return test_client
