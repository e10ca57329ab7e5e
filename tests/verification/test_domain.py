"""Verification's rules, on literal data: codes, attempts, resends, expiry, documents, refusals."""

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.verification import domain
from services.verification.codes import CodeHasher, new_code, well_formed
from services.verification.domain import IssuedCode, State, Status
from shared.events import (
    SCOPE_ALL,
    Channel,
    CodeResendPayload,
    CodeSubmittedPayload,
    DocumentReviewedPayload,
    DocumentSubmittedPayload,
    ExclusionActivated,
    ExclusionRequested,
    ExclusionSnapshot,
    ExclusionState,
    ResendCode,
    ReviewDocument,
    SubmitCode,
    SubmitDocument,
    derived_id,
    parse_event,
)

NOW = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
EXCLUSION = uuid.UUID("11111111-2222-3333-4444-555555555555")
HASHER = CodeHasher(b"test-secret-0123456789abcdef")


def requested(
    *, document_check: bool = False, channel: Channel = Channel.PORTAL, verify_by: str | None = "email", **fields
) -> ExclusionRequested:
    snapshot = ExclusionSnapshot(
        exclusion_id=EXCLUSION,
        identifiers=["email:abc"],
        scope=SCOPE_ALL,
        jurisdiction="SE",
        state=ExclusionState.PENDING_VERIFICATION,
        starts_at=NOW,
        channel=channel,
        verify_by=verify_by,
        document_check=document_check,
        **fields,
    )
    return ExclusionRequested(source="registration", subject="person-1", payload=snapshot)


def issued(code: str, exclusion_id: uuid.UUID = EXCLUSION) -> IssuedCode:
    return IssuedCode(hash=HASHER.hash(exclusion_id, code), sealed_params=f"sealed-{code}")


def started(code: str = "123456") -> domain.Verification:
    return domain.start(requested(), NOW, issued(code))


def submit(verification, code: str, now: datetime = NOW, *, elsewhere: bool = False) -> domain.Decision:
    command = SubmitCode(source="gateway", payload=CodeSubmittedPayload(exclusion_id=EXCLUSION, sealed_code="sealed"))
    return domain.submit_code(verification, command, now, submitted=HASHER.hash(EXCLUSION, code), elsewhere=elsewhere)


def resend(verification, code: str, now: datetime = NOW) -> domain.Decision:
    command = ResendCode(source="gateway", payload=CodeResendPayload(exclusion_id=EXCLUSION))
    return domain.resend(verification, command, now, issued=issued(code))


def events(verification) -> list:
    """The outbox's events besides the one saying where the verification stands (see the progress tests)."""
    return [e for e in outbox(verification) if e.type != "verification.progressed"]


def outbox(verification) -> list:
    return [parse_event(json.loads(item)) for item in verification.outbox]


def test_a_code_is_six_random_digits():
    codes = {new_code() for _ in range(200)}
    assert all(well_formed(c) for c in codes)
    assert len(codes) > 150


def test_a_code_hash_is_bound_to_its_exclusion():
    assert HASHER.hash(EXCLUSION, "123456") == HASHER.hash(EXCLUSION, "123456")
    assert HASHER.hash(EXCLUSION, "123456") != HASHER.hash(uuid.uuid4(), "123456")
    assert "123456" not in HASHER.hash(EXCLUSION, "123456")


def test_only_a_pending_portal_request_needs_verification():
    assert domain.needs_verification(requested())
    assert not domain.needs_verification(requested(channel=Channel.OPERATOR))
    activated = ExclusionActivated(source="registration", payload=requested().payload.model_copy(update={"state": ExclusionState.ACTIVE}))
    assert not domain.needs_verification(activated)


def test_a_portal_request_gets_a_code_sent_sealed_through_its_channel():
    request = requested()
    verification = domain.start(request, NOW, issued("123456"))

    assert verification.state is State.AWAITING_CODE
    assert verification.code_expires_at == NOW + timedelta(minutes=15)
    assert (verification.attempts_left, verification.resends_left) == (5, 3)
    [notice] = events(verification)
    assert notice.payload.template == "verification_code"
    assert notice.payload.channel == "email"
    assert notice.payload.sealed_params == "sealed-123456"
    assert "123456" not in json.dumps(notice.payload.params)
    assert notice.subject == "person-1"
    assert notice.id == domain.code_notice_id(request) == events(domain.start(request, NOW, issued("1")))[0].id, (
        "redelivery derives the same id"
    )


