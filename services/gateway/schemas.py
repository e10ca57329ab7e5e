"""The native API's request bodies and answers (HTTP models, not events). Strict: a wrongly typed or
unknown field is a ``400`` naming it, never a guess."""

from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StringConstraints, field_validator

from shared.events import SCOPE_ALL, ExclusionType, Game, Scope
from shared.identity import Identity

EARLIEST_BIRTH = date(1900, 1, 1)
EARLIEST_MOMENT = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_MOMENT = datetime(9999, 12, 30, tzinfo=UTC)  # a day short of the end: any offset still converts


def born_on(value: date) -> date:
    """A date of birth that can be one: from 1900 to today."""
    if value < EARLIEST_BIRTH:
        raise ValueError("the date of birth is before 1900")
    if value > date.today():
        raise ValueError("the date of birth is in the future")
    return value


def bounded_moment(value: datetime) -> datetime:
    """An aware moment between 1970 and 9999, in UTC (a far offset can push a moment off the calendar)."""
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the moment is out of range") from None
    if not EARLIEST_MOMENT <= utc <= LATEST_MOMENT:
        raise ValueError(f"the moment must be between {EARLIEST_MOMENT.date()} and {LATEST_MOMENT.date()}")
    return utc


Moment = Annotated[AwareDatetime, AfterValidator(bounded_moment)]
Text = Annotated[str, StringConstraints(strict=True, strip_whitespace=True, min_length=1, max_length=200)]
MAX_BATCH_CHECKS = 10_000


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PersonIdentity(Strict):
    """Who: any of a ChipOut uid, a national id, name + date of birth + postcode, e-mail, mobile
    (international format, e.g. +44 7700 900123)."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "first_name": "Harry",
                    "last_name": "Potter",
                    "date_of_birth": "1980-07-31",
                    "postcode": "GU1 1AA",
                    "email": "harry@example.com",
                },
                {"uid": "3d3a0ba4b5c2f4e1f1b7e3a0b8d3a86e0f7a2e0f1c2b3a4d5e6f708192a3b4c5"},
            ]
        },
    )

    uid: Annotated[str, StringConstraints(strict=True, pattern=r"^[0-9a-fA-F]{64}$")] | None = None
    national_id: Text | None = None
    first_name: Text | None = None
    last_name: Text | None = None
    date_of_birth: Annotated[str, StringConstraints(strict=True, pattern=r"^\d{4}-\d{2}-\d{2}$")] | None = Field(
        default=None, description="YYYY-MM-DD"
    )
    postcode: Annotated[str, StringConstraints(strict=True, strip_whitespace=True, min_length=1, max_length=16)] | None = None
    email: (
        Annotated[str, StringConstraints(strict=True, strip_whitespace=True, min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")]
        | None
    ) = None
    mobile: Annotated[str, StringConstraints(strict=True, strip_whitespace=True, min_length=3, max_length=32)] | None = None

    @field_validator("date_of_birth")
    @classmethod
    def _real_date(cls, value: str | None) -> str | None:
        if value is not None:
            born_on(date.fromisoformat(value))  # ValueError → a 400 naming the field
        return value

    def identity(self) -> Identity:
        data = self.model_dump(exclude_none=True)
        if "date_of_birth" in data:
            data["date_of_birth"] = date.fromisoformat(data["date_of_birth"])
        return Identity(**data)


class ScopeIn(Strict):
    """What the exclusion covers: GAMES (with the games, ALL for every one), ADS, DM."""

    types: list[Literal["GAMES", "ADS", "DM"]] = Field(min_length=1, max_length=3)
    games: list[Literal["POKER", "ROULETT", "BACCARAT", "PUNTOBANCO", "BLACKJACK", "CASINO", "SLOTS", "BETTING", "ALL"]] = Field(
        default_factory=list, max_length=9
    )

    def scope(self) -> Scope:
        games = set(self.games) if "GAMES" in self.types else set()
        if "GAMES" in self.types and not games:
            games = {"ALL"}
        if "ALL" in games:
            games = {"ALL"}
        return Scope(types=frozenset(ExclusionType(t) for t in self.types), games=frozenset(Game(g) for g in games))


class ExclusionCreate(Strict):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "identity": {
                        "first_name": "Harry",
                        "last_name": "Potter",
                        "date_of_birth": "1980-07-31",
                        "postcode": "GU1 1AA",
                        "email": "harry@example.com",
                    },
                    "duration": "+6m",
                    "jurisdiction": "UK",
                    "scope": {"types": ["GAMES"], "games": ["ALL"]},
                    "year_of_birth": 1980,
                    "gender": "M",
                }
            ]
        },
    )

    identity: PersonIdentity
    duration: Annotated[str, StringConstraints(strict=True, max_length=16)] = Field(
        description="+Nd or +Nm, as the jurisdiction's policy allows"
    )
    jurisdiction: Annotated[str, StringConstraints(strict=True, pattern=r"^[A-Z]{2}$")] = "SE"
    scope: ScopeIn | None = Field(default=None, description="default: every game")
    year_of_birth: Annotated[StrictInt, Field(ge=1900, le=2100)] | None = None
    gender: Literal["M", "F", "U"] | None = None
    locale: Annotated[str, StringConstraints(strict=True, max_length=16)] | None = None

    def chosen_scope(self) -> Scope:
        return self.scope.scope() if self.scope else SCOPE_ALL


class ExclusionExtend(Strict):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={"examples": [{"identity": {"email": "harry@example.com"}, "duration": "+12m"}]},
    )

    identity: PersonIdentity = Field(description="the person the exclusion belongs to (proves the caller knows them)")
    duration: Annotated[str, StringConstraints(strict=True, max_length=16)]
    scope: ScopeIn | None = Field(default=None, description="default: the exclusion's own scope (never narrowed)")


class LiftRequest(Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra={"examples": [{"identity": {"email": "harry@example.com"}}]})

    identity: PersonIdentity = Field(description="the person the exclusion belongs to")
    verify_by: Literal["email", "sms"] | None = Field(
        default=None, description="where the person's code goes (a contact on file); default: any"
    )


class LiftCode(Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra={"examples": [{"code": "123456"}]})

    code: str = Field(pattern=r"^[0-9]{6}$", description="the 6 digits the person received")


class Cancellation(Strict):
    model_config = ConfigDict(
        extra="forbid", frozen=True, json_schema_extra={"examples": [{"reason": "registered for the wrong person (case 4711)"}]}
    )

    reason: str = Field(min_length=1, max_length=2000, description="why the exclusion was made in error; kept in the audit log")


# A verification's answer to a submission (its ``status``) as an HTTP status: the portal's and the lifts'.
ANSWER_STATUS = {
    "verified": 200,
    "code_sent": 202,
    "document_received": 202,
    "wrong_code": 400,
    "attempts_exhausted": 400,
    "superseded": 400,
    "other_request": 400,
    "already_used": 409,
    "already_verified": 409,
    "already_requested": 409,
    "wrong_method": 409,
    "unknown_request": 409,
    "document_pending": 409,
    "not_under_review": 409,
    "expired": 410,
    "closed": 410,
    "resends_exhausted": 429,
}


class PersonQuery(Strict):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [{"identity": {"first_name": "Harry", "last_name": "Potter", "date_of_birth": "1980-07-31", "postcode": "GU1 1AA"}}]
        },
    )

    identity: PersonIdentity


class BatchPerson(Strict):
    ref: Annotated[str, StringConstraints(strict=True, max_length=200)] | None = Field(
        default=None, description="your reference, echoed back"
    )
    identity: PersonIdentity


class BatchCheck(Strict):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "persons": [
                        {"ref": "crm-1", "identity": {"email": "harry@example.com"}},
                        {"ref": "crm-2", "identity": {"mobile": "+447700900123"}},
                    ]
                }
            ]
        },
    )

    persons: list[BatchPerson] = Field(min_length=1, max_length=MAX_BATCH_CHECKS)


class Review(Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra={"examples": [{"approved": True, "note": "passport matches"}]})

    approved: StrictBool
    note: Annotated[str, StringConstraints(strict=True, max_length=2000)] | None = None


def exclusion_view(document: dict[str, Any], in_force: bool) -> dict[str, Any]:
    """An exclusion as the native API shows it: no identifiers, no person key."""

    def moment(name: str) -> str | None:
        value = document.get(name)
        return value.isoformat() if isinstance(value, (datetime, date)) else value

    view = {
        "exclusion_id": str(document["_id"]),
        "state": document.get("state"),
        "in_force": in_force,
        "jurisdiction": document.get("jurisdiction"),
        "scope": document.get("scope"),
        "duration": document.get("duration"),
        "channel": document.get("channel"),
        "created_at": moment("created_at"),
        "starts_at": moment("starts_at"),
        "ends_at": moment("ends_at"),
        "minimum_until": moment("minimum_until"),
        "lift_effective_at": moment("lift_effective_at"),
        "ended_at": moment("ended_at"),
        "version": document.get("version"),
    }
    refusal = document.get("refusal")
    if isinstance(refusal, dict):
        view["last_lift_refusal"] = {"reason": refusal.get("reason"), "at": _iso(refusal.get("at"))}
    return view


def _iso(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value
