"""What to tell whom, and when: message kinds, urgency, quiet hours, the per-person cap. No I/O, no clock reads."""

import uuid
from datetime import datetime, time, timedelta
from enum import StrEnum
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.events import (
    DeliveryOutcome,
    Event,
    ExclusionActivated,
    ExclusionEndingSoon,
    ExclusionExpired,
    ExclusionExtended,
    ExclusionLifted,
    ExclusionLiftRequested,
    ExclusionSnapshot,
    derived_id,
)

SOURCE = "notification"

# Codes are always urgent: the person is waiting for them on the portal. Everything else may wait for quiet hours to end.
URGENT_KINDS = frozenset({"verification_code", "lift_code"})
# The letters the lifecycle itself asks for, to the person (support persons' and third parties' come as requests).
LETTERS: dict[type[Event], str] = {
    ExclusionActivated: "exclusion_started",
    ExclusionExtended: "exclusion_extended",
    ExclusionEndingSoon: "exclusion_ending_soon",
    ExclusionLiftRequested: "exclusion_lift_requested",
    ExclusionLifted: "exclusion_ended",
    ExclusionExpired: "exclusion_ended",
}
LOCALES = ("en", "sv")
DEFAULT_LOCALE = {"SE": "sv"}
CAP_WINDOW = timedelta(hours=1)

Recipient = Literal["person", "support_persons", "applicant"]


class State(StrEnum):
    PENDING = "pending"  # accepted, not yet tried
    DEFERRED = "deferred"  # quiet hours: due at ``due_at``
    SENDING = "sending"  # an attempt began; if the service stops now, the outcome is unknown
    RETRYING = "retrying"  # an attempt failed for a passing reason; the next one follows
    SENT = "sent"
    FAILED = "failed"  # permanent failure, attempts spent, or no contact
    SUPPRESSED = "suppressed"  # the per-person cap
    UNCONFIRMED = "unconfirmed"  # an attempt's outcome was lost in a crash: never sent again


FINAL_STATES = frozenset({State.SENT, State.FAILED, State.SUPPRESSED, State.UNCONFIRMED})


class Notification(BaseModel):
    """One message to one recipient, from one cause: the unit of idempotency (``id``: cause id and recipient number)."""

    model_config = ConfigDict(frozen=True)

    id: str
    cause_id: uuid.UUID
    correlation_id: uuid.UUID | None = None
    subject: str | None
    recipient: Recipient = "person"
    recipient_key: str = Field(description="whom the per-person cap counts: the subject, or one support person")
    kind: str
    channel: Literal["email", "sms", "any"] = "any"
    locale: str = "en"
    jurisdiction: str | None = None
    params: dict[str, str] = Field(default_factory=dict)
    sealed_params: str | None = None
    sealed_params_context: str | None = None
    # Where it goes, still sealed: the person's contacts by kind, or one support person's JSON.
    sealed_email: str | None = None
    sealed_mobile: str | None = None
    sealed_support_person: str | None = None
    contact_context: str = ""
    state: State = State.PENDING
    attempts: int = 0
    due_at: AwareDatetime | None = None
    sent_at: AwareDatetime | None = None
    reason: str | None = None
    created_at: AwareDatetime
    version: int = 1

    @property
    def urgent(self) -> bool:
        return self.kind in URGENT_KINDS

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


def notification_id(cause_id: uuid.UUID | str, recipient_number: int = 0) -> str:
    return f"{cause_id}/{recipient_number}"


def letter_for(event: Event) -> str | None:
    """The kind of letter the person gets for a lifecycle event; None: nothing to tell them.
    An extension that did not lengthen anything (it carries a reason) tells nobody."""
    kind = LETTERS.get(type(event))
    if isinstance(event, ExclusionExtended) and event.payload.reason is not None:
        return None
    return kind


def letter_params(snapshot: ExclusionSnapshot) -> dict[str, str]:
    """What a letter says about the exclusion (nothing personal)."""
    params = {
        "exclusion_id": str(snapshot.exclusion_id),
        "jurisdiction": snapshot.jurisdiction,
        "state": snapshot.state.value,
        "starts_at": snapshot.starts_at.isoformat(),
        "scope": ", ".join(sorted(t.value for t in snapshot.scope.types)),
        "games": ", ".join(sorted(g.value for g in snapshot.scope.games)),
    }
    for name in ("ends_at", "minimum_until", "lift_effective_at", "ended_at"):
        value = getattr(snapshot, name)
        if value is not None:
            params[name] = value.isoformat()
    if snapshot.duration:
        params["duration"] = snapshot.duration
    return params


def locale_for(requested: str | None, known: str | None, jurisdiction: str | None) -> str:
    """The request's locale, else the person's, else the jurisdiction's language, else English; ``sv-SE`` is ``sv``."""
    for candidate in (requested, known, DEFAULT_LOCALE.get(jurisdiction or "")):
        if candidate:
            language = candidate.replace("_", "-").split("-")[0].lower()
            if language in LOCALES:
                return language
    return "en"


class QuietHoursError(ValueError):
    """A quiet-hours setting that does not read as ``<IANA zone> HH:MM-HH:MM``."""


def quiet_until(now: datetime, spec: str | None) -> datetime | None:
    """When the quiet hours that hold ``now`` end (UTC), or None if ``now`` is not in them (or none are set).

    ``spec``: ``"Europe/Stockholm 21:00-08:00"``; a window may run over midnight.
    """
    if not spec:
        return None
    try:
        zone_name, window = spec.split()
        start_text, end_text = window.split("-")
        zone = ZoneInfo(zone_name)
        start, end = time.fromisoformat(start_text), time.fromisoformat(end_text)
    except (ValueError, KeyError) as exc:
        raise QuietHoursError(f"quiet hours {spec!r}: expected '<IANA zone> HH:MM-HH:MM'") from exc
    local = now.astimezone(zone)
    clock = local.time().replace(tzinfo=None)
    if start <= end:
        quiet = start <= clock < end
        ends_on = local.date()
    else:  # over midnight
        quiet = clock >= start or clock < end
        ends_on = local.date() + timedelta(days=1) if clock >= start else local.date()
    if not quiet:
        return None
    return datetime.combine(ends_on, end, tzinfo=zone).astimezone(now.tzinfo)


def over_cap(sent_in_window: int, cap: int) -> bool:
    """Whether one more message would exceed the cap of ``cap`` an hour."""
    return sent_in_window >= cap


def channel_for(wanted: str, has_email: bool, has_mobile: bool) -> Literal["email", "sms"] | None:
    """The channel a message goes by: the one asked for if there is a contact for it, else the other; e-mail first."""
    order: tuple[Literal["email", "sms"], ...] = ("sms", "email") if wanted == "sms" else ("email", "sms")
    available = {"email": has_email, "sms": has_mobile}
    return next((channel for channel in order if available[channel]), None)


def outcome_of(state: State) -> DeliveryOutcome:
    return {
        State.SENT: DeliveryOutcome.SENT,
        State.SUPPRESSED: DeliveryOutcome.SUPPRESSED,
        State.UNCONFIRMED: DeliveryOutcome.UNCONFIRMED,
        State.DEFERRED: DeliveryOutcome.DEFERRED,
    }.get(state, DeliveryOutcome.PERMANENT_FAILURE)


def message_id(notification: Notification, domain: str) -> str:
    """The e-mail's Message-ID: the same for every attempt of one notification, so a receiving system can tell a repeat."""
    return f"<{derived_id(notification.id, 'message-id')}@{domain}>"
