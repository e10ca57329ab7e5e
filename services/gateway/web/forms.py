"""The portal's forms as people fill them in: the choices a policy offers, in words, and the checks of
each field with the key of its message (the page says it in its language). No I/O."""

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

from shared.events import ExclusionType, Game, Scope
from shared.identity import IdentityError, normalise_mobile, uid_from_personnummer
from shared.policies import DurationError, End, Policy, Terms

# Durations offered beside a policy's own exact ones, where its ranges allow them.
CANDIDATES = ("+1d", "+7d", "+1m", "+3m", "+6m", "+12m", "+24m", "+60m")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
GAME_CATEGORIES = [g.value for g in Game if g is not Game.ALL]
# Which identity details a jurisdiction's operators match on, beside e-mail and mobile.
NATIONAL_ID_JURISDICTIONS = frozenset({"SE"})
NAME_DOB_POSTCODE = frozenset({"first_name", "last_name", "date_of_birth", "postcode"})
IDENTITY_FIELDS = ("national_id", "first_name", "last_name", "date_of_birth", "postcode", "email", "mobile")


@dataclass(frozen=True)
class DurationChoice:
    value: str
    terms: Terms

    def ends_at(self, now: datetime) -> datetime | None:
        return self.terms.ends_at(now)

    def minimum_until(self, now: datetime) -> datetime | None:
        return self.terms.minimum_until(now)

    @property
    def on_request(self) -> bool:
        return self.terms.end is End.ON_REQUEST


def duration_choices(policy: Policy, now: datetime) -> list[DurationChoice]:
    """The durations to offer, shortest first: the policy's exact ones and the usual ones its ranges allow."""
    choices: dict[str, DurationChoice] = {}
    for value in [rule.value for rule in policy.durations if rule.value] + list(CANDIDATES):
        if value in choices:
            continue
        try:
            choices[value] = DurationChoice(value, policy.terms(value))
        except DurationError:
            continue
    return sorted(choices.values(), key=lambda c: (c.terms.duration.after(now), c.on_request))


def panic_policy(policies: dict[str, Policy]) -> tuple[Policy, str] | None:
    """The jurisdiction whose policy has a panic button, and its duration (Sweden's first)."""
    for name in sorted(policies, key=lambda j: (j != "SE", j)):
        for rule in policies[name].durations:
            if rule.panic and rule.value:
                return policies[name], rule.value
    return None


def identity_fields(policy: Policy) -> list[str]:
    """The identity details this jurisdiction's operators match on, then the contacts."""
    if policy.jurisdiction in NATIONAL_ID_JURISDICTIONS:
        return ["national_id", "email", "mobile"]
    return ["first_name", "last_name", "date_of_birth", "postcode", "email", "mobile"]


@dataclass
class Checked:
    """A form's values as typed (to show again), the errors by field (message keys), and the clean values."""

    values: dict[str, Any]
    errors: dict[str, str] = field(default_factory=dict)
    clean: dict[str, Any] = field(default_factory=dict)


def contact_of(text: str, region: str) -> tuple[Literal["email", "sms"], str] | None:
    """One box for "e-mail or mobile": which one it is, cleaned; None when it is neither."""
    text = text.strip()
    if "@" in text:
        return ("email", text) if EMAIL.match(text) else None
    try:
        normalise_mobile(text, region)
    except IdentityError:
        return None
    return "sms", text


def check_panic(values: dict[str, Any], policy: Policy) -> Checked:
    checked = Checked({"contact": str(values.get("contact", ""))[:254]})
    text = checked.values["contact"].strip()
    if not text:
        checked.errors["contact"] = "error_contact"
        return checked
    found = contact_of(text, policy.mobile_region)
    if found is None:
        checked.errors["contact"] = "error_email" if "@" in text else "error_mobile"
        return checked
    kind, contact = found
    checked.clean = {"email" if kind == "email" else "mobile": contact, "verify_by": kind}
    return checked


