"""The rules of verification: one-time codes, identity documents, and what each submission leads to.

Pure: no I/O, no clock reads, no randomness. A decision names the verification's next state (or none
when nothing changes), the outcome of the submission, and the events that follow. Events that must go
out with a state change ride in the verification's ``outbox`` and are written with it.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict

from services.verification.codes import same
from shared.events import (
    Channel,
    Event,
    ExclusionRequested,
    ExclusionState,
    ExclusionVerified,
    LiftVerified,
    NotificationRequested,
    NotificationRequestedPayload,
    RequestLiftVerification,
    ResendCode,
    ReviewDocument,
    SubmissionAnswer,
    SubmissionRefusedPayload,
    SubmitCode,
    SubmitDocument,
    VerificationFailed,
    VerificationOutcomePayload,
    VerificationProgressed,
    VerificationProgressedPayload,
    VerificationStanding,
    VerificationSubmissionRefused,
    derived_id,
)

SOURCE = "verification"
MAX_ATTEMPTS = 5
MAX_RESENDS = 3
CODE_LIFETIME = timedelta(minutes=15)
# A state change's events are published right after it is written; what is still in the outbox
# this long after (the writer crashed in between) the timer publishes.
OUTBOX_GRACE = timedelta(seconds=30)

Method = Literal["code", "document"]


class State(StrEnum):
    AWAITING_CODE = "awaiting_code"
    AWAITING_DOCUMENT = "awaiting_document"
    AWAITING_REVIEW = "awaiting_review"
    VERIFIED = "verified"
    FAILED = "failed"
    CANCELLED = "cancelled"


OPEN_STATES = frozenset({State.AWAITING_CODE, State.AWAITING_DOCUMENT, State.AWAITING_REVIEW})


class Status(StrEnum):
    """What became of one submission."""

    VERIFIED = "verified"
    CODE_SENT = "code_sent"
    DOCUMENT_RECEIVED = "document_received"
    APPROVED = "approved"
    REJECTED = "rejected"
    # refusals: nothing about the exclusion changes (a wrong code only uses up an attempt)
    WRONG_CODE = "wrong_code"
    ATTEMPTS_EXHAUSTED = "attempts_exhausted"
    SUPERSEDED = "superseded"
    OTHER_REQUEST = "other_request"
    ALREADY_USED = "already_used"
    ALREADY_VERIFIED = "already_verified"
    EXPIRED = "expired"
    CLOSED = "closed"
    WRONG_METHOD = "wrong_method"
    UNKNOWN_REQUEST = "unknown_request"
    RESENDS_EXHAUSTED = "resends_exhausted"
    DOCUMENT_PENDING = "document_pending"
    NOT_UNDER_REVIEW = "not_under_review"
    ALREADY_REQUESTED = "already_requested"


ACCEPTED = frozenset({Status.VERIFIED, Status.CODE_SENT, Status.DOCUMENT_RECEIVED, Status.APPROVED, Status.REJECTED})


class SubmissionOutcome(BaseModel):
    """The answer to one submission, kept so the portal can read it and redelivery can repeat it."""

    model_config = ConfigDict(frozen=True)

    submission_id: uuid.UUID
    exclusion_id: uuid.UUID
    status: Status
    reason: str
    attempts_left: int | None = None
    resends_left: int | None = None
    recorded_at: AwareDatetime

    @property
    def refused(self) -> bool:
        return self.status not in ACCEPTED


class Verification(BaseModel):
    """One proof that a request is the person's, from the request to verified, failed or cancelled: of
    an exclusion request (keyed by the exclusion), or of a lift request (keyed by ``lift_id``)."""

    model_config = ConfigDict(frozen=True)

    exclusion_id: uuid.UUID
    lift_id: uuid.UUID | None = None
    subject: str | None
    operator_id: str | None = None  # who relayed a lift request, if someone did
    correlation_id: uuid.UUID | None = None
    method: Method
    state: State
    channel: Literal["email", "sms", "any"] = "any"
    code_hash: str | None = None
    earlier_code_hashes: tuple[str, ...] = ()
    code_expires_at: AwareDatetime | None = None
    attempts_left: int = MAX_ATTEMPTS
    resends_left: int = MAX_RESENDS
    document_id: str | None = None
    reason: str | None = None
    created_at: AwareDatetime
    updated_at: AwareDatetime
    version: int = 1
    applied: tuple[SubmissionOutcome, ...] = ()
    outbox: tuple[str, ...] = ()

    def outcome_of(self, submission_id: uuid.UUID) -> SubmissionOutcome | None:
        return next((o for o in self.applied if o.submission_id == submission_id), None)

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES

    @property
    def key(self) -> uuid.UUID:
        """What it is stored, hashed and sealed under: the lift verification's id, else the exclusion's."""
        return self.lift_id or self.exclusion_id


@dataclass(frozen=True)
class IssuedCode:
    """A fresh code as the domain sees it: its keyed hash, and the notification params sealed."""

    hash: str
    sealed_params: str


@dataclass(frozen=True)
class Decision:
    outcome: SubmissionOutcome
    verification: Verification | None = None  # the state to write; None: nothing changes
    events: tuple[Event, ...] = ()  # for an unchanged verification; a change carries its events in its outbox


# --- starting and ending -------------------------------------------------------------------


def needs_verification(event: Event) -> bool:
    """A portal request waiting for the person to prove it is theirs."""
    return (
        isinstance(event, ExclusionRequested)
        and event.payload.channel == Channel.PORTAL
        and event.payload.state == ExclusionState.PENDING_VERIFICATION
    )


def method_for(event: ExclusionRequested) -> Method:
    return "document" if event.payload.document_check else "code"


def code_notice_id(cause: Event) -> uuid.UUID:
    return derived_id(cause.id, "notification.verification_code")


def sealed_context(notification_id: uuid.UUID) -> str:
    """What a notification's ``sealed_params`` are bound to: that notification, and nothing else."""
    return f"notification:{notification_id}"