def test_a_request_without_a_channel_is_sent_to_any():
    assert domain.start(requested(verify_by=None), NOW, issued("1")).channel == "any"


def test_a_document_check_asks_for_a_document_and_sends_no_code():
    verification = domain.start(requested(document_check=True), NOW, None)

    assert verification.state is State.AWAITING_DOCUMENT and verification.code_hash is None
    [notice] = events(verification)
    assert notice.payload.template == "document_required" and notice.payload.sealed_params is None


def test_the_right_code_verifies_once():
    decision = submit(started("123456"), "123456")

    assert decision.outcome.status is Status.VERIFIED
    assert decision.verification.state is State.VERIFIED
    verified = events(decision.verification)[-1]
    assert verified.type == "exclusion.verified" and verified.payload.method == "code"
    assert verified.id == derived_id(EXCLUSION, "exclusion.verified")


def test_a_wrong_code_uses_an_attempt_and_says_how_many_are_left():
    decision = submit(started("123456"), "000000")

    assert decision.outcome.status is Status.WRONG_CODE
    assert decision.outcome.reason == "wrong code: 4 attempts left"
    assert decision.verification.attempts_left == 4 and decision.verification.state is State.AWAITING_CODE
    assert events(decision.verification)[-1].type == "verification.submission_refused"


def test_the_fifth_wrong_code_fails_the_verification():
    verification = started("123456")
    for _ in range(4):
        verification = submit(verification, "000000").verification
    decision = submit(verification, "000000")

    assert decision.outcome.status is Status.ATTEMPTS_EXHAUSTED
    assert decision.verification.state is State.FAILED
    failed = events(decision.verification)[-1]
    assert failed.type == "verification.failed" and failed.payload.reason == "attempts_exhausted"


def test_the_code_again_after_success_is_refused_and_changes_nothing():
    verified = submit(started("123456"), "123456").verification

    again = submit(verified, "123456")
    other = submit(verified, "999999")

    assert (again.outcome.status, other.outcome.status) == (Status.ALREADY_USED, Status.ALREADY_VERIFIED)
    assert again.verification is None and other.verification is None
    assert [e.type for e in again.events] == ["verification.submission_refused", "verification.progressed"]
    assert "already used" in again.outcome.reason


def test_a_late_code_is_refused_and_changes_nothing():
    decision = submit(started("123456"), "123456", NOW + timedelta(minutes=15))

    assert decision.outcome.status is Status.EXPIRED
    assert decision.verification is None
    assert "expired" in decision.outcome.reason


def test_a_code_of_another_request_is_refused_without_using_an_attempt():
    decision = submit(started("123456"), "654321", elsewhere=True)

    assert decision.outcome.status is Status.OTHER_REQUEST
    assert decision.verification is None
    assert "another request" in decision.outcome.reason


def test_a_resend_replaces_the_code_and_restarts_its_clock_at_most_three_times():
    verification = started("111111")
    later = NOW + timedelta(minutes=10)
    for n, code in enumerate(("222222", "333333", "444444"), start=1):
        decision = resend(verification, code, later)
        assert decision.outcome.status is Status.CODE_SENT and decision.outcome.resends_left == 3 - n
        verification = decision.verification
    assert verification.code_expires_at == later + timedelta(minutes=15)
    assert events(verification)[-1].payload.sealed_params == "sealed-444444"

    refused = resend(verification, "555555", later)
    assert refused.outcome.status is Status.RESENDS_EXHAUSTED and refused.verification is None

    assert submit(verification, "111111", later).outcome.status is Status.SUPERSEDED
    assert submit(verification, "444444", later).outcome.status is Status.VERIFIED


def test_an_expired_code_fails_once():
    verification = started()

    assert domain.expire(verification, NOW + timedelta(minutes=14)) is None
    expired = domain.expire(verification, NOW + timedelta(minutes=15))
    assert expired.state is State.FAILED and expired.reason == "expired"
    assert events(expired)[-1].payload.reason == "expired"
    assert domain.expire(expired, NOW + timedelta(hours=1)) is None
    assert submit(expired, "123456", NOW + timedelta(hours=1)).outcome.status is Status.EXPIRED