def check_request(values: dict[str, Any], policy: Policy, now: datetime) -> Checked:
    """The full request: duration, scope, identity, where the code goes, consent."""
    shown: dict[str, Any] = {
        name: str(values.get(name, "")).strip()[:254] for name in (*IDENTITY_FIELDS, "duration", "verify_by", "consent", "games")
    }
    shown["scope"] = [s for s in values.get("scope", []) if s in policy.scopes]
    shown["game"] = [g for g in values.get("game", []) if g in GAME_CATEGORIES]
    checked = Checked(shown)
    errors = checked.errors
    offered = {c.value for c in duration_choices(policy, now)}
    if shown["duration"] not in offered:
        errors["duration"] = "error_duration"
    if not shown["scope"]:
        errors["scope"] = "error_scope"
    identity: dict[str, Any] = {}
    fields = identity_fields(policy)
    for name in fields:
        value = shown[name]
        if not value:
            continue
        error = _field_error(name, value, policy)
        if error:
            errors[name] = error
        else:
            identity[name] = date.fromisoformat(value) if name == "date_of_birth" else value
    named = bool({"national_id", "email", "mobile"} & identity.keys()) or identity.keys() >= NAME_DOB_POSTCODE
    if not named and not errors.keys() & set(fields):
        errors["identity"] = "error_identity"
    verify_by = shown["verify_by"] if shown["verify_by"] in ("email", "sms") else None
    if not policy.document_check:
        if verify_by is None:
            verify_by = "email" if identity.get("email") else "sms" if identity.get("mobile") else None
        if verify_by is None and "email" not in errors and "mobile" not in errors:
            errors["verify_by"] = "error_contact"
        elif verify_by == "email" and not identity.get("email") and "email" not in errors:
            errors["email"] = "error_email"
        elif verify_by == "sms" and not identity.get("mobile") and "mobile" not in errors:
            errors["mobile"] = "error_mobile"
    if shown["consent"] != "yes":
        errors["consent"] = "error_consent"
    if not errors:
        checked.clean = {**identity, "duration": shown["duration"], "scope": scope_of(shown), "verify_by": verify_by}
    return checked


def scope_of(shown: dict[str, Any]) -> Scope:
    """Gambling (every game unless categories were chosen), advertising, direct marketing, as ticked."""
    types = frozenset(ExclusionType(s) for s in shown["scope"])
    games: frozenset[Game] = frozenset()
    if ExclusionType.GAMES in types:
        chosen = shown.get("games") == "chosen" and shown["game"]
        games = frozenset(Game(g) for g in shown["game"]) if chosen else frozenset({Game.ALL})
    return Scope(types=types, games=games)


def _field_error(name: str, value: str, policy: Policy) -> str | None:
    if name == "national_id":
        try:
            uid_from_personnummer(value)
        except IdentityError:
            return "error_national_id"
    elif name == "email" and not EMAIL.match(value):
        return "error_email"
    elif name == "mobile":
        try:
            normalise_mobile(value, policy.mobile_region)
        except IdentityError:
            return "error_mobile"
    elif name == "date_of_birth":
        try:
            born = date.fromisoformat(value)
        except ValueError:
            return "error_date_of_birth"
        if not date(1900, 1, 1) <= born <= date.today():
            return "error_date_of_birth"
    return None


def masked(contact: str) -> str:
    """Enough of a contact for the person to recognise it, not enough to read it off a screen."""
    if "@" in contact:
        name, _, domain = contact.partition("@")
        return f"{name[:1]}…@{domain}"
    digits = contact.strip()
    return f"{digits[:3]}…{digits[-2:]}" if len(digits) > 5 else "…"


def longer_choices(policy: Policy, now: datetime, current: dict[str, Any]) -> list[DurationChoice]:
    """The durations that would make the exclusion longer (an end or a minimum later than now's), never shorter."""
    ends_at = _moment(current.get("ends_at"))
    minimum = _moment(current.get("minimum_until"))
    longer = []
    for choice in duration_choices(policy, now):
        end = choice.ends_at(now)
        if (ends_at is not None and (end is None or end.date() > ends_at.date())) or (
            ends_at is None and choice.on_request and (minimum is None or (choice.minimum_until(now) or now).date() > minimum.date())
        ):
            longer.append(choice)
    return longer


def _moment(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None