def start(event: ExclusionRequested, now: datetime, issued: IssuedCode | None) -> Verification:
    """A new verification: a code on its way, or a request for an identity document."""
    method = method_for(event)
    verification = Verification(
        exclusion_id=event.payload.exclusion_id,
        subject=event.subject,
        correlation_id=event.correlation_id or event.id,
        method=method,
        state=State.AWAITING_CODE if method == "code" else State.AWAITING_DOCUMENT,
        channel=event.payload.verify_by or "any",
        created_at=now,
        updated_at=now,
    )
    if method == "code":
        assert issued is not None, "a code verification starts with a code"
        started = verification.model_copy(update={"code_hash": issued.hash, "code_expires_at": now + CODE_LIFETIME})
        notice = _code_notice(verification, event, issued, now)
    else:
        started, notice = verification, _document_notice(verification, event, now)
    return started.model_copy(update={"outbox": (notice.model_dump_json(), _progressed(started, now).model_dump_json())})


def start_lift(verification: Verification | None, command: RequestLiftVerification, now: datetime, issued: IssuedCode) -> Decision:
    """A lift request: a code goes to the person's contact on file; only that code completes it.
    A second request under the same ``lift_id`` changes nothing."""
    if verification is not None:
        return _refused(verification, command, Status.ALREADY_REQUESTED, "this lift request was made already", now)
    payload = command.payload
    started = Verification(
        exclusion_id=payload.exclusion_id,
        lift_id=payload.lift_id,
        subject=command.subject,
        operator_id=command.operator_id,
        correlation_id=command.correlation_id or command.id,
        method="code",
        state=State.AWAITING_CODE,
        channel=payload.verify_by or "any",
        code_hash=issued.hash,
        code_expires_at=now + CODE_LIFETIME,
        created_at=now,
        updated_at=now,
    )
    reason = "a one-time code is on its way to the person's contact on file"
    outcome = _outcome(command, Status.CODE_SENT, reason, now, attempts_left=MAX_ATTEMPTS, resends_left=MAX_RESENDS)
    notice = _code_notice(started, command, issued, now)
    started = started.model_copy(update={"applied": (outcome,)})
    progressed = _progressed(started, now, outcome=outcome)
    return Decision(
        outcome=outcome, verification=started.model_copy(update={"outbox": (notice.model_dump_json(), progressed.model_dump_json())})
    )


