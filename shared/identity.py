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
from datetime import date
from enum import StrEnum
from typing import Annotated

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

NAME_SIGNIFICANT_CHARS = 20

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


class Hasher:
    """Keyed hashing of identifiers: ``kind:hex`` so a hash says what kind it is, never what it was."""

    def __init__(self, secret: bytes, key_id: str = "k1") -> None:
        if len(secret) < 16:
            raise ValueError("the identity hash secret must be at least 16 bytes")
        self._secret = secret
        self.key_id = key_id
        # Per kind, the HMAC with the key and the "kind:" prefix already absorbed: hashing is then a
        # copy and one update. Every account event hashes its identifiers, so this is on the hot path.
        self._started = {kind: (f"{kind.value}:", hmac.new(secret, f"{kind.value}:".encode(), hashlib.sha256)) for kind in IdentifierKind}

    @classmethod
    def from_settings(cls, settings) -> "Hasher":
        return cls(settings.hash_secret.get_secret_value().encode(), settings.hash_key_id)

    def hash(self, kind: IdentifierKind, normalised: str) -> str:
        """``kind:`` and HMAC-SHA-256(secret, ``kind:normalised``) in hex."""
        prefix, started = self._started[kind]
        digest = started.copy()
        digest.update(normalised.encode())
        return prefix + digest.hexdigest()

    def identifiers(self, identity: Identity, default_region: str = "GB") -> dict[IdentifierKind, str]:
        """The keyed hash of every identifier the identity carries."""
        return {kind: self.hash(kind, value) for kind, value in normalised_identifiers(identity, default_region).items()}


def kind_of(identifier_hash: str) -> IdentifierKind:
    return IdentifierKind(identifier_hash.split(":", 1)[0])
