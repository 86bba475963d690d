"""JSON files from outside (proofs, checkpoints): bounded in size and depth, refused in one line (exit 2).

Auditors run ``ledger verify-proof`` on files they were sent. Python's JSON
decoder recurses once per nesting level, so 2 KB of ``[`` ended in a
``RecursionError`` traceback; the documents the engine writes are a few
levels deep, so anything deeper than :data:`MAX_DEPTH` is refused before it
reaches code that walks it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from retention.errors import ConfigError

MAX_DEPTH = 32
"""Nesting levels at most (a proof has five)."""


def _too_deep(document: Any, limit: int) -> bool:
    """The document nests deeper than ``limit`` (walked without recursion)."""
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > limit:
                return True
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def read_bounded(path: Path, what: str, max_bytes: int) -> bytes:
    """The bytes of ``path``, refused (exit 2) when larger than ``max_bytes``."""
    try:
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(data) > max_bytes:
        raise ConfigError(f"{what} {path} is larger than {max_bytes:,} bytes; refusing to read it")
    return data


def loads_bounded(data: bytes, what: str, path: Path) -> Any:
    """The JSON document, refused (exit 2) when nested too deep; ValueError when it is not JSON."""
    try:
        document = json.loads(data.decode("utf-8"))
    except RecursionError:
        raise ConfigError(f"{what} {path} nests deeper than {MAX_DEPTH} levels; refusing to read it") from None
    if _too_deep(document, MAX_DEPTH):
        raise ConfigError(f"{what} {path} nests deeper than {MAX_DEPTH} levels; refusing to read it")
    return document


def read_json(path: Path, what: str, max_bytes: int) -> Any:
    """The JSON document in ``path``, or a ConfigError naming the file and what is wrong with it."""
    data = read_bounded(path, what, max_bytes)
    try:
        return loads_bounded(data, what, path)
    except ValueError:
        raise ConfigError(f"cannot read {what} {path}: not JSON") from None


__all__ = ["MAX_DEPTH", "loads_bounded", "read_bounded", "read_json"]