def cancel(verification: Verification, reason: str | None, now: datetime) -> Verification | None:
    """The exclusion was cancelled: an open verification closes; a finished one stays as it ended."""
    if not verification.is_open:
        return None
    return _announced(_next(verification, now, state=State.CANCELLED, reason=reason or "exclusion cancelled"), now)


def expire(verification: Verification, now: datetime) -> Verification | None:
    """A code not used in time ends the verification: VerificationFailed("expired"), once."""
    if verification.state is not State.AWAITING_CODE or not _expired(verification, now):
        return None
    failed = _failed(verification, "expired", cause_id=None, now=now)
    return _announced(_next(verification, now, events=(failed,), state=State.FAILED, reason="expired"), now)


def flushed(verification: Verification, now: datetime) -> Verification:
    """The outbox went out."""
    return _next(verification, now, outbox=())


def next_check_at(verification: Verification) -> datetime | None:
    """When the timer should look at it again: the code's expiry, or a stale outbox."""
    due = []
    if verification.state is State.AWAITING_CODE and verification.code_expires_at is not None:
        due.append(verification.code_expires_at)
    if verification.outbox:
        due.append(verification.updated_at + OUTBOX_GRACE)
    return min(due) if due else None


# --- submissions ---------------------------------------------------------------------------


def submit_code(verification: Verification | None, command: SubmitCode, now: datetime, *, submitted: str, elsewhere: bool) -> Decision:
    """``submitted`` is the keyed hash of the typed code for this exclusion; ``elsewhere`` says it is
    the code of another of the person's requests."""
    refusal = _refusal_before_code(verification, command, now, submitted)
    if refusal is not None:
        return refusal
    assert verification is not None
    if same(submitted, verification.code_hash):
        outcome = _outcome(command, Status.VERIFIED, "verified: the request is confirmed", now)
        verified = _verified(verification, "code", command.id, now)
        return _changed(verification, outcome, now, events=(verified,), state=State.VERIFIED)
    if any(same(submitted, earlier) for earlier in verification.earlier_code_hashes):
        return _refused(verification, command, Status.SUPERSEDED, "this code was replaced by a newer one: use the latest code", now)
    if elsewhere:
        return _refused(verification, command, Status.OTHER_REQUEST, "this code was issued for another request, not this one", now)
    attempts_left = verification.attempts_left - 1
    if attempts_left > 0:
        reason = f"wrong code: {attempts_left} attempt{'s' if attempts_left != 1 else ''} left"
        outcome = _outcome(command, Status.WRONG_CODE, reason, now, attempts_left=attempts_left)
        return _changed(verification, outcome, now, events=(_refusal_event(verification, command, outcome),), attempts_left=attempts_left)
    outcome = _outcome(command, Status.ATTEMPTS_EXHAUSTED, "wrong code: no attempts left, the request is cancelled", now, attempts_left=0)
    events = (_refusal_event(verification, command, outcome), _failed(verification, "attempts_exhausted", command.id, now))
    return _changed(verification, outcome, now, events=events, attempts_left=0, state=State.FAILED, reason="attempts_exhausted")


