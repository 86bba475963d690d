"""Small pieces every console page module uses: form values, redirects, the pseudonym key, the pack in force."""

from __future__ import annotations

from typing import Any

from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from retention.timing.clock import utcnow
from retention.web.console import Console


def _text(form: FormData | None, name: str) -> str:
    value = form.get(name) if form is not None else None
    return value.strip() if isinstance(value, str) else ""


def _see_other(url: str) -> Response:
    return RedirectResponse(url, status_code=303)


def _pseudonym_secret(console: Console) -> bytes | None:
    """The key a page turns ids into pseudonyms with: None when none is configured.

    Raises :class:`~retention.web.key_check.KeyRefused` when it is not the
    key the ledger was begun with, which the route wrapper shows as a 503
    page: a wrong key only ever gave "no records" (key_check.py).
    """
    return console.pseudonym_secret()


def _unchecked_secret(console: Console) -> bytes | None:
    """The configured key without the ledger check: for the verify page, whose verdict names a key that fails.

    A key setting that is set but unreadable raises KeyRefused, as ``ledger verify`` exits 2 on it.
    """
    return console.key_check.unchecked()


def _pack_datasets(console: Console) -> list[str]:
    loaded = _loaded_pack(console)
    return sorted(loaded.pack.datasets) if loaded is not None else []


def _loaded_pack(console: Console) -> Any:
    if console.settings.rules is None:
        return None
    from retention.policy import load_catalog

    return load_catalog(console.settings.rules).in_force(utcnow().date())
