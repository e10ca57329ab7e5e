"""Event contracts: the envelope every message travels in, and the typed, versioned payloads.

Evolve a contract by adding optional fields; consumers ignore fields they do not know. A model that
carries raw identity (an entry-point message) says how to show itself without it (``redacted``).
"""

import base64
import hashlib
import json
import uuid
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from shared import topics
from shared.identity import Hasher, IdentifierKind, Identity, IdentityError

EVENT_NAMESPACE = uuid.UUID("5e1f0e8c-6b1d-4a8e-9d63-3c51d0c0f3a7")


def utcnow() -> datetime:
    return datetime.now(UTC)


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

    def union(self, other: "Scope") -> "Scope":
        """Both scopes together: extending an exclusion never narrows what it covers."""
        games = self.games | other.games
        if Game.ALL in games:
            games = frozenset({Game.ALL})
        return Scope(types=self.types | other.types, games=games)


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
    """A decision's outcome. UNAVAILABLE: Selfex could not tell (its view may be incomplete, or the
    event's identity names nobody); operators treat it as a block."""

    ALLOW = "ALLOW"
    BLOCK = "BLOCK"
    UNAVAILABLE = "UNAVAILABLE"


# --- the envelope ----------------------------------------------------------------------------


class Event(Contract):
    """The envelope: identity of the message, where it came from, and what caused it.

    ``versions`` are the contract versions this code can read; a message of another version is
    refused (and so dead-lettered), never read as if it were one it knows.
    """

    topic: ClassVar[str]
    versions: ClassVar[frozenset[int] | None] = frozenset({1})  # None: any (the bare envelope)

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

    @field_validator("version")
    @classmethod
    def _a_version_this_code_knows(cls, version: int, info: ValidationInfo) -> int:
        if cls.versions is not None and version not in cls.versions:
            known = ", ".join(str(v) for v in sorted(cls.versions))
            raise ValueError(f"version {version} of {info.data.get('type', cls.__name__)} is unknown here (known: {known})")
        return version

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

    versions: ClassVar[frozenset[int] | None] = None
    payload: dict[str, Any] = Field(default_factory=dict)

    def redacted(self, hasher: Hasher) -> dict[str, Any]:
        """The envelope, and of a payload nobody vouched for only its digest and size: it may hold anything."""
        data = self.model_dump(mode="json")
        canonical = json.dumps(data["payload"], sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")
        data["payload"] = {"withheld": "unknown event type", "sha256": hashlib.sha256(canonical).hexdigest(), "size": len(canonical)}
        return data


def _redact_identity(event: Event, hasher: Hasher) -> dict[str, Any]:
    data = event.model_dump(mode="json")
    identity: Identity = event.payload.identity
    try:
        data["payload"]["identity"] = sorted(hasher.identifiers(identity).values())
    except ValueError:
        data["payload"]["identity"] = "[unhashable identity withheld]"
    return data


# --- exclusion commands (entry point: raw identity) -------------------------------------------


class Channel(StrEnum):
    """How a request reached Selfex, which decides how it is verified."""

    OPERATOR = "operator"  # operator-attested (ChipOut's POST, an "exclude me" button): no verification
    REGISTER = "register"  # imported from a register's change feed or topic (the forwarder's sync): in force at once
    PORTAL = "portal"  # the person, on the self-service portal: a one-time code or a document check
    THIRD_PARTY = "third_party"  # a regulator or family member applies (OASIS, CRUKS)


class ThirdPartyApplication(Contract):
    """Who applied for someone else's exclusion, and why. The applicant's name is stored encrypted."""

    applicant: Literal["regulator", "family", "operator"]
    applicant_name: str = Field(min_length=1, max_length=200)
    reason: str = Field(min_length=1, max_length=2000)


class SupportPerson(Contract):
    """Someone the person chose to be told when the exclusion starts and ends (BetStop)."""

    name: str = Field(min_length=1, max_length=200)
    email: str | None = Field(default=None, max_length=254)
    mobile: str | None = Field(default=None, max_length=32)


class ExclusionRequestedPayload(Contract):
    identity: Identity
    duration: str = Field(description="ChipOut style: +Nd or +Nm; +12m means until further notice in SE")
    scope: Scope = SCOPE_ALL
    jurisdiction: str = "SE"
    attested: bool = Field(default=False, description="the operator has the person's consent already")
    channel: Channel | None = Field(default=None, description="default: operator when attested, else portal")
    verify_by: Literal["email", "sms"] | None = Field(default=None, description="where a portal request's code goes")
    locale: str | None = Field(default=None, max_length=16)
    year_of_birth: int | None = Field(default=None, ge=1900, le=2100)
    gender: Literal["M", "F", "U"] | None = None
    third_party: ThirdPartyApplication | None = None
    support_persons: list[SupportPerson] = Field(default_factory=list, max_length=10)
    origin: str | None = Field(
        default=None, max_length=100, description="the Selfex deployment the exclusion was first made at, when another one forwarded it"
    )

    def effective_channel(self) -> Channel:
        if self.channel is not None:
            return self.channel
        if self.third_party is not None:
            return Channel.THIRD_PARTY
        return Channel.OPERATOR if self.attested else Channel.PORTAL


# The kind of identifier that keys a person's commands, strongest first (the registers' match order).
PERSON_KEY_KINDS = (IdentifierKind.NATIONAL_ID, IdentifierKind.NAME_DOB_POSTCODE, IdentifierKind.EMAIL, IdentifierKind.MOBILE)


def person_key(hasher: Hasher, identity: Identity, region: str = "GB") -> str | None:
    """The keyed hash of the identity's strongest personal identifier; None if it names nobody usable.

    Whichever path builds a command for a person (ChipOut, native, portal), it gets this key, so
    one person's commands share a partition and one registration replica applies them in order.
    """
    try:
        identifiers = hasher.identifiers(identity, region)
    except IdentityError:
        return None
    return next((identifiers[kind] for kind in PERSON_KEY_KINDS if kind in identifiers), None)


class RequestExclusion(Event):
    """A person, or an operator or third party on their behalf, asks for an exclusion."""

    topic: ClassVar[str] = topics.EXCLUSION_COMMANDS
    type: Literal["exclusion.request"] = "exclusion.request"
    payload: ExclusionRequestedPayload

    def for_person(self, hasher: Hasher, region: str = "GB") -> Self:
        """This request keyed (``subject``) by its person's strongest identifier hash, never raw data."""
        return self.model_copy(update={"subject": person_key(hasher, self.payload.identity, region)})

    def redacted(self, hasher: Hasher) -> dict[str, Any]:
        data = _redact_identity(self, hasher)
        if data["payload"].get("third_party"):
            data["payload"]["third_party"]["applicant_name"] = "[withheld]"
        data["payload"]["support_persons"] = len(self.payload.support_persons)
        return data


class LiftRequestedPayload(Contract):
    exclusion_id: uuid.UUID | None = Field(default=None, description="the exclusion, when the caller knows it")
    identity: Identity | None = Field(default=None, description="else: the person, whose running exclusion ends")


class RequestLift(Event):
    """The first contract's lift request, kept readable. Registration no longer ends anything on it:
    an unproven lift is dead-lettered. A lift is the person's act, proven by a code (``RequestLiftVerification``,
    then ``LiftVerified`` from verification)."""

    topic: ClassVar[str] = topics.EXCLUSION_COMMANDS
    type: Literal["exclusion.lift_request"] = "exclusion.lift_request"
    payload: LiftRequestedPayload

    def for_person(self, hasher: Hasher, region: str = "GB", *, identity: Identity | None = None) -> Self:
        """Keyed like the person's requests: by the person it names, or ``identity`` when it names the exclusion only."""
        identity = identity or self.payload.identity
        return self.model_copy(update={"subject": person_key(hasher, identity, region)}) if identity else self

    def redacted(self, hasher: Hasher) -> dict[str, Any]:
        return _redact_identity(self, hasher) if self.payload.identity else self.model_dump(mode="json")


class CancellationPayload(Contract):
    exclusion_id: uuid.UUID
    reason: str = Field(min_length=1, max_length=2000, description="why the exclusion was made in error")
    cancelled_by: str = Field(min_length=1, max_length=200, description="the register staff member (their key's name)")


class CancelExclusion(Event):
    """Register staff cancel an exclusion made in error, with the reason; audited like every command."""

    topic: ClassVar[str] = topics.EXCLUSION_COMMANDS
    type: Literal["exclusion.cancel"] = "exclusion.cancel"
    payload: CancellationPayload

    def key(self) -> bytes:
        """By the person when known (their commands stay in order), else by the exclusion."""
        return (self.subject or str(self.payload.exclusion_id)).encode()


class ForwardingIdentity(Contract):
    """What a register needs to know the person by, sealed by registration for the forwarder alone
    (``sealing_context``): the identifying fields of the request, and year of birth and gender for
    the register's statistics. Never on a topic or in a store in clear."""

    identity: Identity
    year_of_birth: int | None = None
    gender: Literal["M", "F", "U"] | None = None

    @staticmethod
    def sealing_context(exclusion_id: uuid.UUID | str) -> str:
        return f"forwarding:{exclusion_id}"


class ImportedExclusionPayload(Contract):
    from_register: str = Field(min_length=1, max_length=100, description="the register it was read from (a forwarder setting)")
    register_exclusion_id: str = Field(min_length=1, max_length=100)
    origin: str = Field(
        min_length=1, max_length=100, description="where it was first made: the register, or a deployment that forwarded it there"
    )
    identifiers: list[str] = Field(min_length=1, max_length=64, description="keyed hashes (the federation's hash key)")
    scope: Scope = SCOPE_ALL
    jurisdiction: str
    in_force: bool = Field(description="False: it ended at the register (lifted, expired, cancelled)")
    ended_as: Literal["lifted", "expired", "cancelled"] | None = None
    starts_at: AwareDatetime
    ends_at: AwareDatetime | None = None
    duration: str | None = None
    register_version: int = 1


class ImportExclusion(Event):
    """The forwarder's sync read an exclusion (or its end) from the register: register it here, in force at
    once, marked with where it came from (so it is never forwarded back). Pseudonymous: hashes only."""

    topic: ClassVar[str] = topics.EXCLUSION_COMMANDS
    type: Literal["exclusion.import"] = "exclusion.import"
    payload: ImportedExclusionPayload

    @staticmethod
    def id_for(register: str, register_exclusion_id: str, register_version: int, in_force: bool) -> uuid.UUID:
        """One import per version of a register's exclusion: a page read twice imports nothing twice."""
        return derived_id(f"{register}/{register_exclusion_id}@{register_version}/{'in_force' if in_force else 'ended'}", "import")

    def key(self) -> bytes:
        """By the strongest identifier it names: one person's commands stay in order."""
        if self.subject:
            return self.subject.encode()
        return sorted(self.payload.identifiers)[0].encode()


class OriginEndPayload(Contract):
    exclusion_id: uuid.UUID = Field(description="this deployment's copy of the exclusion the origin forwarded")
    origin: str = Field(min_length=1, max_length=100, description="the deployment that forwarded it, and where it ended")
    ended_as: Literal["lifted", "cancelled"]
    ended_at: AwareDatetime = Field(description="when it ended at the origin (the origin's clock)")


class EndAtOrigin(Event):
    """The deployment that forwarded an exclusion here says it ended there (lifted or cancelled): this
    deployment's copy ends too, only if that deployment's operator alone made it (never one made here,
    joined by another source, or from another origin). Pseudonymous: the exclusion's id only."""

    topic: ClassVar[str] = topics.EXCLUSION_COMMANDS
    type: Literal["exclusion.end_at_origin"] = "exclusion.end_at_origin"
    payload: OriginEndPayload

    def key(self) -> bytes:
        """By the person when known (their commands stay in order), else by the exclusion."""
        return (self.subject or str(self.payload.exclusion_id)).encode()


ExclusionCommand = Annotated[RequestExclusion | RequestLift | CancelExclusion | ImportExclusion | EndAtOrigin, Field(discriminator="type")]


# --- exclusion lifecycle (pseudonymous from here on) ------------------------------------------


class ExclusionState(StrEnum):
    PENDING_VERIFICATION = "pending_verification"
    COOLING_OFF = "cooling_off"
    ACTIVE = "active"
    LIFT_REQUESTED = "lift_requested"
    LIFTED = "lifted"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


# While in these states the person is excluded: every operator refuses them.
EXCLUDING_STATES = frozenset({ExclusionState.ACTIVE, ExclusionState.LIFT_REQUESTED})
# These states are final: the exclusion is history.
FINAL_STATES = frozenset({ExclusionState.LIFTED, ExclusionState.EXPIRED, ExclusionState.CANCELLED})


class ExclusionSnapshot(Contract):
    """An exclusion as it stands after a transition: every lifecycle event carries the whole of it."""

    exclusion_id: uuid.UUID
    identifiers: list[str] = Field(description="keyed hashes of the person's identifiers")
    scope: Scope
    jurisdiction: str
    state: ExclusionState = ExclusionState.ACTIVE
    starts_at: AwareDatetime
    ends_at: AwareDatetime | None = Field(default=None, description="None: until a lift request ends it")
    minimum_until: AwareDatetime | None = Field(default=None, description="no lift takes effect before this")
    lift_effective_at: AwareDatetime | None = Field(default=None, description="when a requested lift takes effect")
    duration: str | None = None
    version: int = 1
    channel: Channel | None = None
    third_party: Literal["regulator", "family", "operator"] | None = None
    verify_by: Literal["email", "sms"] | None = Field(default=None, description="where a portal request's code goes")
    document_check: bool = Field(default=False, description="the policy wants an identity document reviewed")
    reason: str | None = Field(default=None, description="why, for a refusal or a cancellation")
    created_at: AwareDatetime | None = Field(default=None, description="when the request was registered")
    ended_at: AwareDatetime | None = Field(default=None, description="when it was lifted, expired or cancelled")
    origin: str | None = Field(
        default=None, description="the deployment or register it came from (forwarded to us, or imported); None: made here. Never forwarded"
    )
    sealed_identity: str | None = Field(
        default=None, description="what the forwarder sends the register (ForwardingIdentity), sealed to forwarding:{exclusion_id}"
    )

    def excludes(self) -> bool:
        return self.state in EXCLUDING_STATES


# Kept for the first contract's name: an activation's payload is the snapshot.
ExclusionActivatedPayload = ExclusionSnapshot


class _Lifecycle(Event):
    topic: ClassVar[str] = topics.EXCLUSION_LIFECYCLE
    payload: ExclusionSnapshot

    def redacted(self, hasher: Hasher) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        if data["payload"].get("sealed_identity"):
            data["payload"]["sealed_identity"] = "[sealed]"
        return data


class ExclusionRequested(_Lifecycle):
    """A request was registered and waits for the person to prove it is theirs."""

    type: Literal["exclusion.requested"] = "exclusion.requested"


class ExclusionCoolingOffStarted(_Lifecycle):
    """Verified; the policy's cooling-off runs before the exclusion takes effect."""

    type: Literal["exclusion.cooling_off_started"] = "exclusion.cooling_off_started"


class ExclusionActivated(_Lifecycle):
    """An exclusion is in force: every operator must refuse the person from now on."""

    type: Literal["exclusion.activated"] = "exclusion.activated"


class ExclusionExtended(_Lifecycle):
    """A new request lengthened a running exclusion (it is never shortened)."""

    type: Literal["exclusion.extended"] = "exclusion.extended"


class ExclusionEndingSoon(_Lifecycle):
    """The exclusion ends by itself within the policy's reminder window (24 hours by default)."""

    type: Literal["exclusion.ending_soon"] = "exclusion.ending_soon"


class ExclusionExpired(_Lifecycle):
    """The exclusion reached its end and ended by itself."""

    type: Literal["exclusion.expired"] = "exclusion.expired"


class ExclusionLiftRequested(_Lifecycle):
    """The person asked to end it; it stays in force until ``lift_effective_at``."""

    type: Literal["exclusion.lift_requested"] = "exclusion.lift_requested"


class ExclusionLiftRefused(_Lifecycle):
    """A lift request the policy does not allow yet; the exclusion is unchanged."""

    type: Literal["exclusion.lift_refused"] = "exclusion.lift_refused"


class ExclusionLifted(_Lifecycle):
    """The requested lift took effect: the person may gamble again."""

    type: Literal["exclusion.lifted"] = "exclusion.lifted"


class ExclusionCancelled(_Lifecycle):
    """A request never verified (failed, timed out) ended without effect, or register staff cancelled one made in error: ``reason`` says why."""

    type: Literal["exclusion.cancelled"] = "exclusion.cancelled"


LIFECYCLE_EVENTS: tuple[type[_Lifecycle], ...] = (
    ExclusionRequested,
    ExclusionCoolingOffStarted,
    ExclusionActivated,
    ExclusionExtended,
    ExclusionEndingSoon,
    ExclusionExpired,
    ExclusionLiftRequested,
    ExclusionLiftRefused,
    ExclusionLifted,
    ExclusionCancelled,
)
LifecycleEvent = Annotated[
    ExclusionRequested
    | ExclusionCoolingOffStarted
    | ExclusionActivated
    | ExclusionExtended
    | ExclusionEndingSoon
    | ExclusionExpired
    | ExclusionLiftRequested
    | ExclusionLiftRefused
    | ExclusionLifted
    | ExclusionCancelled,
    Field(discriminator="type"),
]


# --- verification ---------------------------------------------------------------------------


class _KeyedByExclusion(Event):
    """One exclusion's verification messages share a partition, so they stay in order."""

    def key(self) -> bytes:
        return str(self.payload.exclusion_id).encode()


class CodeSubmittedPayload(Contract):
    exclusion_id: uuid.UUID
    sealed_code: str = Field(description="the code as typed, sealed (AES-GCM) by the gateway")
    lift_id: uuid.UUID | None = Field(default=None, description="the lift verification the code is for; None: the exclusion request's")

    @staticmethod
    def sealing_context(exclusion_id: uuid.UUID | str) -> str:
        """What a typed code is sealed to on its way from the portal: that exclusion (or that lift
        verification: pass its ``lift_id``), and nothing else."""
        return f"verification-code:{exclusion_id}"


class SubmitCode(_KeyedByExclusion):
    """The person typed the one-time code they received."""

    topic: ClassVar[str] = topics.VERIFICATION_INPUTS
    type: Literal["verification.code_submitted"] = "verification.code_submitted"
    payload: CodeSubmittedPayload


class CodeResendPayload(Contract):
    exclusion_id: uuid.UUID
    lift_id: uuid.UUID | None = Field(default=None, description="a new code for this lift verification; None: the exclusion request's")


class ResendCode(_KeyedByExclusion):
    """The person asks for a new one-time code (at most 3 times)."""

    topic: ClassVar[str] = topics.VERIFICATION_INPUTS
    type: Literal["verification.code_resend"] = "verification.code_resend"
    payload: CodeResendPayload


class DocumentSubmittedPayload(Contract):
    exclusion_id: uuid.UUID
    document_id: str = Field(description="the encrypted document, stored by the gateway")
    content_type: Literal["application/pdf", "image/jpeg", "image/png"]
    size: int = Field(gt=0, le=10 * 1024 * 1024)


class SubmitDocument(_KeyedByExclusion):
    """The person uploaded an identity document for review."""

    topic: ClassVar[str] = topics.VERIFICATION_INPUTS
    type: Literal["verification.document_submitted"] = "verification.document_submitted"
    payload: DocumentSubmittedPayload


class DocumentReviewedPayload(Contract):
    exclusion_id: uuid.UUID
    document_id: str
    approved: bool
    reviewer: str = Field(min_length=1, max_length=200)
    note: str | None = Field(default=None, max_length=2000)


class ReviewDocument(_KeyedByExclusion):
    """A reviewer approved or rejected an identity document."""

    topic: ClassVar[str] = topics.VERIFICATION_INPUTS
    type: Literal["verification.document_reviewed"] = "verification.document_reviewed"
    payload: DocumentReviewedPayload


class LiftVerificationRequestedPayload(Contract):
    lift_id: uuid.UUID = Field(description="the lift verification's id, chosen by whoever relays the request")
    exclusion_id: uuid.UUID
    verify_by: Literal["email", "sms"] | None = Field(default=None, description="where the code goes; None: any contact on file")
    locale: str | None = Field(default=None, max_length=16)


class RequestLiftVerification(_KeyedByExclusion):
    """The person (or an operator relaying them) asks to lift an exclusion: a one-time code goes to the
    person's contact on file (``subject``: the person), and only that code completes the request."""

    topic: ClassVar[str] = topics.VERIFICATION_INPUTS
    type: Literal["verification.lift_request"] = "verification.lift_request"
    payload: LiftVerificationRequestedPayload


VerificationInput = Annotated[
    SubmitCode | ResendCode | SubmitDocument | ReviewDocument | RequestLiftVerification, Field(discriminator="type")
]


class VerificationOutcomePayload(Contract):
    exclusion_id: uuid.UUID
    method: Literal["code", "document"]
    reason: str | None = None
    lift_id: uuid.UUID | None = Field(
        default=None, description="set when a lift verification ended so; the exclusion is untouched by its failure"
    )


class ExclusionVerified(_KeyedByExclusion):
    """The person proved the request is theirs."""

    topic: ClassVar[str] = topics.VERIFICATION_EVENTS
    type: Literal["exclusion.verified"] = "exclusion.verified"
    payload: VerificationOutcomePayload


class LiftVerified(_KeyedByExclusion):
    """The person proved, with the code sent to their contact, that the lift request is theirs; the
    policy now says whether and when the exclusion ends. One per lift verification (``id_for``)."""

    topic: ClassVar[str] = topics.VERIFICATION_EVENTS
    type: Literal["verification.lift_verified"] = "verification.lift_verified"
    payload: VerificationOutcomePayload

    @staticmethod
    def id_for(lift_id: uuid.UUID | str) -> uuid.UUID:
        """The id of the one LiftVerified a lift verification can lead to (what registration's answer is caused by)."""
        return derived_id(lift_id, "verification.lift_verified")


class VerificationFailed(_KeyedByExclusion):
    """Attempts exhausted, the code expired, or the document was rejected: the request ends."""

    topic: ClassVar[str] = topics.VERIFICATION_EVENTS
    type: Literal["verification.failed"] = "verification.failed"
    payload: VerificationOutcomePayload


class SubmissionRefusedPayload(Contract):
    exclusion_id: uuid.UUID
    reason: str
    lift_id: uuid.UUID | None = None


class VerificationSubmissionRefused(_KeyedByExclusion):
    """A code that was wrong, late, repeated or for another request; nothing else changed."""

    topic: ClassVar[str] = topics.VERIFICATION_EVENTS
    type: Literal["verification.submission_refused"] = "verification.submission_refused"
    payload: SubmissionRefusedPayload


class VerificationStanding(Contract):
    """A verification as it stands: what the portal shows the person about it."""

    method: Literal["code", "document"]
    state: str = Field(description="awaiting_code, awaiting_document, awaiting_review, verified, failed or cancelled")
    attempts_left: int | None = Field(default=None, description="codes only")
    resends_left: int | None = Field(default=None, description="codes only")
    code_expires_at: AwareDatetime | None = None
    version: int = 1


class SubmissionAnswer(Contract):
    """What became of one submission (a code, a resend, a document, a review)."""

    submission_id: uuid.UUID
    status: str = Field(description="e.g. verified, code_sent, wrong_code, expired")
    refused: bool = Field(description="nothing about the request changed (a wrong code only uses up an attempt)")
    reason: str
    attempts_left: int | None = None
    resends_left: int | None = None


class VerificationProgressedPayload(Contract):
    exclusion_id: uuid.UUID
    verification: VerificationStanding | None = Field(default=None, description="None: no verification is open for the request")
    answer: SubmissionAnswer | None = Field(default=None, description="when a submission caused it")
    lift_id: uuid.UUID | None = Field(default=None, description="set for a lift verification (its standing is kept under this id)")


class VerificationProgressed(_KeyedByExclusion):
    """A verification started, moved on, or answered a submission: where it now stands (the portal's read model)."""

    topic: ClassVar[str] = topics.VERIFICATION_EVENTS
    type: Literal["verification.progressed"] = "verification.progressed"
    payload: VerificationProgressedPayload


VerificationEvent = Annotated[
    ExclusionVerified | LiftVerified | VerificationFailed | VerificationSubmissionRefused | VerificationProgressed,
    Field(discriminator="type"),
]


# --- notification requests -------------------------------------------------------------------


class NotificationRequestedPayload(Contract):
    template: str = Field(description="e.g. verification_code, exclusion_activated, exclusion_ending_soon")
    recipient: Literal["person", "support_persons", "applicant"] = "person"
    channel: Literal["email", "sms", "any"] = "any"
    locale: str | None = None
    params: dict[str, str] = Field(default_factory=dict, description="nothing personal")
    sealed_params: str | None = Field(default=None, description="secrets such as a code, sealed with AES-GCM")
    sealed_contacts: list[str] = Field(
        default_factory=list,
        description="for support persons: each one's SupportPerson JSON, sealed to support_person:{exclusion_id} (Sealer tokens)",
    )


class NotificationRequested(Event):
    """Tell someone something; the notification service finds their (encrypted) contact by subject."""

    topic: ClassVar[str] = topics.NOTIFICATION_REQUESTS
    type: Literal["notification.requested"] = "notification.requested"
    payload: NotificationRequestedPayload


class ContactsRecordedPayload(Contract):
    """Where a person can be told things: Sealer tokens (sealed to ``contact:{subject}``), never clear text."""

    email: str | None = Field(default=None, description="the e-mail address, sealed")
    mobile: str | None = Field(default=None, description="the E.164 mobile number, sealed")
    locale: str | None = Field(default=None, max_length=16)
    jurisdiction: str | None = None

    @staticmethod
    def sealing_context(subject: str) -> str:
        """What a person's contacts are sealed to: that person, and nothing else."""
        return f"contact:{subject}"


class ContactsRecorded(Event):
    """Registration kept a person's contact details (sealed); a contact not named keeps what was known."""

    topic: ClassVar[str] = topics.PERSON_CONTACTS
    type: Literal["person.contacts_recorded"] = "person.contacts_recorded"
    payload: ContactsRecordedPayload

    def redacted(self, hasher: Hasher) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        for kind in ("email", "mobile"):
            data["payload"][kind] = "[sealed]" if data["payload"][kind] else None
        return data


class DeliveryOutcome(StrEnum):
    """What became of one attempt (or, with no attempt, of the notification)."""

    SENT = "sent"
    TEMPORARY_FAILURE = "temporary_failure"  # retried, unless the attempts are spent
    PERMANENT_FAILURE = "permanent_failure"  # never retried
    GAVE_UP = "gave_up"  # every attempt failed for a passing reason
    UNCONFIRMED = "unconfirmed"  # an attempt began and the service stopped before its outcome: never sent again
    DEFERRED = "deferred"  # quiet hours: sent when they end
    SUPPRESSED = "suppressed"  # the per-person cap was reached
    NO_CONTACT = "no_contact"  # nobody to send it to


class DeliveryRecordedPayload(Contract):
    notification_id: str = Field(description="the notification (its cause's id, and the recipient's number)")
    cause_id: uuid.UUID
    kind: str = Field(description="the message, e.g. verification_code, exclusion_started")
    recipient: Literal["person", "support_persons", "applicant"] = "person"
    channel: Literal["email", "sms"] | None = None
    locale: str | None = None
    attempt: int = Field(default=0, ge=0, description="the attempt's number; 0: no attempt was made")
    outcome: DeliveryOutcome
    final: bool = Field(description="nothing more will be attempted")
    reason: str | None = Field(default=None, max_length=500, description="never an address or the message's text")
    message_id: str | None = Field(default=None, description="the e-mail's Message-ID, the same for every attempt")
    due_at: AwareDatetime | None = Field(default=None, description="a deferred message goes out then")


class DeliveryRecorded(Event):
    """The notification service tried (or declined) to deliver a notification: one per attempt and outcome."""

    topic: ClassVar[str] = topics.NOTIFICATION_DELIVERIES
    type: Literal["notification.delivery_recorded"] = "notification.delivery_recorded"
    payload: DeliveryRecordedPayload


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
    code: Literal["Self-Excluded", "Unavailable"] | None = None
    message: str | None = None
    ends_on: date | None = None
    scope: Scope | None = None
    matched: list[str] = Field(default_factory=list, description="identifier kinds that matched")
    flags: list[str] = Field(default_factory=list)
    reason: str | None = Field(default=None, description="why the event could not be checked (UNAVAILABLE, treated as a block)")


class DecisionMade(Event):
    """Blocking's answer to one account event: ALLOW, BLOCK and why, or UNAVAILABLE (treat as a block) and why."""

    topic: ClassVar[str] = topics.DECISIONS
    type: Literal["decision.made"] = "decision.made"
    payload: DecisionPayload

    def key(self) -> bytes:
        return f"{self.operator_id}:{self.payload.account_id}".encode()


class EnforcementPayload(Contract):
    account_id: str
    action: Literal["end_sessions", "lift"]
    exclusion_id: uuid.UUID
    ends_on: date | None = None
    message: str | None = None


class EnforcementCommanded(Event):
    """Tell an operator to end an account's sessions now (an exclusion began) or to lift that (it ended)."""

    topic: ClassVar[str] = topics.ENFORCEMENT
    type: Literal["enforcement.commanded"] = "enforcement.commanded"
    operator_id: str
    payload: EnforcementPayload

    def key(self) -> bytes:
        return f"{self.operator_id}:{self.payload.account_id}".encode()


# --- gateway requests ------------------------------------------------------------------------


class RequestHandledPayload(Contract):
    request_id: str = Field(description="the X-Request-Id answered (GAMSTOP's X-Unique-Id)")
    method: str = Field(max_length=16)
    route: str = Field(max_length=200, description="the route's path template; never the query string")
    api: Literal["chipout", "gamstop", "native", "portal", "operations", "other"]
    status: int
    outcome: str | None = Field(default=None, max_length=200, description="e.g. Y/N/P, created, the field at fault")
    trace_id: str | None = Field(default=None, max_length=200, description="the caller's X-Trace-Id")
    key_fingerprint: str | None = Field(default=None, description="first hex of SHA-256 of a key presented but not accepted")
    duration_ms: float = 0.0
    count: int | None = Field(default=None, description="records in a batch")


class RequestHandled(Event):
    """The gateway answered one HTTP request: who, what, when, outcome; never the personal data in it."""

    topic: ClassVar[str] = topics.GATEWAY_REQUESTS
    type: Literal["gateway.request_handled"] = "gateway.request_handled"
    payload: RequestHandledPayload

    def key(self) -> bytes | None:
        return self.operator_id.encode() if self.operator_id else None


# --- forwarding ------------------------------------------------------------------------------

# The lifecycle changes a register's reader acts on, and the name each has in the change feed and on
# a register's topic; the rest (a request waiting, a reminder, a refused or pending lift) change nothing.
REGISTER_CHANGES = {
    "exclusion.activated": "activated",
    "exclusion.extended": "extended",
    "exclusion.lifted": "lifted",
    "exclusion.expired": "expired",
    "exclusion.cancelled": "cancelled",
}


class RegisterChange(Contract):
    """One change of a register's exclusion, as its change feed (``GET /v1/register/changes``) and its
    Kafka topic carry it: keyed hashes only, never a raw field."""

    exclusion_id: str
    version: int
    change: Literal["activated", "extended", "lifted", "expired", "cancelled"]
    in_force: bool
    ended_as: Literal["lifted", "expired", "cancelled"] | None = None
    identifiers: list[str] = Field(min_length=1, max_length=64)
    scope: Scope
    jurisdiction: str
    starts_at: AwareDatetime
    ends_at: AwareDatetime | None = None
    duration: str | None = None
    origin: str = Field(description="where it was first made: the register, or a deployment that forwarded it there")
    occurred_at: AwareDatetime | None = None

    @classmethod
    def of(
        cls, event_type: str, snapshot: ExclusionSnapshot, register: str, occurred_at: datetime | None = None
    ) -> "RegisterChange | None":
        """The change a lifecycle event makes, or None for one a reader need not act on (an extension that lengthened nothing)."""
        kind = REGISTER_CHANGES.get(event_type)
        if kind is None or (kind == "extended" and snapshot.reason):
            return None
        in_force = snapshot.state in EXCLUDING_STATES
        return cls(
            exclusion_id=str(snapshot.exclusion_id),
            version=snapshot.version,
            change=kind,
            in_force=in_force,
            ended_as=None if in_force else (kind if kind in ("lifted", "expired", "cancelled") else "expired"),
            identifiers=snapshot.identifiers,
            scope=snapshot.scope,
            jurisdiction=snapshot.jurisdiction,
            starts_at=snapshot.starts_at,
            ends_at=snapshot.ends_at,
            duration=snapshot.duration,
            origin=snapshot.origin or register,
            occurred_at=occurred_at,
        )

    def imported(self, register: str, subject: str | None) -> "ImportExclusion":
        """The command that registers this change at a reader (``subject``: the person's key there)."""
        payload = ImportedExclusionPayload(
            from_register=register,
            register_exclusion_id=self.exclusion_id,
            origin=self.origin,
            identifiers=self.identifiers,
            scope=self.scope,
            jurisdiction=self.jurisdiction,
            in_force=self.in_force,
            ended_as=self.ended_as,
            starts_at=self.starts_at,
            ends_at=self.ends_at,
            duration=self.duration,
            register_version=self.version,
        )
        return ImportExclusion(
            id=ImportExclusion.id_for(register, self.exclusion_id, self.version, self.in_force),
            source="forwarder",
            subject=subject,
            payload=payload,
        )


class ForwardingPayload(Contract):
    delivery_id: str = Field(description="the delivery: its idempotency key at the register")
    exclusion_id: uuid.UUID
    change: str = Field(description="the lifecycle event type it forwards")
    to_register: str
    adapter: Literal["native", "chipout", "kafka"]
    attempts: int = Field(ge=0)
    reason: str | None = Field(default=None, max_length=500, description="why it failed; never personal data")


class ExclusionForwarded(Event):
    """The forwarder delivered one exclusion change to the register (the register acknowledged it)."""

    topic: ClassVar[str] = topics.FORWARDING_EVENTS
    type: Literal["forwarding.delivered"] = "forwarding.delivered"
    payload: ForwardingPayload


class ForwardingFailed(Event):
    """An alert: a delivery to the register failed after the retry budget, or can never succeed; it
    waits as failed for ``selfex forwarder replay``."""

    topic: ClassVar[str] = topics.FORWARDING_EVENTS
    type: Literal["forwarding.failed"] = "forwarding.failed"
    payload: ForwardingPayload


class ForwardingStatusPayload(Contract):
    """How far behind the register this deployment is, at ``occurred_at``: counts and moments only."""

    to_register: str | None = Field(default=None, max_length=100, description="the register forwarded to; None: only imports")
    adapter: Literal["native", "chipout", "kafka"] | None = None
    pending: int = Field(ge=0, description="deliveries not yet delivered (nor failed)")
    failed: int = Field(ge=0, description="deliveries failed, waiting for a replay")
    oldest_pending_at: AwareDatetime | None = Field(default=None, description="when the oldest undelivered exclusion was recorded")
    oldest_pending_age_seconds: float | None = Field(default=None, ge=0, description="its age at occurred_at")
    last_delivered_at: AwareDatetime | None = None
    last_sync_at: AwareDatetime | None = Field(default=None, description="the last successful sync from the register")
    last_sync_age_seconds: float | None = Field(default=None, ge=0, description="its age at occurred_at")
    breaker: str | None = Field(default=None, max_length=20, description="the register's circuit breaker: closed, opened, half-opened")
    stopping: bool = Field(default=False, description="the forwarder's last status before it stopped")


class ForwardingStatusReported(Event):
    """The forwarder's lag, reported periodically and when it stops: keyed by the register."""

    topic: ClassVar[str] = topics.FORWARDING_EVENTS
    type: Literal["forwarding.status"] = "forwarding.status"
    payload: ForwardingStatusPayload

    def key(self) -> bytes | None:
        return self.payload.to_register.encode() if self.payload.to_register else None


# --- dead letters ---------------------------------------------------------------------------


class MessageDeadLetteredPayload(Contract):
    """Where the refused message was, why, and what it was: a digest in clear, the bytes sealed.

    Version 2: the original's bytes, up to the parking consumer's bound, are sealed (AES-GCM, key id
    kept) in ``sealed_original``, so no raw personal data sits in clear on the dead-letter topic and
    the dead letter stays small whatever the original's size. Version 1 carried them in clear
    (``original``, base64); it is still read.
    """

    topic: str
    partition: int | None = None
    offset: int | None = None
    key: str | None = Field(default=None, description="the record's key, cut to its first 200 characters")
    consumer: str
    error: str = Field(description="the reason, bounded; never quotes the input")
    original: str | None = Field(default=None, description="version 1 only: the original bytes, base64")
    original_sha256: str | None = Field(default=None, description="hex SHA-256 of the whole original")
    original_size: int | None = Field(default=None, ge=0, description="bytes in the whole original")
    sealed_original: str | None = Field(default=None, description="the original, up to the bound, sealed (Sealer)")
    original_truncated: bool = Field(default=False, description="the sealed bytes are only the original's start")

    def sealing_context(self) -> str:
        """What the sealed original is bound to: it opens only as the original of this position."""
        return f"dead-letter/{self.topic}/{self.partition}/{self.offset}"

    def digest(self) -> str:
        """``sha256:<hex>`` of the whole original, whichever version carried it."""
        if self.original_sha256 is not None:
            return f"sha256:{self.original_sha256}"
        import hashlib

        return "sha256:" + hashlib.sha256(base64.b64decode(self.original or "")).hexdigest()


class MessageDeadLettered(Event):
    """A consumer could not handle a message; here it is, with the reason, to be looked at."""

    topic: ClassVar[str] = topics.DEAD_LETTER
    versions: ClassVar[frozenset[int] | None] = frozenset({1, 2})
    type: Literal["message.dead_lettered"] = "message.dead_lettered"
    version: int = 2
    payload: MessageDeadLetteredPayload

    def redacted(self, hasher: Hasher) -> dict[str, Any]:
        # The original bytes may hold raw personal data: the audit log keeps only their digest.
        data = self.model_dump(mode="json")
        data["payload"]["original"] = self.payload.digest()
        data["payload"].pop("sealed_original", None)
        return data


_EVENT_MODELS: tuple[type[Event], ...] = (
    RequestExclusion,
    RequestLift,
    CancelExclusion,
    ImportExclusion,
    EndAtOrigin,
    *LIFECYCLE_EVENTS,
    SubmitCode,
    ResendCode,
    SubmitDocument,
    ReviewDocument,
    RequestLiftVerification,
    ExclusionVerified,
    LiftVerified,
    VerificationFailed,
    VerificationSubmissionRefused,
    VerificationProgressed,
    NotificationRequested,
    ContactsRecorded,
    DeliveryRecorded,
    AccountEventOccurred,
    DecisionMade,
    EnforcementCommanded,
    MessageDeadLettered,
    RequestHandled,
    ExclusionForwarded,
    ForwardingFailed,
    ForwardingStatusReported,
)
EVENT_TYPES: dict[str, type[Event]] = {model.model_fields["type"].default: model for model in _EVENT_MODELS}


def parse_event(data: dict[str, Any]) -> Event:
    """The typed event for a known type, else the bare envelope."""
    model = EVENT_TYPES.get(data.get("type", ""))
    return model.model_validate(data) if model else Envelope.model_validate(data)
