"""Identity: normalising the identifiers operators and people send, and keyed hashing of them.

Only keyed hashes (HMAC-SHA-256 with the deployment secret) leave the entry point. The kinds follow
the registers: a national id (ChipOut's ``uid`` is SHA-256 of the 12-digit personnummer), the
name + date of birth + postcode match of GAMSTOP (first 20 characters of a name count, spaces in a
postcode do not), e-mail, mobile, and the operators' anti-circumvention signals.
"""

import hashlib
import hmac
import re
import unicodedata
from collections.abc import Iterable, Sequence
from datetime import date
from enum import StrEnum
from typing import Annotated

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

NAME_SIGNIFICANT_CHARS = 20
KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
# Checked and lowered by the validator's own (compiled) code: every account event carries one.
Uid = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{64}$", to_lower=True)]


class IdentifierKind(StrEnum):
    NATIONAL_ID = "national_id"
    NAME_DOB_POSTCODE = "name_dob_postcode"
    EMAIL = "email"
    MOBILE = "mobile"
    DEVICE = "device"
    PAYMENT = "payment"


# Kinds that identify a person; the others only say a device or card was used by one.
PERSONAL_KINDS = frozenset({IdentifierKind.NATIONAL_ID, IdentifierKind.NAME_DOB_POSTCODE, IdentifierKind.EMAIL, IdentifierKind.MOBILE})


class IdentityError(ValueError):
    """An identifier that cannot be normalised."""


class Identity(BaseModel):
    """The raw identity fields a request or account event carries. Never stored or logged as is.

    A key it does not know (``UID``, ``uid ``, ``personnummer``) is a contract error, not ignored:
    ignoring it would leave an identity that names nobody, and an excluded person allowed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    uid: Uid | None = Field(default=None, description="SHA-256 hex of the 12-digit personnummer (ChipOut)")
    national_id: Text | None = Field(default=None, description="a national id in clear, hashed on arrival")
    first_name: Text | None = None
    last_name: Text | None = None
    date_of_birth: date | None = None
    postcode: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=16)] | None = None
    email: Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=254, pattern="@")] | None = Field(
        default=None, description="an e-mail address: it must contain '@'"
    )
    mobile: Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=32)] | None = None
    device_fingerprint: Text | None = None
    payment_fingerprint: Text | None = None


def uid_from_personnummer(personnummer: str) -> str:
    """ChipOut's uid: SHA-256 (lower-case hex) of the 12-digit personnummer without hyphen."""
    digits = re.sub(r"[\s-]", "", personnummer)
    if not re.fullmatch(r"\d{12}", digits):
        raise IdentityError("a personnummer has 12 digits")
    return hashlib.sha256(digits.encode()).hexdigest()


def normalise_name(name: str) -> str:
    """Case, accents and inner spaces do not count; only the first 20 characters do."""
    if name.isascii():  # most names: nothing to decompose, no accents to drop
        plain = name
    else:
        decomposed = unicodedata.normalize("NFKD", name)
        plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(plain.casefold().split())[:NAME_SIGNIFICANT_CHARS].rstrip()


def normalise_postcode(postcode: str) -> str:
    return "".join(postcode.split()).upper()


def normalise_email(email: str) -> str:
    return email.strip().casefold()