def resend(verification: Verification | None, command: ResendCode, now: datetime, *, issued: IssuedCode) -> Decision:
    """A new code replaces the old one (at most ``MAX_RESENDS`` times); attempts are per request."""
    refusal = _refusal_before_code(verification, command, now, submitted=None)
    if refusal is not None:
        return refusal
    assert verification is not None
    if verification.resends_left <= 0:
        return _refused(verification, command, Status.RESENDS_EXHAUSTED, f"no more codes: at most {MAX_RESENDS} resends", now)
    resends_left = verification.resends_left - 1
    outcome = _outcome(command, Status.CODE_SENT, "a new code is on its way", now, resends_left=resends_left)
    return _changed(
        verification,
        outcome,
        now,
        events=(_code_notice(verification, command, issued, now),),
        code_hash=issued.hash,
        earlier_code_hashes=(*verification.earlier_code_hashes, verification.code_hash),
        code_expires_at=now + CODE_LIFETIME,
        resends_left=resends_left,
    )


def submit_document(verification: Verification | None, command: SubmitDocument, now: datetime) -> Decision:
    """An uploaded document waits for a reviewer; the request stays pending until then."""
    if verification is None or verification.state is not State.AWAITING_DOCUMENT:
        return _refused_by_state(verification, command, now, expected="document")
    outcome = _outcome(command, Status.DOCUMENT_RECEIVED, "the document waits for review", now)
    return _changed(verification, outcome, now, state=State.AWAITING_REVIEW, document_id=command.payload.document_id)


def review_document(verification: Verification | None, command: ReviewDocument, now: datetime) -> Decision:
    """Approved: verified. Rejected: the verification fails and the request is cancelled."""
    if verification is None or verification.state is not State.AWAITING_REVIEW:
        return _refused_by_state(verification, command, now, expected="review")
    if command.payload.document_id != verification.document_id:
        return _refused(verification, command, Status.NOT_UNDER_REVIEW, "this is not the document under review", now)
    if command.payload.approved:
        outcome = _outcome(command, Status.APPROVED, "document approved: the request is confirmed", now)
        return _changed(verification, outcome, now, events=(_verified(verification, "document", command.id, now),), state=State.VERIFIED)
    outcome = _outcome(command, Status.REJECTED, "document rejected: the request is cancelled", now)
    events = (_failed(verification, "document_rejected", command.id, now, method="document"),)
    return _changed(verification, outcome, now, events=events, state=State.FAILED, reason="document_rejected")


def refusal_events(verification: Verification | None, command: Event, outcome: SubmissionOutcome) -> tuple[Event, ...]:
    """What an unchanged verification's outcome announces (the same again on redelivery)."""
    if not outcome.refused:
        return ()
    return (
        _refusal_event(verification, command, outcome),
        _progressed(verification, outcome.recorded_at, outcome=outcome, lift_id=getattr(command.payload, "lift_id", None)),
    )


def standing(verification: Verification) -> VerificationStanding:
    """The verification as the portal shows it."""
    code = verification.method == "code"
    return VerificationStanding(
        method=verification.method,
        state=verification.state.value,
        attempts_left=verification.attempts_left if code else None,
        resends_left=verification.resends_left if code else None,
        code_expires_at=verification.code_expires_at if code else None,
        version=verification.version,
    )


# --- the parts -----------------------------------------------------------------------------


def _expired(verification: Verification, now: datetime) -> bool:
    return verification.code_expires_at is not None and now >= verification.code_expires_at


def _refusal_before_code(
    verification: Verification | None, command: SubmitCode | ResendCode, now: datetime, submitted: str | None
) -> Decision | None:
    """Why a code (or a new one) cannot be considered at all."""
    if verification is None or verification.method != "code" or verification.state is not State.AWAITING_CODE:
        if verification is not None and verification.state is State.VERIFIED and same(submitted, verification.code_hash):
            return _refused(verification, command, Status.ALREADY_USED, "this code was already used: the request is confirmed", now)
        return _refused_by_state(verification, command, now, expected="code")
    if _expired(verification, now):
        return _refused(verification, command, Status.EXPIRED, _expired_reason(verification), now)
    return None


