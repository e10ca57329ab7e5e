"""Sealing what must be kept but never shown: contact details, documents, one-time codes in transit.

AES-256-GCM with keys named by id, so keys can be rotated: new data is sealed with the current key,
old data still opens with the key it names, and ``reseal`` moves it to the current key (``selfex
reencrypt``, after which the old key can be dropped).
"""

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12


class SealError(ValueError):
    """Sealed data that does not open: wrong key, tampered, or not sealed by us."""


class Sealer:
    def __init__(self, keys: dict[str, bytes], current: str) -> None:
        if current not in keys:
            raise ValueError(f"no key with id {current!r}")
        for key_id, key in keys.items():
            if len(key) != 32:
                raise ValueError(f"key {key_id!r} must be 32 bytes (AES-256)")
        self._keys = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self.current = current

    @classmethod
    def from_settings(cls, settings) -> "Sealer":
        keys = {
            key_id: base64.b64decode(value)
            for key_id, value in (item.split(":", 1) for item in settings.encryption_keys.get_secret_value().split(","))
        }
        return cls(keys, settings.encryption_key_id)

    def seal(self, plaintext: bytes, context: str = "") -> str:
        """``key_id:base64(nonce ciphertext)``; ``context`` binds the data to where it belongs."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._keys[self.current].encrypt(nonce, plaintext, context.encode())
        return f"{self.current}:{base64.b64encode(nonce + sealed).decode()}"

    def open(self, token: str, context: str = "") -> bytes:
        try:
            key_id, body = token.split(":", 1)
            raw = base64.b64decode(body, validate=True)
            return self._keys[key_id].decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode())
        except (ValueError, KeyError, InvalidTag) as exc:
            raise SealError("sealed data does not open") from exc

    def is_current(self, token: str) -> bool:
        """Whether ``token`` was sealed with the current key."""
        return token.split(":", 1)[0] == self.current

    def reseal(self, token: str, context: str = "") -> str | None:
        """``token`` sealed again with the current key; None when it already is (key rotation)."""
        if self.is_current(token):
            return None
        return self.seal(self.open(token, context), context)

    def seal_text(self, text: str, context: str = "") -> str:
        return self.seal(text.encode(), context)

    def open_text(self, token: str, context: str = "") -> str:
        return self.open(token, context).decode()
