"""Jurisdiction policies as data: one TOML file per jurisdiction, loaded and validated at start.

A policy says which durations a person may choose, how each ends (automatically, or only on the
person's request after a minimum), the cooling-off before activation and before return, whether a
document check is required, which scopes apply, and who else may apply for an exclusion. Adding a
jurisdiction is adding a file: the engine needs no code change.
"""

import re
import tomllib
from calendar import monthrange
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

POLICY_DIR = Path(__file__).parent
MAX_DAYS = 36_525  # a hundred years
MAX_MONTHS = 1_200


class DurationError(ValueError):
    """A duration that is not ``+Nd`` or ``+Nm`` with N in range, or that the policy does not allow."""


class PolicyError(ValueError):
    """A policy file that does not validate, or a jurisdiction without one."""


@dataclass(frozen=True)
class Duration:
    amount: int
    unit: Literal["d", "m"]

    def after(self, start: datetime) -> datetime:
        if self.unit == "d":
            return start + timedelta(days=self.amount)
        return add_months(start, self.amount)

    def __str__(self) -> str:
        return f"+{self.amount}{self.unit}"


def parse_duration(text: object) -> Duration:
    """``+30d`` is 30 days, ``+4m`` 4 calendar months; anything else is a clear error."""
    if not isinstance(text, str) or not text.strip():
        raise DurationError("duration is empty: expected +Nd (days) or +Nm (months)")
    match = re.fullmatch(r"\+([0-9]{1,6})([dm])", text.strip())
    if match is None:
        raise DurationError(f"duration {text!r} is not +Nd (days) or +Nm (months)")
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


class End(StrEnum):
    AUTOMATIC = "automatic"  # ends by itself at the end of the term
    ON_REQUEST = "on_request"  # after the minimum it stays until the person asks to lift it


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DurationRule(_Strict):
    """Either one exact duration (``value``) or a range of one unit (``unit``, ``min``, ``max``)."""

    value: str | None = None
    unit: Literal["d", "m"] | None = None
    min: int | None = Field(default=None, ge=1)
    max: int | None = Field(default=None, ge=1)
    end: End = End.AUTOMATIC
    minimum: str | None = Field(default=None, description="for on_request ends: the term before a lift; default the duration")
    panic: bool = Field(default=False, description="the panic button: in force at once, no cooling-off")
    label: str | None = None

    @model_validator(mode="after")
    def _one_form(self) -> "DurationRule":
        if (self.value is None) == (self.unit is None):
            raise ValueError("a duration rule has either value, or unit with min and max")
        if self.value is not None:
            parse_duration(self.value)
        elif self.min is None or self.max is None or self.min > self.max:
            raise ValueError("a unit rule needs min <= max")
        if self.minimum is not None:
            parse_duration(self.minimum)
        return self

    def matches(self, duration: Duration) -> bool:
        if self.value is not None:
            return parse_duration(self.value) == duration
        return duration.unit == self.unit and self.min <= duration.amount <= self.max  # type: ignore[operator]


class ThirdPartyRule(_Strict):
    """Who besides the person may apply (OASIS, CRUKS), and the exclusion such an application gets."""

    applicants: list[Literal["regulator", "family", "operator"]] = Field(min_length=1)
    minimum: str
    end: End = End.ON_REQUEST

    @model_validator(mode="after")
    def _valid_minimum(self) -> "ThirdPartyRule":
        parse_duration(self.minimum)
        return self


