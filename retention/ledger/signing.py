"""Ed25519 signing keys and signed checkpoints of the ledger head, kept elsewhere, which
expose even a chain rewritten consistently (SPEC section 6).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import stat
from pathlib import Path
from typing import Any

import rfc8785
import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from retention.errors import ConfigError, LedgerError
from retention.ledger.canonical import _instant
from retention.ledger.verification import VerifyResult, verify
from retention.store import tables as store

# --------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------


def _check_private(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"the signing key file {path} is readable by others (mode {stat.S_IMODE(mode):o}); run: chmod 600 {path}"
        )


def generate_signing_key(path: Path) -> bytes:
    """Write a new Ed25519 private key (PEM, mode 0600) and return its public key PEM."""
    if path.exists():
        raise ConfigError(f"{path} exists; refusing to overwrite a signing key")
    key = Ed25519PrivateKey.generate()
    path.touch(mode=0o600)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return public_pem(key.public_key())


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_signing_key(path: Path | None = None) -> Ed25519PrivateKey:
    """The checkpoint signing key, from ``path`` or RETENTION_SIGNING_KEY_FILE (mode 0600)."""
    import os

    name = path or (
        Path(os.environ["RETENTION_SIGNING_KEY_FILE"]) if os.environ.get("RETENTION_SIGNING_KEY_FILE") else None
    )
    if name is None:
        raise ConfigError("no signing key; set RETENTION_SIGNING_KEY_FILE or pass --key")
    try:
        _check_private(name)
        key = serialization.load_pem_private_key(name.read_bytes(), password=None)
    except OSError as exc:
        raise ConfigError(f"cannot read the signing key {name}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"{name} is not a PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{name} is not an Ed25519 key")
    return key


PUBLIC_KEY_VARIABLE = "RETENTION_CHECKPOINT_PUBLIC_KEY"
PUBLIC_KEY_FILE_VARIABLE = "RETENTION_CHECKPOINT_PUBLIC_KEY_FILE"


def configured_public_key(path: Path | None = None) -> Ed25519PublicKey:
    """The checkpoint signer's public key as the verifier configured it, never as a checkpoint claims it.

    Where it comes from is :func:`public_key_source`. A checkpoint carries its
    signer's key for information only: whoever rewrites a chain can sign a
    checkpoint of it with a key of their own.
    """
    source = public_key_source(path)
    if source is None:
        raise ConfigError(
            "a checkpoint is trusted only against its signer's public key: pass --public-key PEM or set "
            "RETENTION_CHECKPOINT_PUBLIC_KEY or RETENTION_CHECKPOINT_PUBLIC_KEY_FILE (the key inside the "
            "checkpoint proves nothing)"
        )
    return public_key_from(source)


def public_key_source(path: Path | None = None) -> Path | bytes | None:
    """Where the configured public key is: a file (a ``Path``), PEM text (``bytes``), or nowhere (None).

    ``path`` (``--public-key FILE``) first; else ``RETENTION_CHECKPOINT_PUBLIC_KEY``,
    which holds the PEM text as documented, or the path of a PEM file: ``serve``
    used to read it as a path and deployments may still set it so; PEM text
    always starts ``-----BEGIN``, a path never does, so the two cannot be
    confused. Else the file named by ``RETENTION_CHECKPOINT_PUBLIC_KEY_FILE``.
    The variable's value is never repeated in an error: it may be key text.
    """
    import os

    if path is not None:
        return path
    value = os.environ.get(PUBLIC_KEY_VARIABLE, "")
    if value.strip():
        if value.lstrip().startswith("-----BEGIN"):
            return value.encode()
        named = Path(value.strip())
        try:
            if named.is_file():
                return named
        except (OSError, ValueError):
            pass
        raise ConfigError(
            f"{PUBLIC_KEY_VARIABLE} holds neither PEM text (-----BEGIN PUBLIC KEY-----) nor the path of a file"
        )
    if os.environ.get(PUBLIC_KEY_FILE_VARIABLE, "").strip():
        return Path(os.environ[PUBLIC_KEY_FILE_VARIABLE].strip())
    return None


def public_key_from(source: Path | bytes) -> Ed25519PublicKey:
    """The key in ``source`` (from :func:`public_key_source`); one line naming the file, never the text, if not."""
    if isinstance(source, bytes):
        try:
            return load_public_key(source)
        except ConfigError as exc:
            raise ConfigError(f"{PUBLIC_KEY_VARIABLE}: {exc}") from None
    try:
        if not source.is_file():
            raise ConfigError(f"the public key {source} is not a regular file")
        data = source.read_bytes()[:65536]
    except OSError as exc:
        raise ConfigError(f"cannot read the public key {source}: {exc.strerror}") from None
    try:
        return load_public_key(data)
    except ConfigError as exc:
        raise ConfigError(f"the public key {source}: {exc}") from None


def load_public_key(data: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise ConfigError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError("the public key is not an Ed25519 key")
    return key


def _key_id(public: Ed25519PublicKey) -> str:
    return hashlib.sha256(public_pem(public)).hexdigest()[:16]


AUTHENTICATED_FROM = "authenticated_from"
"""Checkpoint field: the first entry of format 3; every entry from it on carries the engine's MAC."""