def normalise_mobile(mobile: str, default_region: str = "GB") -> str:
    """E.164, so ``07700 900123`` and ``+44 7700 900123`` are one number."""
    try:
        number = phonenumbers.parse(mobile, default_region)
    except phonenumbers.NumberParseException as exc:
        raise IdentityError(f"mobile: {exc}") from exc
    if not phonenumbers.is_possible_number(number):
        raise IdentityError("mobile is not a possible phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def name_dob_postcode(first_name: str, last_name: str, date_of_birth: date, postcode: str) -> str:
    """GAMSTOP's match, normalised: both names (first 20 characters), the birth date, the postcode."""
    return "|".join((normalise_name(first_name), normalise_name(last_name), date_of_birth.isoformat(), normalise_postcode(postcode)))


def normalised_identifiers(identity: Identity, default_region: str = "GB") -> dict[IdentifierKind, str]:
    """Each identifier kind the identity carries, normalised; composite kinds need all their parts."""
    found: dict[IdentifierKind, str] = {}
    if identity.uid:
        found[IdentifierKind.NATIONAL_ID] = identity.uid
    elif identity.national_id:
        found[IdentifierKind.NATIONAL_ID] = uid_from_personnummer(identity.national_id)
    if identity.first_name and identity.last_name and identity.date_of_birth and identity.postcode:
        found[IdentifierKind.NAME_DOB_POSTCODE] = name_dob_postcode(
            identity.first_name, identity.last_name, identity.date_of_birth, identity.postcode
        )
    if identity.email:
        found[IdentifierKind.EMAIL] = normalise_email(identity.email)
    if identity.mobile:
        found[IdentifierKind.MOBILE] = normalise_mobile(identity.mobile, default_region)
    if identity.device_fingerprint:
        found[IdentifierKind.DEVICE] = identity.device_fingerprint
    if identity.payment_fingerprint:
        found[IdentifierKind.PAYMENT] = identity.payment_fingerprint
    return found


class UnknownHashKeyError(Exception):
    """A hash made with a key this service does not hold (a newer one, on a service not yet given it).

    It cannot be matched with anything, so nothing may be decided from it. Not a ValueError: the
    message is sound and must not be dead-lettered; whoever meets one retries it until the service
    is given the key, and a view's lag bound turns the wait into UNAVAILABLE, never into ALLOW."""


class Hasher:
    """Keyed hashing of identifiers: ``kind:hex`` so a hash says what kind it is, never what it was.

    Rotation is a chain (docs/adr/0005): each newer key hashes the form before it, so
    ``kind:k2:HMAC(k2, "kind:HMAC(k1, ...)")``. Whoever holds the chain turns an older form into the
    newest without the raw identifier (``canonical``), which is what ``selfex rehash`` does to stored
    ones; a lookup from a raw identity asks for every form (``forms``) until the store is re-keyed.
    The first key's form carries no key id, so what was stored before any rotation stays valid.
    """

    def __init__(self, secret: bytes, key_id: str = "k1", next_keys: Sequence[tuple[str, bytes]] = ()) -> None:
        if len(secret) < 16 or any(len(later) < 16 for _, later in next_keys):
            raise ValueError("an identity hash secret must be at least 16 bytes")
        ids = [key_id, *(later_id for later_id, _ in next_keys)]
        if len(set(ids)) != len(ids) or not all(KEY_ID.fullmatch(i) for i in ids):
            raise ValueError(f"identity hash key ids must be distinct words of letters, digits, '-' or '_': {ids}")
        self.key_id = ids[-1]  # the newest: what every new hash is made with
        self.first_key_id = key_id
        self.rotating = bool(next_keys)
        # Per kind, the HMAC with the key and the "kind:" prefix already absorbed: hashing is then a
        # copy and one update. Every account event hashes its identifiers, so this is on the hot path.
        self._started = {kind: (f"{kind.value}:", hmac.new(secret, f"{kind.value}:".encode(), hashlib.sha256)) for kind in IdentifierKind}
        self._links = [(later_id, hmac.new(later, digestmod=hashlib.sha256)) for later_id, later in next_keys]
        self._position = {later_id: n + 1 for n, (later_id, _) in enumerate(next_keys)}

    @classmethod
    def from_settings(cls, settings) -> "Hasher":
        return cls(settings.hash_secret.get_secret_value().encode(), settings.hash_key_id, settings.hash_chain())

    def _first(self, kind: IdentifierKind, normalised: str) -> str:
        prefix, started = self._started[kind]
        digest = started.copy()
        digest.update(normalised.encode())
        return prefix + digest.hexdigest()

    def _step(self, kind: str, form: str, n: int) -> str:
        """``form`` hashed with the chain's next key after key number ``n``."""
        key_id, started = self._links[n]
        digest = started.copy()
        digest.update(form.encode())
        return f"{kind}:{key_id}:{digest.hexdigest()}"

    def _onward(self, kind: str, form: str, after: int) -> str:
        """``form`` (made with the chain's key number ``after``) carried on to the newest key."""
        for n in range(after, len(self._links)):
            form = self._step(kind, form, n)
        return form

    def hash(self, kind: IdentifierKind, normalised: str) -> str:
        """The newest form: ``kind:`` and HMAC-SHA-256(secret, ``kind:normalised``) in hex, carried
        along the chain when there is one."""
        first = self._first(kind, normalised)
        return self._onward(kind.value, first, 0) if self.rotating else first

    def forms(self, kind: IdentifierKind, normalised: str) -> list[str]:
        """Every form the identifier may be stored under, oldest first (one when nothing rotates)."""
        found = [self._first(kind, normalised)]
        for n in range(len(self._links)):
            found.append(self._step(kind.value, found[-1], n))
        return found

    def identifiers(self, identity: Identity, default_region: str = "GB") -> dict[IdentifierKind, str]:
        """The keyed hash (newest form) of every identifier the identity carries."""
        return {kind: self.hash(kind, value) for kind, value in normalised_identifiers(identity, default_region).items()}

    def lookup_forms(self, identity: Identity, default_region: str = "GB") -> list[str]:
        """Every form of every identifier the identity carries: what a lookup in a store that may not
        be re-keyed yet asks for (the newest forms alone when nothing rotates)."""
        normalised = normalised_identifiers(identity, default_region)
        if not self.rotating:
            return [self._first(kind, value) for kind, value in normalised.items()]
        return [form for kind, value in normalised.items() for form in self.forms(kind, value)]

    def canonical(self, identifier_hash: str) -> str:
        """The newest form of a stored or received hash; ``UnknownHashKeyError`` for a key not held.
        Something that is no hash of ours (no ``kind:``) is left as it is."""
        parts = identifier_hash.split(":")
        if len(parts) < 2:
            return identifier_hash
        if len(parts) == 2:
            return self._onward(parts[0], identifier_hash, 0) if self.rotating else identifier_hash
        if len(parts) == 3 and (position := self._position.get(parts[1])) is not None:
            return self._onward(parts[0], identifier_hash, position)
        raise UnknownHashKeyError(f"a {parts[0]} identifier hashed with a key this service does not hold ({parts[1]!r})")

    def canonical_all(self, identifiers: Iterable[str]) -> tuple[str, ...]:
        """``canonical`` of each (duplicates dropped, order kept); the same tuple back when nothing changes."""
        given = identifiers if isinstance(identifiers, tuple) else tuple(identifiers)
        if not self.rotating and all(h.count(":") < 2 for h in given):  # the usual case, on every lifecycle event
            return given
        changed = tuple(dict.fromkeys(self.canonical(h) for h in given))
        return given if changed == given else changed

    def is_newest(self, identifier_hash: str) -> bool:
        """Whether the hash is in the newest form (so ``canonical`` would leave it as it is)."""
        return self.canonical(identifier_hash) == identifier_hash


def kind_of(identifier_hash: str) -> IdentifierKind:
    return IdentifierKind(identifier_hash.split(":", 1)[0])
