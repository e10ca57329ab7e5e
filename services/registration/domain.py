"""The exclusion aggregate and how a request becomes one. No I/O, no clock reads.

A request is read against its jurisdiction's policy (``terms_for``): what it may not ask for is
refused with a clear reason. A request for someone with no exclusion running opens a new one
(``exclude``); what happens to a running one is in ``transitions``.
"""

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pydantic import AwareDatetime, BaseModel, ConfigDict

from shared.events import (
    FINAL_STATES,
    Channel,
    ExclusionRequestedPayload,
    ExclusionSnapshot,
    ExclusionState,
    ImportExclusion,
    RequestExclusion,
    Scope,
    derived_id,
)
from shared.identity import PERSONAL_KINDS, IdentifierKind
from shared.policies import DurationError, Policy, Terms, shipped_policies

SOURCE = "registration"

# An exclusion in one of these states is still running: a new request for the person extends it.
RUNNING_STATES = frozenset(
    {
        ExclusionState.PENDING_VERIFICATION,
        ExclusionState.COOLING_OFF,
        ExclusionState.ACTIVE,
        ExclusionState.LIFT_REQUESTED,
    }
)
# The order in which identifier kinds decide between two persons a request could belong to.
MATCH_PRIORITY = (
    IdentifierKind.NATIONAL_ID,
    IdentifierKind.NAME_DOB_POSTCODE,
    IdentifierKind.EMAIL,
    IdentifierKind.MOBILE,
)


class IdentityRequiredError(ValueError):
    """A request that names nobody: no personal identifier at all."""


class RequestRefusedError(ValueError):
    """A well-formed request the jurisdiction's policy does not allow; there is no exclusion to refuse on."""


class NothingToLiftError(ValueError):
    """A lift request for an exclusion, or a person, that registration does not know."""


class UnverifiedLiftError(ValueError):
    """A lift request nobody proved is the person's (no code): it can never end an exclusion."""


class NotThePersonsLiftError(ValueError):
    """A lift verified with someone else's code: the code went to another person than the exclusion's."""


class NothingToCancelError(ValueError):
    """A cancellation of an exclusion registration does not know, or that has ended already."""


class UnknownExclusionError(ValueError):
    """A verification outcome for an exclusion registration does not know."""


class Refusal(BaseModel):
    """The last request refused on an exclusion (a lift the policy does not allow yet)."""

    model_config = ConfigDict(frozen=True)

    request_id: str
    reason: str
    at: AwareDatetime


class Source(BaseModel):
    """Where one exclusion request (or import) applied to an exclusion came from, and when it arrived:
    the deployment that forwarded it (None: made here) and the operator (or ``register:<name>``) that sent it."""

    model_config = ConfigDict(frozen=True)

    origin: str | None
    operator_id: str | None
    at: AwareDatetime


class ThirdPartyRecord(BaseModel):
    """Who applied for the exclusion and why; the applicant's name only sealed."""

    model_config = ConfigDict(frozen=True)

    applicant: str
    reason: str
    applicant_name: str | None = None  # shared.crypto.Sealer token, context "third_party:<exclusion id>"


class Exclusion(BaseModel):
    """One exclusion of one person: the aggregate registration owns."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: uuid.UUID
    person_id: str
    identifiers: list[str]
    scope: Scope
    jurisdiction: str
    duration: str
    channel: Channel
    state: ExclusionState
    created_at: AwareDatetime
    starts_at: AwareDatetime
    ends_at: AwareDatetime | None
    minimum_until: AwareDatetime | None = None
    lift_effective_at: AwareDatetime | None = None
    ended_at: AwareDatetime | None = None
    request_id: uuid.UUID
    request_ids: list[str] = []
    requested_by: str | None = None
    third_party: ThirdPartyRecord | None = None
    panic: bool = False
    verify_by: str | None = None
    document_check: bool = False
    locale: str | None = None
    support_persons: list[str] = []  # Sealer tokens, context "support_person:<exclusion id>"
    reminded: bool = False  # the reminder for the current end went out
    reason: str | None = None  # why it was cancelled
    refusal: Refusal | None = None
    causes: list[str] = []  # every command and verification outcome applied to it
    version: int = 1
    next_transition_at: AwareDatetime | None = None
    origin: str | None = None  # the deployment or register it came from; None: made here (only those are forwarded)
    forwarding: str | None = None  # ForwardingIdentity, sealed to forwarding:<exclusion id>, for the forwarder alone
    imports: list[str] = []  # the import commands applied (the register's exclusion, each version)
    # Every exclusion request and import applied, in order; None: made before they were kept (an
    # origin's end never ends it: nobody can tell what else joined it).
    sources: list[Source] | None = None

    @property
    def running(self) -> bool:
        return self.state not in FINAL_STATES

    def snapshot(self, reason: str | None = None) -> ExclusionSnapshot:
        """The exclusion as every lifecycle event carries it."""
        return ExclusionSnapshot(
            exclusion_id=self.id,
            identifiers=self.identifiers,
            scope=self.scope,
            jurisdiction=self.jurisdiction,
            state=self.state,
            starts_at=self.starts_at,
            ends_at=self.ends_at,
            minimum_until=self.minimum_until,
            lift_effective_at=self.lift_effective_at,
            duration=self.duration,
            version=self.version,
            channel=self.channel,
            third_party=self.third_party.applicant if self.third_party else None,
            verify_by=self.verify_by,
            document_check=self.document_check,
            reason=reason,
            created_at=self.created_at,
            ended_at=self.ended_at,
            origin=self.origin,
            sealed_identity=self.forwarding,
        )

    def with_source(self, source: Source) -> list[Source] | None:
        """The sources once ``source`` is applied too (None stays None: what joined before is unknown)."""
        return None if self.sources is None else [*self.sources, source]

    @property
    def only_imported(self) -> bool:
        """Every request applied to it was an import: the register's end may end it here too."""
        return bool(self.imports) and set(self.request_ids) <= set(self.imports)


