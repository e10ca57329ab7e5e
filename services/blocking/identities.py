"""The identifier hashes of the accounts seen lately, so an account's every bet does not hash its
identity again.

An operator sends many events for one account (a login, deposits, a bet per spin), each with the
same identity fields. Normalising and keyed-hashing them is the largest part of deciding an event,
so the hashes are remembered per (operator, account) together with a fingerprint of the identity
they came from: a Python ``hash()`` of the fields, keyed at random per process. When the fields
differ (the customer changed their e-mail) the fingerprint differs and they are hashed again.

Nothing raw is kept: the fingerprint is a 64-bit keyed digest and the identifiers are the keyed
hashes that blocking keeps anyway. Past ``max_accounts`` the memory starts again.
"""

from shared.identity import Hasher, IdentifierKind, Identity

MAX_ACCOUNTS = 200_000


class AccountIdentifiers:
    def __init__(self, hasher: Hasher, max_accounts: int = MAX_ACCOUNTS) -> None:
        self._hasher = hasher
        self._max = max_accounts
        self._known: dict[tuple[str, str], tuple[int, dict[IdentifierKind, str]]] = {}

    def of(self, operator_id: str, account_id: str, identity: Identity) -> tuple[dict[IdentifierKind, str], bool]:
        """The keyed hashes of this account's identity, and whether they are new: False when this
        account came with this identity before (the hashes are then the remembered ones)."""
        fingerprint = hash(tuple(identity.__dict__.values()))
        key = (operator_id, account_id)
        known = self._known.get(key)
        if known is not None and known[0] == fingerprint:
            return known[1], False
        identifiers = self._hasher.identifiers(identity)
        if len(self._known) >= self._max:
            self._known.clear()
        self._known[key] = (fingerprint, identifiers)
        return identifiers, True

    def __len__(self) -> int:
        return len(self._known)