def test_the_timer_looks_again_at_the_expiry_or_at_a_stale_outbox():
    verification = started()
    assert domain.next_check_at(verification) == NOW + domain.OUTBOX_GRACE
    assert domain.next_check_at(domain.flushed(verification, NOW)) == NOW + timedelta(minutes=15)
    verified = domain.flushed(submit(verification, "123456").verification, NOW)
    assert domain.next_check_at(verified) is None


def test_a_document_waits_for_review_and_approval_verifies():
    verification = domain.start(requested(document_check=True), NOW, None)
    uploaded = SubmitDocument(
        source="gateway", payload=DocumentSubmittedPayload(exclusion_id=EXCLUSION, document_id="doc-1", content_type="image/png", size=10)
    )
    decision = domain.submit_document(verification, uploaded, NOW)
    assert decision.outcome.status is Status.DOCUMENT_RECEIVED and decision.verification.state is State.AWAITING_REVIEW

    approved = domain.review_document(decision.verification, review("doc-1", approved=True), NOW)
    assert approved.verification.state is State.VERIFIED
    assert events(approved.verification)[-1].payload.method == "document"

    rejected = domain.review_document(decision.verification, review("doc-1", approved=False), NOW)
    assert rejected.verification.state is State.FAILED
    assert events(rejected.verification)[-1].payload.reason == "document_rejected"

    wrong_document = domain.review_document(decision.verification, review("doc-2", approved=True), NOW)
    assert wrong_document.outcome.status is Status.NOT_UNDER_REVIEW and wrong_document.verification is None


def review(document_id: str, *, approved: bool) -> ReviewDocument:
    return ReviewDocument(
        source="gateway",
        payload=DocumentReviewedPayload(exclusion_id=EXCLUSION, document_id=document_id, approved=approved, reviewer="staff-1", note="n"),
    )


@pytest.mark.parametrize("state", [State.AWAITING_DOCUMENT, State.AWAITING_REVIEW])
def test_a_code_is_refused_for_a_document_check(state):
    verification = domain.start(requested(document_check=True), NOW, None).model_copy(update={"state": state})
    assert submit(verification, "123456").outcome.status is Status.WRONG_METHOD


def test_a_submission_for_an_unknown_request_is_refused():
    decision = submit(None, "123456")
    assert decision.outcome.status is Status.UNKNOWN_REQUEST and decision.events[0].payload.exclusion_id == EXCLUSION


def test_a_cancelled_exclusion_closes_an_open_verification_only():
    verification = started()
    cancelled = domain.cancel(verification, "verification timed out", NOW)
    assert cancelled.state is State.CANCELLED
    assert domain.cancel(cancelled, None, NOW) is None
    assert submit(cancelled, "123456").outcome.status is Status.CLOSED


# --- where a verification stands, announced for the portal's read model -----------------------


def test_a_started_verification_announces_where_it_stands():
    verification = started()

    [progressed] = [e for e in outbox(verification) if e.type == "verification.progressed"]

    assert progressed.payload.exclusion_id == EXCLUSION and progressed.payload.answer is None
    assert progressed.payload.verification.model_dump() == {
        "method": "code",
        "state": "awaiting_code",
        "attempts_left": 5,
        "resends_left": 3,
        "code_expires_at": NOW + timedelta(minutes=15),
        "version": 1,
    }
    assert progressed.key() == str(EXCLUSION).encode()


def test_each_answer_is_announced_with_the_standing_after_it_under_an_id_derived_from_the_submission():
    wrong = submit(started("123456"), "000000")
    *_, progressed = [e for e in outbox(wrong.verification) if e.type == "verification.progressed"]  # after the start's
    late = submit(started("123456"), "123456", NOW + timedelta(minutes=15))
    [refused] = [e for e in late.events if e.type == "verification.progressed"]

    assert progressed.causation_id == wrong.outcome.submission_id
    assert progressed.id == derived_id(wrong.outcome.submission_id, "verification.progressed")
    assert progressed.payload.answer.model_dump() == {
        "submission_id": wrong.outcome.submission_id,
        "status": "wrong_code",
        "refused": True,
        "reason": "wrong code: 4 attempts left",
        "attempts_left": 4,
        "resends_left": None,
    }
    assert (progressed.payload.verification.attempts_left, progressed.payload.verification.version) == (4, wrong.verification.version)
    assert (refused.payload.answer.status, refused.payload.verification.state) == ("expired", "awaiting_code")