@dataclass(frozen=True)
class Sealed:
    """What a request carries that is kept only sealed: the applicant's name, the support persons."""

    applicant_name: str | None = None
    support_persons: list[str] = field(default_factory=list)
    forwarding: str | None = None  # what the forwarder sends the register (ForwardingIdentity), sealed


NOTHING_SEALED = Sealed()


def person_identifiers(identifiers: dict[IdentifierKind, str]) -> list[str]:
    """The identifiers that name a person; a request must carry at least one."""
    personal = sorted(h for kind, h in identifiers.items() if kind in PERSONAL_KINDS)
    if not personal:
        raise IdentityRequiredError("the request carries no national id, name with date of birth, e-mail or mobile")
    return personal


def primary_identifier(identifiers: list[str]) -> str:
    """The strongest of a person's identifier hashes (what their commands are keyed by, see ``person_key``)."""
    for kind in MATCH_PRIORITY:
        if found := sorted(h for h in identifiers if h.startswith(f"{kind}:")):
            return found[0]
    raise IdentityRequiredError("the request carries no national id, name with date of birth, e-mail or mobile")


def best_match(candidates: dict[str, list[str]], identifiers: list[str]) -> str | None:
    """Of the persons some identifier matched, the one the strongest kind of identifier matched."""
    wanted = set(identifiers)
    for kind in MATCH_PRIORITY:
        for person_id in sorted(candidates):
            if any(h in wanted and h.startswith(f"{kind}:") for h in candidates[person_id]):
                return person_id
    return None


def terms_for(request: ExclusionRequestedPayload, policy: Policy) -> Terms:
    """The policy's reading of a request; anything the policy does not allow is refused, with why."""
    try:
        terms = policy.terms(request.duration)
    except DurationError as exc:
        raise RequestRefusedError(str(exc)) from exc
    offered = set(policy.scopes)
    if not_offered := sorted(t.value for t in request.scope.types if t.value not in offered):
        raise RequestRefusedError(f"scope {', '.join(not_offered)} is not offered in {policy.jurisdiction}")
    if len(request.support_persons) > policy.support_persons_max:
        raise RequestRefusedError(
            f"{len(request.support_persons)} support persons named; {policy.jurisdiction} allows {policy.support_persons_max}"
        )
    if request.effective_channel() is Channel.THIRD_PARTY and request.third_party is None:
        raise RequestRefusedError("a third-party request must say who applied and why")
    if request.third_party is None:
        return terms
    applicant = request.third_party.applicant
    if policy.third_party is None or applicant not in policy.third_party.applicants:
        raise RequestRefusedError(f"{policy.jurisdiction} takes no third-party application from a {applicant}")
    return policy.third_party_terms(terms)


def needs_verification(request: ExclusionRequestedPayload) -> bool:
    """Only the person's own portal requests wait for proof; operators and third parties attest."""
    return request.effective_channel() is Channel.PORTAL


def exclude(
    request: RequestExclusion,
    *,
    person_id: str,
    identifiers: list[str],
    now: datetime,
    policy: Policy | None = None,
    terms: Terms | None = None,
    sealed: Sealed = NOTHING_SEALED,
) -> Exclusion:
    """A new exclusion for ``request``; its id derives from the request, so redelivery finds it.

    A portal request waits for verification; an attested one takes effect at once, or after the
    policy's cooling-off unless it is the panic button.
    """
    payload = request.payload
    policy = policy or shipped_policies()[payload.jurisdiction]
    terms = terms or terms_for(payload, policy)
    exclusion_id = derived_id(request.id, "exclusion")
    if needs_verification(payload):
        state, start = ExclusionState.PENDING_VERIFICATION, now
    else:
        state, start = taking_effect(policy, terms.panic, now)
    exclusion = Exclusion(
        id=exclusion_id,
        person_id=person_id,
        identifiers=identifiers,
        scope=payload.scope,
        jurisdiction=payload.jurisdiction,
        duration=payload.duration,
        channel=payload.effective_channel(),
        state=state,
        created_at=now,
        starts_at=start,
        ends_at=terms.ends_at(start),
        minimum_until=terms.minimum_until(start),
        request_id=request.id,
        request_ids=[str(request.id)],
        requested_by=request.operator_id,
        third_party=third_party_record(request, sealed),
        panic=terms.panic,
        verify_by=payload.verify_by,
        document_check=policy.document_check and state is ExclusionState.PENDING_VERIFICATION,
        locale=payload.locale,
        support_persons=list(sealed.support_persons),
        causes=[str(request.id)],
        origin=payload.origin,
        forwarding=sealed.forwarding,
        sources=[Source(origin=payload.origin, operator_id=request.operator_id, at=now)],
    )
    return exclusion.model_copy(update={"next_transition_at": next_transition_at(exclusion, policy)})


