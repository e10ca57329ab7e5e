"""Event contracts: the envelope every message travels in, and the typed, versioned payloads.

Evolve a contract by adding optional fields; consumers ignore fields they do not know. A model that
carries raw identity (an entry-point message) says how to show itself without it (``redacted``).
"""

import uuid
from datetime import date, datetime, timezone
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, Self, Union

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter

from shared import topics
from shared.identity import Hasher, Identity

EVENT_NAMESPACE = uuid.UUID("5e1f0e8c-6b1d-4a8e-9d63-3c51d0c0f3a7")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def derived_id(cause: uuid.UUID | str, name: str) -> uuid.UUID:
    """The id of what ``cause`` leads to: the same cause always derives the same id."""
    return uuid.uuid5(EVENT_NAMESPACE, f"{cause}/{name}")


class Contract(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


# --- shared vocabulary -----------------------------------------------------------------------


class ExclusionType(StrEnum):
    GAMES = "GAMES"
    ADS = "ADS"
    DM = "DM"


class Game(StrEnum):
    POKER = "POKER"
    ROULETT = "ROULETT"
    BACCARAT = "BACCARAT"
    PUNTOBANCO = "PUNTOBANCO"
    BLACKJACK = "BLACKJACK"
    CASINO = "CASINO"
    SLOTS = "SLOTS"
    BETTING = "BETTING"
    ALL = "ALL"


class Scope(Contract):
    """What an exclusion covers: games (``ALL`` takes precedence), advertising, direct marketing."""

    types: frozenset[ExclusionType] = Field(min_length=1)
    games: frozenset[Game] = frozenset()

    def covers_game(self, game: Game | None) -> bool:
        if ExclusionType.GAMES not in self.types:
            return False
        return Game.ALL in self.games or not self.games or (game is not None and game in self.games)

    def label(self) -> str:
        """ChipOut's ``Type`` in a status answer."""
        if ExclusionType.GAMES in self.types and (Game.ALL in self.games or not self.games):
            return "All"
        parts = sorted(g.value.capitalize() for g in self.games if ExclusionType.GAMES in self.types)
        parts += sorted(t.value for t in self.types if t is not ExclusionType.GAMES)
        return ",".join(parts)


SCOPE_ALL = Scope(types=frozenset({ExclusionType.GAMES}), games=frozenset({Game.ALL}))


class AccountEventKind(StrEnum):
    LOGIN = "login"
    REGISTRATION = "registration"
    DEPOSIT = "deposit"
    BET = "bet"
    BONUS = "bonus"
    WITHDRAWAL = "withdrawal"
    MARKETING = "marketing"


class MarketingChannel(StrEnum):
    DM = "DM"
    ADS = "ADS"


class Outcome(StrEnum):
    ALLOW = "ALLOW"
    BLOCK = "BLOCK"


# --- the envelope ----------------------------------------------------------------------------


class Event(Contract):
    """The envelope: identity of the message, where it came from, and what caused it."""

    topic: ClassVar[str]

    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    type: str
    version: int = 1
    occurred_at: AwareDatetime = Field(default_factory=utcnow)
    source: str = "unknown"
    correlation_id: uuid.UUID | None = None
    causation_id: uuid.UUID | None = None
    subject: str | None = Field(default=None, description="pseudonymous person key")
    operator_id: str | None = None
    payload: Any

    @classmethod
    def caused_by(cls, cause: "Event", *, source: str, name: str | None = None, **fields: Any) -> Self:
        """A follow-on event whose id derives from its cause, so redelivery re-emits the same event."""
        type_name = cls.model_fields["type"].default
        return cls(
            id=derived_id(cause.id, name or type_name),
            source=source,
            correlation_id=cause.correlation_id or cause.id,
            causation_id=cause.id,
            **fields,
        )

    def key(self) -> bytes | None:
        """The Kafka key: person-scoped events by subject."""
        return self.subject.encode() if self.subject else None

    def redacted(self, hasher: Hasher) -> dict[str, Any]:
        """What may be written to the audit log: the event without raw personal data."""
        return self.model_dump(mode="json")


class Envelope(Event):
    """Any event, payload unparsed: what audit reads when it meets a type it does not know."""

    payload: dict[str, Any] = Field(default_factory=dict)


def _redact_identity(event: Event, hasher: Hasher) -> dict[str, Any]:
    data = event.model_dump(mode="json")
    identity: Identity = event.payload.identity
    try:
        data["payload"]["identity"] = sorted(hasher.identifiers(identity).values())
    except ValueError:
        data["payload"]["identity"] = "[unhashable identity withheld]"
    return data


# --- exclusion commands (entry point: raw identity) -------------------------------------------


class ExclusionRequestedPayload(Contract):
    identity: Identity
    duration: str = Field(description="ChipOut style: +Nd or +Nm; +12m means until further notice")
    scope: Scope = SCOPE_ALL
    jurisdiction: str = "SE"
    attested: bool = Field(default=False, description="the operator has the person's consent already")
    year_of_birth: int | None = Field(default=None, ge=1900, le=2100)
    gender: Literal["M", "F", "U"] | None = None


class RequestExclusion(Event):
    """A person, or an operator on their behalf, asks for a self-exclusion."""

    topic: ClassVar[str] = topics.EXCLUSION_COMMANDS
    type: Literal["exclusion.request"] = "exclusion.request"
    payload: ExclusionRequestedPayload

    def redacted(self, hasher: Hasher) -> dict[str, Any]:
        return _redact_identity(self, hasher)


# --- exclusion lifecycle (pseudonymous from here on) ------------------------------------------


class ExclusionActivatedPayload(Contract):
    exclusion_id: uuid.UUID
    identifiers: list[str] = Field(description="keyed hashes of the person's identifiers")
    scope: Scope
    jurisdiction: str
    starts_at: AwareDatetime
    ends_at: AwareDatetime | None = Field(default=None, description="None: until further notice")


class ExclusionActivated(Event):
    """An exclusion is in force: every operator must refuse the person from now on."""

    topic: ClassVar[str] = topics.EXCLUSION_LIFECYCLE
    type: Literal["exclusion.activated"] = "exclusion.activated"
    payload: ExclusionActivatedPayload


LifecycleEvent = Annotated[Union[ExclusionActivated], Field(discriminator="type")]


# --- account events and decisions -------------------------------------------------------------


class AccountEventPayload(Contract):
    operator_event_id: str = Field(min_length=1, max_length=200)
    account_id: str = Field(min_length=1, max_length=200)
    kind: AccountEventKind
    game: Game | None = Field(default=None, description="the game category of a bet")
    channel: MarketingChannel | None = Field(default=None, description="the channel of a marketing send")
    identity: Identity


class AccountEventOccurred(Event):
    """An operator reports something a customer is doing and waits for the decision."""

    topic: ClassVar[str] = topics.ACCOUNT_EVENTS
    type: Literal["account.event"] = "account.event"
    operator_id: str = Field(min_length=1, max_length=100)
    payload: AccountEventPayload

    def key(self) -> bytes:
        return f"{self.operator_id}:{self.payload.account_id}".encode()

    def redacted(self, hasher: Hasher) -> dict[str, Any]:
        return _redact_identity(self, hasher)


class DecisionPayload(Contract):
    account_event_id: uuid.UUID
    operator_event_id: str
    account_id: str
    kind: AccountEventKind
    outcome: Outcome
    code: Literal["Self-Excluded"] | None = None
    message: str | None = None
    ends_on: date | None = None
    scope: Scope | None = None
    matched: list[str] = Field(default_factory=list, description="identifier kinds that matched")
    flags: list[str] = Field(default_factory=list)


class DecisionMade(Event):
    """Blocking's answer to one account event: ALLOW, or BLOCK and why."""

    topic: ClassVar[str] = topics.DECISIONS
    type: Literal["decision.made"] = "decision.made"
    payload: DecisionPayload

    def key(self) -> bytes:
        return f"{self.operator_id}:{self.payload.account_id}".encode()


# --- dead letters ---------------------------------------------------------------------------


class MessageDeadLetteredPayload(Contract):
    topic: str
    partition: int | None = None
    offset: int | None = None
    key: str | None = None
    consumer: str
    error: str
    original: str = Field(description="the original bytes, base64")


class MessageDeadLettered(Event):
    """A consumer could not handle a message; here it is, with the reason, to be looked at."""

    topic: ClassVar[str] = topics.DEAD_LETTER
    type: Literal["message.dead_lettered"] = "message.dead_lettered"
    payload: MessageDeadLetteredPayload

    def redacted(self, hasher: Hasher) -> dict[str, Any]:
        # The original bytes may hold raw personal data: the audit log keeps only their digest.
        import hashlib

        data = self.model_dump(mode="json")
        data["payload"]["original"] = "sha256:" + hashlib.sha256(self.payload.original.encode()).hexdigest()
        return data


EVENT_TYPES: dict[str, type[Event]] = {
    model.model_fields["type"].default: model
    for model in (RequestExclusion, ExclusionActivated, AccountEventOccurred, DecisionMade, MessageDeadLettered)
}

_lifecycle_adapter: TypeAdapter = TypeAdapter(LifecycleEvent)


def parse_event(data: dict[str, Any]) -> Event:
    """The typed event for a known type, else the bare envelope."""
    model = EVENT_TYPES.get(data.get("type", ""))
    return model.model_validate(data) if model else Envelope.model_validate(data)