def test_an_answer_to_an_unknown_request_stands_for_no_verification():
    decision = submit(None, "123456")
    [progressed] = [e for e in decision.events if e.type == "verification.progressed"]
    assert progressed.payload.verification is None and progressed.payload.answer.status == "unknown_request"


def test_an_expiry_and_a_cancellation_are_announced_too():
    expired = domain.expire(started(), NOW + timedelta(minutes=15))
    cancelled = domain.cancel(started(), "verification timed out", NOW)

    for changed, state in ((expired, "failed"), (cancelled, "cancelled")):
        *_, progressed = [e for e in outbox(changed) if e.type == "verification.progressed"]  # after the start's
        assert (progressed.payload.verification.state, progressed.payload.verification.version) == (state, changed.version)
        assert progressed.id == derived_id(EXCLUSION, f"verification.progressed@{changed.version}")


# --- lift verifications -------------------------------------------------------------------------

LIFT = uuid.UUID("99999999-8888-7777-6666-555555555555")


def lift_started(code: str = "654321") -> domain.Decision:
    from shared.events import LiftVerificationRequestedPayload, RequestLiftVerification

    command = RequestLiftVerification(
        source="gateway",
        operator_id="op-1",
        subject="person-1",
        payload=LiftVerificationRequestedPayload(lift_id=LIFT, exclusion_id=EXCLUSION),
    )
    return domain.start_lift(None, command, NOW, IssuedCode(hash=HASHER.hash(LIFT, code), sealed_params="sealed"))


def lift_code(verification, code: str) -> domain.Decision:
    command = SubmitCode(source="gateway", payload=CodeSubmittedPayload(exclusion_id=EXCLUSION, lift_id=LIFT, sealed_code="sealed"))
    return domain.submit_code(verification, command, NOW, submitted=HASHER.hash(LIFT, code), elsewhere=False)


def test_a_lift_request_sends_the_person_a_code_kept_under_the_lifts_own_id():
    decision = lift_started()
    verification = decision.verification
    [notice] = events(verification)

    assert decision.outcome.status is Status.CODE_SENT and not decision.outcome.refused
    assert (verification.key, verification.exclusion_id, verification.state) == (LIFT, EXCLUSION, State.AWAITING_CODE)
    assert verification.code_expires_at == NOW + domain.CODE_LIFETIME
    assert (notice.type, notice.subject, notice.payload.template) == ("notification.requested", "person-1", "lift_code")
    assert notice.payload.params["lift_id"] == str(LIFT) and notice.payload.params["exclusion_id"] == str(EXCLUSION)


def test_the_right_lift_code_announces_lift_verified_never_exclusion_verified():
    verification = lift_started().verification

    wrong = lift_code(verification, "000000")
    right = lift_code(verification, "654321")

    assert wrong.outcome.status is Status.WRONG_CODE and not [e for e in events(wrong.verification) if e.type.endswith("verified")]
    [verified] = [e for e in events(right.verification) if e.type.endswith("verified")]
    assert verified.type == "verification.lift_verified"
    assert verified.id == derived_id(LIFT, "verification.lift_verified")
    assert (verified.subject, verified.operator_id, verified.payload.lift_id) == ("person-1", "op-1", LIFT)


def test_a_second_lift_start_under_the_same_id_is_refused():
    from shared.events import LiftVerificationRequestedPayload, RequestLiftVerification

    verification = lift_started().verification
    again = RequestLiftVerification(
        source="gateway", subject="someone-else", payload=LiftVerificationRequestedPayload(lift_id=LIFT, exclusion_id=EXCLUSION)
    )

    decision = domain.start_lift(verification, again, NOW, IssuedCode(hash="h", sealed_params="s"))

    assert decision.outcome.status is Status.ALREADY_REQUESTED and decision.verification is None