def imported(command: ImportExclusion, *, person_id: str, identifiers: list[str], now: datetime, policy: Policy) -> Exclusion:
    """A register's exclusion, registered here as it stands there: in force at once, until the
    register's end (never a cooling-off or a verification: the register did both)."""
    payload = command.payload
    exclusion = Exclusion(
        id=derived_id(f"{payload.from_register}/{payload.register_exclusion_id}", "imported_exclusion"),
        person_id=person_id,
        identifiers=identifiers,
        scope=payload.scope,
        jurisdiction=policy.jurisdiction,
        duration=payload.duration or "imported",
        channel=Channel.REGISTER,
        state=ExclusionState.ACTIVE,
        created_at=now,
        starts_at=min(payload.starts_at, now),
        ends_at=payload.ends_at,
        request_id=command.id,
        request_ids=[str(command.id)],
        requested_by=f"register:{payload.from_register}",
        causes=[str(command.id)],
        origin=payload.origin,
        imports=[str(command.id)],
        sources=[imported_source(command, now)],
    )
    return exclusion.model_copy(update={"next_transition_at": next_transition_at(exclusion, policy)})


def imported_source(command: ImportExclusion, now: datetime) -> Source:
    return Source(origin=command.payload.origin, operator_id=f"register:{command.payload.from_register}", at=now)


def origin_end_refusal(exclusion: Exclusion, origin: str, operator_id: str | None, ended_at: datetime) -> str | None:
    """Why the end of an exclusion at ``origin`` does not end this copy of it; None if it does.

    Only a copy that ``origin``'s operator alone made (every request applied came from there, through
    that operator) ends, and only if none of those arrived after the end there: a later one may be a
    new exclusion at the origin, forwarded before the old one's end reached us. When in doubt it is kept."""
    if exclusion.origin != origin or not exclusion.sources:
        return f"kept: it was not made here by {origin}'s forwarding"
    if any(s.origin != origin or s.operator_id != operator_id for s in exclusion.sources):
        return f"kept: a request made here or from elsewhere joined what {origin} forwarded"
    if any(s.at > ended_at for s in exclusion.sources):
        return f"kept: {origin} forwarded a request for it after the end there (it may belong to a later exclusion)"
    return None


def taking_effect(policy: Policy, panic: bool, now: datetime) -> tuple[ExclusionState, datetime]:
    """Verified or attested: in force now, or after the policy's cooling-off (never for the panic button)."""
    if policy.activation_cooling_off and not panic:
        return ExclusionState.COOLING_OFF, now + policy.activation_cooling_off
    return ExclusionState.ACTIVE, now


def third_party_record(request: RequestExclusion, sealed: Sealed) -> ThirdPartyRecord | None:
    application = request.payload.third_party
    if application is None:
        return None
    return ThirdPartyRecord(applicant=application.applicant, reason=application.reason, applicant_name=sealed.applicant_name)


# --- when the next timer transition is due ---------------------------------------------------------


def reminder_at(exclusion: Exclusion, policy: Policy) -> datetime | None:
    """When the person is reminded that the exclusion ends by itself; None if no reminder is due."""
    if exclusion.ends_at is None or exclusion.reminded or policy.reminder_hours_before_end == 0:
        return None
    at = exclusion.ends_at - timedelta(hours=policy.reminder_hours_before_end)
    return at if at > exclusion.starts_at else None  # an exclusion shorter than the window gets none


def verification_deadline(exclusion: Exclusion, policy: Policy) -> datetime:
    return exclusion.created_at + timedelta(hours=policy.verification_timeout_hours)


def next_transition_at(exclusion: Exclusion, policy: Policy) -> datetime | None:
    """The timer loop's work list: when this exclusion next changes by itself."""
    match exclusion.state:
        case ExclusionState.PENDING_VERIFICATION:
            return verification_deadline(exclusion, policy)
        case ExclusionState.COOLING_OFF:
            return exclusion.starts_at
        case ExclusionState.ACTIVE:
            return reminder_at(exclusion, policy) or exclusion.ends_at
        case ExclusionState.LIFT_REQUESTED:
            return exclusion.lift_effective_at
    return None
