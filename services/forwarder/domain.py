"""What the forwarder forwards, and how a delivery's outcome is read. No I/O, no clock reads.

Only exclusions made here are forwarded (``origin`` None): one that a deployment forwarded to us, or
that the sync imported from the register, never goes back, so two deployments that are each other's
register do not loop. An extension that lengthened nothing is not forwarded either.
"""

import math
import re
from datetime import datetime, timedelta

from tenacity import RetryCallState, wait_random_exponential

from shared.events import (
    EXCLUDING_STATES,
    Event,
    ExclusionActivated,
    ExclusionCancelled,
    ExclusionExtended,
    ExclusionLifted,
    ExclusionSnapshot,
    derived_id,
)
from shared.identity import IdentifierKind, kind_of

# What each adapter forwards. A lift is the person's act, proven here (a code to the person), and a
# cancellation register staff's: a register that is Selfex is told of both (POST /v1/register/ended),
# so that its copy does not block the person for ever; ChipOut has no call for either, so a ChipOut
# register keeps its copy until it ends there. A register's topic takes them.
FORWARDED = {
    "native": (ExclusionActivated, ExclusionExtended, ExclusionLifted, ExclusionCancelled),
    "chipout": (ExclusionActivated, ExclusionExtended),
    "kafka": (ExclusionActivated, ExclusionExtended, ExclusionLifted, ExclusionCancelled),
}
CHIPOUT_DURATION = re.compile(r"^\+\d{1,4}[dm]$")
PERSON_KEY_KINDS = (IdentifierKind.NATIONAL_ID, IdentifierKind.NAME_DOB_POSTCODE, IdentifierKind.EMAIL, IdentifierKind.MOBILE)


class PermanentDeliveryError(Exception):
    """The register refused the delivery for a reason a retry cannot mend (a 4xx other than 408/409/429,
    or nothing to identify the person by): it ends failed at once, with an alert."""


class TransientDeliveryError(Exception):
    """The register is away, slow, or failed (a 5xx, 408, 409, 429, a timeout, a refused connection): retried."""


def forwarded(event: Event, adapter: str) -> bool:
    """Whether this lifecycle event is one the adapter delivers to the register."""
    snapshot = event.payload
    if not isinstance(snapshot, ExclusionSnapshot) or snapshot.origin is not None:
        return False
    if not isinstance(event, FORWARDED[adapter]):
        return False
    if isinstance(event, ExclusionExtended) and snapshot.reason:
        return False  # lengthened nothing
    if isinstance(event, (ExclusionLifted, ExclusionCancelled)):
        return adapter == "kafka" or not never_in_force(snapshot)
    return snapshot.state in EXCLUDING_STATES


def never_in_force(snapshot: ExclusionSnapshot) -> bool:
    """Cancelled before its cooling-off ended: it was never forwarded, so its end is not either. (One
    cancelled while it waited for verification cannot be told apart: the register answers that it has
    nothing of ours, which is the end's aim too.)"""
    return snapshot.ended_at is not None and snapshot.ended_at < snapshot.starts_at


def ended_as(change: str) -> str:
    """How a forwarded end is named to a register that is Selfex: lifted or cancelled."""
    return "lifted" if change == ExclusionLifted.model_fields["type"].default else "cancelled"


def delivery_id(event: Event, register: str) -> str:
    """The delivery's id, and its Idempotency-Key at the register: the same event always makes the same one."""
    return str(derived_id(event.id, f"forwarding/{register}"))


def chipout_duration(snapshot: ExclusionSnapshot, now: datetime) -> str:
    """ChipOut knows +Nd and +Nm: the exclusion's own when it is one of those; "until further notice"
    is +12m; any other end is the days left, rounded up (a register's end is never earlier than ours)."""
    if snapshot.ends_at is None:
        return "+12m"
    if snapshot.duration and CHIPOUT_DURATION.match(snapshot.duration):
        return snapshot.duration
    return f"+{max(1, math.ceil((snapshot.ends_at - now) / timedelta(days=1)))}d"


def person_key(identifiers: list[str]) -> str | None:
    """The person's strongest personal identifier hash: what keys their commands (as the gateway keys them)."""
    by_kind: dict[IdentifierKind, str] = {}
    for identifier in sorted(identifiers):
        try:
            by_kind.setdefault(kind_of(identifier), identifier)
        except ValueError:
            continue
    return next((by_kind[kind] for kind in PERSON_KEY_KINDS if kind in by_kind), None)


class Backoff:
    """The pause before attempt ``n + 1``: tenacity's exponential backoff with full jitter, capped.

    The retries are durable (a delivery's next attempt is stored), so tenacity's wait strategy is
    asked for the pause and the dispatcher keeps the schedule."""

    def __init__(self, first: float, longest: float) -> None:
        self._wait = wait_random_exponential(multiplier=first, max=longest)

    def pause(self, attempts: int) -> float:
        state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]  # only its attempt number is read
        state.attempt_number = max(1, attempts)
        return float(self._wait(state))
