"""Checkpoints: the chains' heads at a moment, signed with the deployment's Ed25519 key, so that an
outsider who kept one can later tell that a chain's tail was rewritten or cut off after it.

The key (``SELFEX_AUDIT_SIGNING_KEY``: base64 of a 32-byte Ed25519 private key) is refused outside a
development stack when it is the public development key or not a key at all; when none is set
there, no checkpoints are written and the service says so at start.
"""

import base64
import binascii
import uuid
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from services.audit.chain import Tail, canonical
from shared.settings import InsecureSettingsError, Settings

# The development stack's key: public, committed, refused anywhere else.
DEVELOPMENT_SIGNING_KEY = base64.b64encode(b"selfex-dev-audit-signing-key-32b").decode()


class CheckpointError(ValueError):
    """A checkpoint whose signature does not hold, or that is not a checkpoint."""


class Signer:
    def __init__(self, private_key: Ed25519PrivateKey, key_id: str) -> None:
        self._key = private_key
        self.key_id = key_id
        self.public_key = base64.b64encode(private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()

    @classmethod
    def from_settings(cls, settings: Settings, service: str = "audit") -> "Signer | None":
        """The deployment's signer; None when no key is set outside development (no checkpoints)."""
        value = settings.audit_signing_key.get_secret_value().strip()
        if not value:
            if not settings.development:
                return None
            value = DEVELOPMENT_SIGNING_KEY
        elif value == DEVELOPMENT_SIGNING_KEY and not settings.development:
            raise InsecureSettingsError(f"{service} will not start: SELFEX_AUDIT_SIGNING_KEY is the public development key")
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise InsecureSettingsError(f"{service} will not start: SELFEX_AUDIT_SIGNING_KEY is not base64 of a 32-byte Ed25519 key")
        return cls(Ed25519PrivateKey.from_private_bytes(raw), settings.audit_signing_key_id)

    def checkpoint(self, tails: dict[str, Tail], at: datetime, writer: str) -> dict[str, Any]:
        heads = [{"chain": chain, "seq": tail.seq, "hash": tail.hash} for chain, tail in sorted(tails.items()) if tail.seq > 0]
        statement = {
            "at": at.isoformat(timespec="milliseconds"),
            "writer": writer,
            "heads": heads,
            "key_id": self.key_id,
            "public_key": self.public_key,
        }
        return {"_id": str(uuid.uuid4()), **statement, "signature": self.sign(statement)}

    def sign(self, statement: dict[str, Any]) -> str:
        """The signature (base64) over the statement's canonical JSON."""
        return base64.b64encode(self._key.sign(canonical(statement).encode())).decode()

    def anchor(self, chain: str, tail: Tail, at: datetime, writer: str, run_id: str) -> dict[str, Any]:
        """Where retention cut a chain: its last removed record (seq and hash), signed, so the walk
        starts from it and nobody without the key can make a chain look cut on purpose."""
        statement = {
            "chain": chain,
            "seq": tail.seq,
            "hash": tail.hash,
            "at": at.isoformat(timespec="milliseconds"),
            "writer": writer,
            "run_id": run_id,
            "key_id": self.key_id,
            "public_key": self.public_key,
        }
        return {"_id": f"{run_id}:{chain}", **statement, "signature": self.sign(statement)}


CHECKPOINT_FIELDS = ("at", "writer", "heads", "key_id", "public_key")
ANCHOR_FIELDS = ("chain", "seq", "hash", "at", "writer", "run_id", "key_id", "public_key")


def check_signature(
    checkpoint: dict[str, Any], public_key: str | None = None, fields: tuple[str, ...] = CHECKPOINT_FIELDS, what: str = "checkpoint"
) -> None:
    """Raise ``CheckpointError`` unless the checkpoint (or anchor: ``ANCHOR_FIELDS``) is signed by its
    key (or by ``public_key``, when given)."""
    try:
        statement = {name: checkpoint[name] for name in fields}
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key or checkpoint["public_key"]))
        key.verify(base64.b64decode(checkpoint["signature"]), canonical(statement).encode())
    except (KeyError, TypeError, ValueError, InvalidSignature) as error:
        raise CheckpointError(f"{what} {checkpoint.get('_id')} is not signed by the deployment's key") from error


def generate_key() -> str:
    """A fresh signing key, as ``SELFEX_AUDIT_SIGNING_KEY`` takes it."""
    from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

    raw = Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return base64.b64encode(raw).decode()