def _refused_by_state(verification: Verification | None, command: Event, now: datetime, *, expected: str) -> Decision:
    if verification is None:
        return _refused(None, command, Status.UNKNOWN_REQUEST, "no verification is open for this request", now)
    if verification.state is State.VERIFIED:
        return _refused(verification, command, Status.ALREADY_VERIFIED, "the request is already confirmed", now)
    if verification.state is State.FAILED and verification.reason == "expired":
        return _refused(verification, command, Status.EXPIRED, _expired_reason(verification), now)
    if verification.state in (State.FAILED, State.CANCELLED):
        reason = f"the request was cancelled ({verification.reason or verification.state.value}): start a new one"
        return _refused(verification, command, Status.CLOSED, reason, now)
    if verification.state is State.AWAITING_REVIEW and expected == "document":
        return _refused(verification, command, Status.DOCUMENT_PENDING, "a document is already waiting for review", now)
    if expected == "review":
        return _refused(verification, command, Status.NOT_UNDER_REVIEW, "no document of this request is waiting for review", now)
    wanted = "an identity document" if verification.method == "document" else "a one-time code"
    return _refused(verification, command, Status.WRONG_METHOD, f"this request is confirmed with {wanted}", now)


def _expired_reason(verification: Verification) -> str:
    at = verification.code_expires_at
    when = f" at {at:%Y-%m-%d %H:%M} UTC" if at else ""
    return f"the code expired{when}: the request can no longer be confirmed"


def _outcome(command: Event, status: Status, reason: str, now: datetime, **counts: int) -> SubmissionOutcome:
    return SubmissionOutcome(
        submission_id=command.id, exclusion_id=command.payload.exclusion_id, status=status, reason=reason, recorded_at=now, **counts
    )


def _refused(verification: Verification | None, command: Event, status: Status, reason: str, now: datetime) -> Decision:
    outcome = _outcome(command, status, reason, now)
    return Decision(outcome=outcome, events=refusal_events(verification, command, outcome))


def _changed(
    verification: Verification, outcome: SubmissionOutcome, now: datetime, *, events: tuple[Event, ...] = (), **updates
) -> Decision:
    changed = _next(verification, now, events=events, applied=(*verification.applied, outcome), **updates)
    progressed = _progressed(changed, now, outcome=outcome)
    return Decision(outcome=outcome, verification=changed.model_copy(update={"outbox": (*changed.outbox, progressed.model_dump_json())}))


def _announced(changed: Verification, now: datetime) -> Verification:
    """A change no submission caused, with the event that says where the verification now stands."""
    return changed.model_copy(update={"outbox": (*changed.outbox, _progressed(changed, now).model_dump_json())})


def _progressed(
    verification: Verification | None, now: datetime, *, outcome: SubmissionOutcome | None = None, lift_id: uuid.UUID | None = None
) -> VerificationProgressed:
    """Where the verification stands, and the submission's answer if one caused it. The id derives
    from the submission, else from the verification's version, so redelivery repeats the same event."""
    if outcome is not None:
        exclusion_id, event_id = outcome.exclusion_id, derived_id(outcome.submission_id, "verification.progressed")
        answer = SubmissionAnswer(
            submission_id=outcome.submission_id,
            status=outcome.status.value,
            refused=outcome.refused,
            reason=outcome.reason,
            attempts_left=outcome.attempts_left,
            resends_left=outcome.resends_left,
        )
    else:
        assert verification is not None, "a change no submission caused is a change of a verification"
        exclusion_id, answer = verification.exclusion_id, None
        event_id = derived_id(verification.key, f"verification.progressed@{verification.version}")
    return VerificationProgressed(
        id=event_id,
        source=SOURCE,
        occurred_at=now,
        correlation_id=verification.correlation_id if verification else None,
        causation_id=outcome.submission_id if outcome else None,
        subject=verification.subject if verification else None,
        payload=VerificationProgressedPayload(
            exclusion_id=exclusion_id,
            verification=standing(verification) if verification else None,
            answer=answer,
            lift_id=verification.lift_id if verification else lift_id,
        ),
    )


