"""One-time codes: drawn from ``secrets``, kept only as a keyed hash bound to their exclusion."""

import hashlib
import hmac
import secrets
import uuid

from shared.events import CodeSubmittedPayload

CODE_DIGITS = 6


def new_code() -> str:
    """Six random digits, leading zeros kept."""
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def submission_context(exclusion_id: uuid.UUID | str) -> str:
    """What a typed code is sealed to on its way from the portal: that exclusion, and nothing else."""
    return CodeSubmittedPayload.sealing_context(exclusion_id)


def well_formed(code: str) -> bool:
    return len(code) == CODE_DIGITS and code.isascii() and code.isdigit()


class CodeHasher:
    """HMAC-SHA-256 with the deployment's hash secret; the exclusion id is bound into the hash, so a
    code issued for one request never matches another's."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the hash secret must be at least 16 bytes")
        self._secret = secret

    @classmethod
    def from_settings(cls, settings) -> "CodeHasher":
        return cls(settings.hash_secret.get_secret_value().encode())

    def hash(self, exclusion_id: uuid.UUID | str, code: str) -> str:
        return hmac.new(self._secret, f"verification-code:{exclusion_id}:{code}".encode(), hashlib.sha256).hexdigest()


def same(hash_a: str | None, hash_b: str | None) -> bool:
    """Constant-time comparison of two code hashes."""
    return hash_a is not None and hash_b is not None and hmac.compare_digest(hash_a, hash_b)
