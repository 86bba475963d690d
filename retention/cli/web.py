"""The auditor console: its ``user`` accounts and ``serve``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

import click

from retention.cli import params
from retention.cli.options import actor, command, db_option, format_option, group, handled, rules_option
from retention.cli.output import console, display_zone, print_rows
from retention.store.config import database_url


@group()
def user() -> None:
    """Accounts of the auditor console: auditor reads, approver also decides reviews, admin also manages accounts."""


@user.command("add")
@db_option
@click.argument("name")
@click.option(
    "--role", required=True, type=click.Choice(["auditor", "approver", "admin"]), help="What the account may do."
)
@click.option(
    "--no-password",
    is_flag=True,
    help="An account that signs in only through the authenticating proxy (serve --auth proxy).",
)
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of standard input instead of prompting.",
)
@handled
def user_add(db: str | None, name: str, role: str, no_password: bool, password_stdin: bool) -> None:
    """Create console account NAME with --role; the password is hashed with argon2id."""
    password: str | None = None
    if not no_password:
        if password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    from retention.web import users

    stored = users.user_add(database_url(db), name, role, password, created_by=actor())
    how = "signs in through the proxy" if no_password else "signs in with a password"
    console.print(f"account {stored} added as {role} ({how})", highlight=False)


@user.command("list")
@db_option
@format_option
@handled
def user_list(db: str | None, fmt: str) -> None:
    """List console accounts, their roles and whether they are disabled."""
    from retention.web import users

    rows = users.user_list(database_url(db))
    print_rows(rows, ["name", "role", "has_password", "created_at", "created_by", "disabled_at"], fmt)


@user.command("disable")
@db_option
@click.argument("name")
@handled
def user_disable(db: str | None, name: str) -> None:
    """Disable console account NAME; its open sessions stop working at once."""
    from retention.web import users

    users.user_disable(database_url(db), name, by=actor())
    console.print(f"account {name} disabled", highlight=False)


@command()
@db_option
@rules_option(required=False)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on.")
@click.option(
    "--auth",
    type=click.Choice(["password", "proxy"]),
    default="password",
    show_default=True,
    help="password: console accounts sign in; proxy: trust the user header of --trusted-proxy addresses.",
)
@click.option(
    "--proxy-header",
    default="X-Forwarded-User",
    show_default=True,
    help="With --auth proxy, the header naming the signed-in account (oauth2-proxy: X-Forwarded-User).",
)
@click.option(
    "--trusted-proxy",
    "trusted_proxies",
    multiple=True,
    metavar="ADDRESS",
    help="With --auth proxy, an address or network (CIDR) whose user header is believed; repeatable.",
)
@click.option(
    "--checkpoints",
    type=click.Path(path_type=Path),
    envvar="RETENTION_CHECKPOINTS",
    default=None,
    help="A checkpoint file or a folder of them (from `ledger checkpoint`); or RETENTION_CHECKPOINTS.",
)
@click.option(
    "--public-key",
    type=params.INPUT_FILE,
    default=None,
    help="PEM public key file that checkpoints must verify against; or RETENTION_CHECKPOINT_PUBLIC_KEY "
    "(the PEM text, or a file's path) or RETENTION_CHECKPOINT_PUBLIC_KEY_FILE, as for `ledger verify`.",
)
@click.option("--session-hours", default=8.0, show_default=True, type=float, help="How long a sign-in lasts.")
@click.option(
    "--schedule",
    envvar="RETENTION_SCHEDULE",
    type=params.CRON,
    default=None,
    help="The scheduler's cron expression, to show the next run; or RETENTION_SCHEDULE.",
)
@click.option(
    "--schedule-timezone",
    envvar="RETENTION_SCHEDULE_TIMEZONE",
    type=params.ZONE,
    default="UTC",
    show_default=True,
    help="Timezone of --schedule; or RETENTION_SCHEDULE_TIMEZONE.",
)
@click.option("--horizon", default="P3M", show_default=True, help="How far the forecast page looks ahead.")
@handled
def serve(
    db: str | None,
    rules: Path | None,
    host: str,
    port: int,
    auth: Literal["password", "proxy"],
    proxy_header: str,
    trusted_proxies: tuple[str, ...],
    checkpoints: Path | None,
    public_key: Path | None,
    session_hours: float,
    schedule: str | None,
    schedule_timezone: str,
    horizon: str,
) -> None:
    """Run the auditor console: a read-only, signed-in web view of the ledger, runs, requests and reviews.

    Sign-in cookies are Secure: serve it behind a TLS reverse proxy (a browser on
    localhost accepts them over plain HTTP). The session-signing key comes from
    RETENTION_CONSOLE_SECRET or RETENTION_CONSOLE_SECRET_FILE (random otherwise:
    sessions end at restart); lookups need the pseudonym key.
    """
    from retention.ledger import chain as ledger
    from retention.web import ConsoleSettings, server

    key = ledger.public_key_source(public_key)
    if key is not None:
        ledger.public_key_from(key)  # a key that is no key fails now, not as "not trusted" on every page
    settings = ConsoleSettings(
        db_url=database_url(db),
        rules=rules,
        auth=auth,
        proxy_header=proxy_header,
        trusted_proxies=trusted_proxies,
        checkpoints=checkpoints,
        public_key=key,
        session_hours=session_hours,
        schedule=schedule,
        schedule_timezone=schedule_timezone,
        forecast_horizon=horizon,
        display_timezone=display_zone(rules, None, utc=False),
    )
    if rules is not None:
        from retention.policy import load_catalog

        load_catalog(rules)  # a missing or broken pack fails before the URL is shown as if it served
    from retention.web.database import writable_engine

    writable_engine(settings.db_url).dispose()  # a SQLite path naming no file: refused, and not created
    server.check_listen(host, port)  # so does an address in use or not this machine's
    console.print(f"retention console on http://{host}:{port}/ ({auth} sign-in); Ctrl+C stops it", highlight=False)
    server.serve(settings, host, port)