def _next(verification: Verification, now: datetime, *, events: tuple[Event, ...] = (), **updates) -> Verification:
    outbox = updates.pop("outbox", verification.outbox)
    return verification.model_copy(
        update={
            **updates,
            "outbox": (*outbox, *(event.model_dump_json() for event in events)),
            "updated_at": now,
            "version": verification.version + 1,
        }
    )


def _refusal_event(verification: Verification | None, command: Event, outcome: SubmissionOutcome) -> VerificationSubmissionRefused:
    return VerificationSubmissionRefused.caused_by(
        command,
        source=SOURCE,
        subject=verification.subject if verification else None,
        occurred_at=outcome.recorded_at,
        payload=SubmissionRefusedPayload(
            exclusion_id=outcome.exclusion_id, reason=outcome.reason, lift_id=getattr(command.payload, "lift_id", None)
        ),
    )


def _verified(verification: Verification, method: Method, cause_id: uuid.UUID, now: datetime) -> ExclusionVerified | LiftVerified:
    if verification.lift_id is not None:
        # One per lift verification: registration's answer is caused by it, under an id the gateway can derive.
        return LiftVerified(
            id=LiftVerified.id_for(verification.lift_id),
            source=SOURCE,
            occurred_at=now,
            correlation_id=verification.correlation_id,
            causation_id=cause_id,
            subject=verification.subject,
            operator_id=verification.operator_id,
            payload=VerificationOutcomePayload(exclusion_id=verification.exclusion_id, method=method, lift_id=verification.lift_id),
        )
    # One per exclusion, whichever submission verified it.
    return ExclusionVerified(
        id=derived_id(verification.exclusion_id, "exclusion.verified"),
        source=SOURCE,
        occurred_at=now,
        correlation_id=verification.correlation_id,
        causation_id=cause_id,
        subject=verification.subject,
        payload=VerificationOutcomePayload(exclusion_id=verification.exclusion_id, method=method),
    )


def _failed(
    verification: Verification, reason: str, cause_id: uuid.UUID | None, now: datetime, method: Method | None = None
) -> VerificationFailed:
    # One per exclusion: an expiry seen by the timer and by a late submission is still one failure.
    return VerificationFailed(
        id=derived_id(verification.key, "verification.failed"),
        source=SOURCE,
        occurred_at=now,
        correlation_id=verification.correlation_id,
        causation_id=cause_id,
        subject=verification.subject,
        payload=VerificationOutcomePayload(
            exclusion_id=verification.exclusion_id, method=method or verification.method, reason=reason, lift_id=verification.lift_id
        ),
    )


def _code_notice(verification: Verification, cause: Event, issued: IssuedCode, now: datetime) -> NotificationRequested:
    """The code, sealed, for the person: the notification service finds their contact by ``subject``
    (the person) and the exclusion, as registration keeps it; a lift's code names the lift too."""
    params = {"exclusion_id": str(verification.exclusion_id), "valid_minutes": str(int(CODE_LIFETIME.total_seconds() // 60))}
    if verification.lift_id is not None:
        params["lift_id"] = str(verification.lift_id)
    return NotificationRequested(
        id=code_notice_id(cause),
        source=SOURCE,
        occurred_at=now,
        correlation_id=verification.correlation_id,
        causation_id=cause.id,
        subject=verification.subject,
        payload=NotificationRequestedPayload(
            template="lift_code" if verification.lift_id else "verification_code",
            channel=verification.channel,
            locale=getattr(cause.payload, "locale", None),  # a lift request names the person's language
            params=params,
            sealed_params=issued.sealed_params,
        ),
    )


def _document_notice(verification: Verification, cause: Event, now: datetime) -> NotificationRequested:
    return NotificationRequested.caused_by(
        cause,
        source=SOURCE,
        name="notification.document_required",
        occurred_at=now,
        subject=verification.subject,
        payload=NotificationRequestedPayload(
            template="document_required",
            channel=verification.channel,
            params={"exclusion_id": str(verification.exclusion_id)},
        ),
    )