class Policy(_Strict):
    jurisdiction: str = Field(pattern=r"^[A-Z]{2}$")
    name: str
    scopes: list[Literal["GAMES", "ADS", "DM"]] = ["GAMES", "ADS", "DM"]
    durations: list[DurationRule] = Field(min_length=1)
    activation_cooling_off_hours: int = Field(default=0, ge=0, le=24 * 30)
    return_cooling_off_hours: int = Field(default=0, ge=0, le=24 * 90)
    cancellable_after: str | None = Field(default=None, description="an automatic end may be lifted early after this")
    document_check: bool = False
    verification_timeout_hours: int = Field(default=72, ge=1)
    reminder_hours_before_end: int = Field(default=24, ge=0)
    support_persons_max: int = Field(default=0, ge=0, le=10)
    third_party: ThirdPartyRule | None = None
    mobile_region: str = "GB"

    @model_validator(mode="after")
    def _valid_cancellable_after(self) -> "Policy":
        if self.cancellable_after is not None:
            parse_duration(self.cancellable_after)
        return self

    def terms(self, text: str) -> "Terms":
        """What a requested duration means under this policy; a clear error when not allowed."""
        duration = parse_duration(text)
        exact = [rule for rule in self.durations if rule.value is not None and rule.matches(duration)]
        ranged = [rule for rule in self.durations if rule.value is None and rule.matches(duration)]
        rule = next(iter(exact or ranged), None)
        if rule is None:
            raise DurationError(f"duration {text!r} is not allowed in {self.jurisdiction}: {self.allowed()}")
        if rule.end is End.ON_REQUEST:
            minimum: Duration | None = parse_duration(rule.minimum) if rule.minimum else duration
        else:
            minimum = parse_duration(self.cancellable_after) if self.cancellable_after else None
        return Terms(duration=duration, end=rule.end, minimum=minimum, panic=rule.panic, label=rule.label)

    def third_party_terms(self, terms: "Terms") -> "Terms":
        """The same duration applied for by someone else: at least the third-party minimum, and its end rule."""
        if self.third_party is None:
            raise PolicyError(f"{self.jurisdiction} takes no third-party applications")
        floor = parse_duration(self.third_party.minimum)
        if self.third_party.end is End.ON_REQUEST:
            minimum: Duration | None = terms.minimum or terms.duration
        else:
            minimum = parse_duration(self.cancellable_after) if self.cancellable_after else None
        return replace(terms, end=self.third_party.end, minimum=minimum, floor=floor, panic=False)

    def lift_allowed_early(self) -> bool:
        """Whether an exclusion that ends by itself may be lifted before its end (after its minimum)."""
        return self.cancellable_after is not None

    def allowed(self) -> str:
        parts = [rule.value if rule.value else f"+{rule.min}{rule.unit}..+{rule.max}{rule.unit}" for rule in self.durations]
        return "allowed: " + ", ".join(parts)

    @property
    def activation_cooling_off(self) -> timedelta:
        return timedelta(hours=self.activation_cooling_off_hours)

    @property
    def return_cooling_off(self) -> timedelta:
        return timedelta(hours=self.return_cooling_off_hours)


@dataclass(frozen=True)
class Terms:
    """A duration as a policy reads it.

    ``minimum``: no lift takes effect before the start plus this; None for an automatic end that the
    policy does not let anyone lift early. ``floor``: a third party's minimum, which the exclusion
    lasts at least.
    """

    duration: Duration
    end: End
    minimum: Duration | None
    panic: bool = False
    label: str | None = None
    floor: Duration | None = None

    def ends_at(self, start: datetime) -> datetime | None:
        """When the exclusion ends by itself; None when only a lift request ends it."""
        if self.end is End.ON_REQUEST:
            return None
        return max(d.after(start) for d in (self.duration, self.floor) if d is not None)

    def minimum_until(self, start: datetime) -> datetime | None:
        """No lift takes effect before this; None when no minimum applies (an automatic end)."""
        candidates = [d.after(start) for d in (self.minimum, self.floor) if d is not None]
        return max(candidates) if candidates else None


def load_policies(directory: Path = POLICY_DIR) -> dict[str, Policy]:
    """Every ``*.toml`` policy in the directory, validated; an invalid file stops the start."""
    policies: dict[str, Policy] = {}
    for path in sorted(directory.glob("*.toml")):
        try:
            policy = Policy.model_validate(tomllib.loads(path.read_text()))
        except (ValueError, tomllib.TOMLDecodeError) as exc:
            raise PolicyError(f"{path.name}: {exc}") from exc
        if policy.jurisdiction in policies:
            raise PolicyError(f"{path.name}: a second policy for {policy.jurisdiction}")
        policies[policy.jurisdiction] = policy
    if not policies:
        raise PolicyError(f"no policy files in {directory}")
    return policies


def policy_for(policies: dict[str, Policy], jurisdiction: str) -> Policy:
    try:
        return policies[jurisdiction]
    except KeyError:
        raise PolicyError(f"no policy for jurisdiction {jurisdiction!r}; known: {', '.join(sorted(policies))}") from None


@cache
def shipped_policies() -> dict[str, Policy]:
    """The policies shipped with Selfex, loaded once."""
    return load_policies(POLICY_DIR)
