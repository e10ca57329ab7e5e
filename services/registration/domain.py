"""The rules of an exclusion: durations, ends, and the lifecycle events. No I/O, no clock reads."""

import re
import uuid
from calendar import monthrange
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict

from shared.events import (
    ExclusionActivated,
    ExclusionActivatedPayload,
    RequestExclusion,
    Scope,
    derived_id,
)
from shared.identity import PERSONAL_KINDS, IdentifierKind

SOURCE = "registration"
MAX_DAYS = 36_525  # a hundred years
MAX_MONTHS = 1_200


class DurationError(ValueError):
    """A duration that is not ``+Nd`` or ``+Nm`` with N in range."""


class IdentityRequiredError(ValueError):
    """A request that names nobody: no personal identifier at all."""


@dataclass(frozen=True)
class Duration:
    amount: int
    unit: Literal["d", "m"]

    def after(self, start: datetime) -> datetime:
        if self.unit == "d":
            return start + timedelta(days=self.amount)
        return add_months(start, self.amount)


def parse_duration(text: str) -> Duration:
    """``+30d`` → 30 days, ``+4m`` → 4 calendar months; anything else is a clear error."""
    match = re.fullmatch(r"\+(\d{1,6})([dm])", text.strip()) if isinstance(text, str) else None
    if match is None:
        raise DurationError(f"duration {text!r} is not +Nd or +Nm")
    amount, unit = int(match.group(1)), match.group(2)
    limit = MAX_DAYS if unit == "d" else MAX_MONTHS
    if not 1 <= amount <= limit:
        raise DurationError(f"duration {text!r}: N must be between 1 and {limit}")
    return Duration(amount, unit)  # type: ignore[arg-type]


def add_months(start: datetime, months: int) -> datetime:
    """Calendar months; the 31st of a shorter month falls back to its last day."""
    month_index = start.month - 1 + months
    year, month = start.year + month_index // 12, month_index % 12 + 1
    return start.replace(year=year, month=month, day=min(start.day, monthrange(year, month)[1]))


def until_further_notice(duration: Duration, jurisdiction: str) -> bool:
    """ChipOut sends "until further notice" as ``+12m``."""
    return jurisdiction == "SE" and duration == Duration(12, "m")


class ExclusionState(StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"


class Exclusion(BaseModel):
    """One exclusion of one person: the aggregate registration owns."""

    model_config = ConfigDict(frozen=True)

    id: uuid.UUID
    person_id: str
    identifiers: list[str]
    scope: Scope
    jurisdiction: str
    duration: str
    state: ExclusionState
    starts_at: AwareDatetime
    ends_at: AwareDatetime | None
    requested_by: str | None
    request_id: uuid.UUID
    version: int = 1


def person_identifiers(identifiers: dict[IdentifierKind, str]) -> list[str]:
    """The identifiers that name a person; a request must carry at least one."""
    personal = sorted(h for kind, h in identifiers.items() if kind in PERSONAL_KINDS)
    if not personal:
        raise IdentityRequiredError("the request carries no national id, name with date of birth, e-mail or mobile")
    return personal


def exclude(request: RequestExclusion, *, person_id: str, identifiers: list[str], now: datetime) -> Exclusion:
    """A new exclusion in force from ``now``; its id derives from the request, so redelivery finds it."""
    duration = parse_duration(request.payload.duration)
    jurisdiction = request.payload.jurisdiction
    return Exclusion(
        id=derived_id(request.id, "exclusion"),
        person_id=person_id,
        identifiers=identifiers,
        scope=request.payload.scope,
        jurisdiction=jurisdiction,
        duration=request.payload.duration,
        state=ExclusionState.ACTIVE,
        starts_at=now,
        ends_at=None if until_further_notice(duration, jurisdiction) else duration.after(now),
        requested_by=request.operator_id,
        request_id=request.id,
    )


def activated(exclusion: Exclusion, request: RequestExclusion) -> ExclusionActivated:
    return ExclusionActivated.caused_by(
        request,
        source=SOURCE,
        subject=exclusion.person_id,
        operator_id=request.operator_id,
        payload=ExclusionActivatedPayload(
            exclusion_id=exclusion.id,
            identifiers=exclusion.identifiers,
            scope=exclusion.scope,
            jurisdiction=exclusion.jurisdiction,
            starts_at=exclusion.starts_at,
            ends_at=exclusion.ends_at,
        ),
    )
