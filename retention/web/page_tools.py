"""Small pieces every console page module uses: form values, redirects, the pseudonym key, the pack in force."""

from __future__ import annotations

from typing import Any

from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from retention.errors import ConfigError
from retention.ledger import pseudonyms
from retention.timing.clock import utcnow
from retention.web.console import Console


def _text(form: FormData | None, name: str) -> str:
    value = form.get(name) if form is not None else None
    return value.strip() if isinstance(value, str) else ""


def _see_other(url: str) -> Response:
    return RedirectResponse(url, status_code=303)


def _pseudonym_secret() -> bytes | None:
    try:
        return pseudonyms.pseudonym_secret()
    except ConfigError:
        return None


def _pack_datasets(console: Console) -> list[str]:
    loaded = _loaded_pack(console)
    return sorted(loaded.pack.datasets) if loaded is not None else []


def _loaded_pack(console: Console) -> Any:
    if console.settings.rules is None:
        return None
    from retention.policy import load_catalog

    return load_catalog(console.settings.rules).in_force(utcnow().date())