def _signed_part(checkpoint: dict[str, Any]) -> bytes:
    names = ("seq", "hash", "signed_at", *((AUTHENTICATED_FROM,) if AUTHENTICATED_FROM in checkpoint else ()))
    return rfc8785.dumps({k: checkpoint[k] for k in names})


def checkpoint(
    connectable: sa.Engine | sa.Connection, key: Ed25519PrivateKey, now: dt.datetime, *, secret: bytes | None = None
) -> dict[str, Any]:
    """Sign the current head after verifying the chain up to it, the entries' MACs included.

    A checkpoint is what an auditor without the pseudonym key trusts, so a
    ledger with authenticated entries is signed only when their MACs were
    checked. The first authenticated entry is signed too: a chain rewritten
    later into the old, unauthenticated format no longer matches it.
    """
    verdict = verify(connectable, secret=secret)
    if not verdict.ok:
        raise LedgerError(f"refusing to sign a broken ledger: {verdict.reason}")
    if verdict.authenticated_from is not None and verdict.authenticated is None:
        raise ConfigError(
            "refusing to sign entries whose MACs were not checked: configure the pseudonym key "
            "(RETENTION_PSEUDONYM_KEY or RETENTION_PSEUDONYM_KEY_FILE)"
        )
    document: dict[str, Any] = {
        "seq": verdict.head_seq,
        "hash": verdict.head_hash,
        "signed_at": _instant(now),
    }
    if verdict.authenticated_from is not None:
        document[AUTHENTICATED_FROM] = verdict.authenticated_from
    document["signature"] = base64.b64encode(key.sign(_signed_part(document))).decode("ascii")
    document["key_id"] = _key_id(key.public_key())
    document["public_key"] = public_pem(key.public_key()).decode("ascii")
    return document


def signature_valid(checkpoint_doc: dict[str, Any], public: Ed25519PublicKey) -> bool:
    """The checkpoint's signature is valid for ``public`` (the chain itself is not read)."""
    try:
        public.verify(base64.b64decode(checkpoint_doc["signature"]), _signed_part(checkpoint_doc))
    except (InvalidSignature, KeyError, ValueError, TypeError):
        return False
    return True


def verify_checkpoint(
    connectable: sa.Engine | sa.Connection,
    checkpoint_doc: dict[str, Any],
    public: Ed25519PublicKey,
    *,
    secret: bytes | None = None,
) -> VerifyResult:
    """The chain verifies and still holds the signed head at the checkpoint's seq and its first authenticated entry."""
    name = f"checkpoint of entry {checkpoint_doc.get('seq')} signed {checkpoint_doc.get('signed_at')}"
    try:
        public.verify(base64.b64decode(checkpoint_doc["signature"]), _signed_part(checkpoint_doc))
        seq = int(checkpoint_doc["seq"])
    except (InvalidSignature, KeyError, ValueError, TypeError, rfc8785.CanonicalizationError):
        claimed = checkpoint_doc.get("key_id") if isinstance(checkpoint_doc, dict) else None
        other = (
            f" (it names key {claimed}, the configured key is {_key_id(public)})" if claimed != _key_id(public) else ""
        )
        return VerifyResult(False, 0, None, f"{name}: the signature is not valid for the configured public key{other}")
    verdict = verify(connectable, secret=secret)
    if not verdict.ok:
        return verdict
    signed_from = checkpoint_doc.get(AUTHENTICATED_FROM)
    if signed_from is not None and verdict.authenticated_from != signed_from:
        return VerifyResult(
            False,
            verdict.entries,
            signed_from if isinstance(signed_from, int) else None,
            f"ledger rewritten: the {name} says every entry from entry {signed_from} on is authenticated, but "
            + ("none is" if verdict.authenticated_from is None else f"the first is entry {verdict.authenticated_from}"),
        )
    if seq == 0:
        return verdict
    table = store.ledger
    query = sa.select(table.c.hash).where(table.c.seq == seq)
    if isinstance(connectable, sa.Engine):
        with connectable.connect() as conn:
            found = conn.execute(query).scalar()
    else:
        found = connectable.execute(query).scalar()
    if found is None:
        return VerifyResult(False, verdict.entries, seq, f"ledger rewritten: entry {seq} of the {name} is gone")
    if found != checkpoint_doc["hash"]:
        return VerifyResult(
            False,
            verdict.entries,
            seq,
            f"ledger rewritten: entry {seq} no longer matches the {name}",
        )
    return verdict
