"""Every change of an exclusion and the one event it emits: extension, lift, verification, timers."""

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.registration.domain import Exclusion, Sealed, exclude
from services.registration.transitions import NOT_SHORTENED, due, extend, fail, registered, request_lift, verify
from shared.events import (
    Channel,
    ExclusionRequestedPayload,
    ExclusionState,
    ExclusionType,
    ExclusionVerified,
    Game,
    LiftRequestedPayload,
    RequestExclusion,
    RequestLift,
    Scope,
    SupportPerson,
    ThirdPartyApplication,
    VerificationFailed,
    VerificationOutcomePayload,
    derived_id,
)
from shared.identity import Identity, uid_from_personnummer
from shared.policies import Policy, add_months, shipped_policies

NOW = datetime(2025, 1, 31, 12, 30, tzinfo=UTC)
POLICIES = shipped_policies()
SE, UK, NL, AU, DE = (POLICIES[j] for j in ("SE", "UK", "NL", "AU", "DE"))
COOLING = SE.model_copy(update={"activation_cooling_off_hours": 48})
SLOTS = Scope(types=frozenset({ExclusionType.GAMES}), games=frozenset({Game.SLOTS}))
POKER_AND_ADS = Scope(types=frozenset({ExclusionType.GAMES, ExclusionType.ADS}), games=frozenset({Game.POKER}))
IDENTITY = Identity(uid=uid_from_personnummer("199001011234"))


def request(duration: str = "+30d", jurisdiction: str = "SE", *, channel: Channel = Channel.OPERATOR, **payload) -> RequestExclusion:
    return RequestExclusion(
        source="test",
        operator_id="op-1",
        payload=ExclusionRequestedPayload(identity=IDENTITY, duration=duration, jurisdiction=jurisdiction, channel=channel, **payload),
    )


def excluded(duration: str = "+30d", jurisdiction: str = "SE", policy: Policy | None = None, now: datetime = NOW, **payload) -> Exclusion:
    req = request(duration, jurisdiction, **payload)
    return exclude(req, person_id="p-1", identifiers=["national_id:x"], now=now, policy=policy or POLICIES[jurisdiction])


def extended(running: Exclusion, duration: str, now: datetime = NOW, policy: Policy | None = None, **payload):
    req = request(duration, running.jurisdiction, **payload)
    policy = policy or POLICIES[running.jurisdiction]
    return req, extend(running, req, policy.terms(duration), policy, now, identifiers=["email:new"])


def lift_request() -> RequestLift:
    return RequestLift(source="test", payload=LiftRequestedPayload(exclusion_id=uuid.uuid4()))


def verified(exclusion: Exclusion) -> ExclusionVerified:
    return ExclusionVerified(source="verification", payload=VerificationOutcomePayload(exclusion_id=exclusion.id, method="code"))


# --- a new request ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exclusion", "event_type"),
    [
        (excluded(channel=Channel.PORTAL), "exclusion.requested"),
        (excluded(policy=COOLING), "exclusion.cooling_off_started"),
        (excluded(), "exclusion.activated"),
    ],
    ids=["portal", "cooling-off", "attested"],
)
def test_a_new_exclusion_is_announced_by_one_event_derived_from_its_request(exclusion, event_type):
    req = request()

    transition = registered(exclusion, req, NOW)

    assert transition.event.type == event_type
    assert transition.event.id == derived_id(req.id, event_type)
    assert (transition.event.causation_id, transition.event.correlation_id) == (req.id, req.id)
    assert transition.event.subject == "p-1"
    assert transition.event.payload == exclusion.snapshot()
    assert transition.notifications == ()


def test_a_third_party_exclusion_tells_the_person():
    req = request("+6m", "DE", third_party=ThirdPartyApplication(applicant="regulator", applicant_name="BfS", reason="r"))
    exclusion = exclude(req, person_id="p-1", identifiers=["national_id:x"], now=NOW, policy=DE)

    [notice] = registered(exclusion, req, NOW).notifications

    assert (notice.payload.template, notice.payload.recipient, notice.subject) == ("third_party_exclusion", "person", "p-1")
    assert notice.payload.params["exclusion_id"] == str(exclusion.id)
    assert "BfS" not in notice.model_dump_json()


def test_support_persons_are_told_when_an_exclusion_starts():
    req = request("+6m", "AU", support_persons=[SupportPerson(name="Sam", email="sam@example.au")])
    exclusion = exclude(req, person_id="p-1", identifiers=["national_id:x"], now=NOW, policy=AU, sealed=Sealed(support_persons=["t"]))

    [notice] = registered(exclusion, req, NOW).notifications

    assert (notice.payload.template, notice.payload.recipient) == ("exclusion_started", "support_persons")
    assert notice.id == derived_id(registered(exclusion, req, NOW).event.id, "notification.exclusion_started.support_persons")


# --- extending: the later end wins, never shortened ------------------------------------------------------


def test_a_longer_request_extends_the_running_exclusion():
    running = excluded("+30d")

    req, transition = extended(running, "+60d", NOW + timedelta(days=10))

    after = transition.exclusion
    assert transition.event.type == "exclusion.extended"
    assert transition.event.id == derived_id(req.id, "exclusion.extended")
    assert after.ends_at == NOW + timedelta(days=70)
    assert after.duration == "+60d"
    assert after.state is ExclusionState.ACTIVE
    assert after.version == running.version + 1
    assert after.request_ids == [str(running.request_id), str(req.id)]
    assert after.identifiers == ["email:new", "national_id:x"]
    assert transition.event.payload.reason is None


def test_a_shorter_request_never_shortens_the_exclusion_and_says_so():
    running = excluded("+60d")

    _, transition = extended(running, "+30d", NOW + timedelta(days=1))

    assert transition.event.type == "exclusion.extended"
    assert transition.exclusion.ends_at == running.ends_at
    assert transition.exclusion.duration == "+60d"
    assert transition.event.payload.reason == NOT_SHORTENED


def test_until_further_notice_beats_any_date_and_brings_its_minimum():
    running = excluded("+30d")

    _, transition = extended(running, "+12m", NOW + timedelta(days=5))

    assert transition.exclusion.ends_at is None
    assert transition.exclusion.minimum_until == add_months(NOW + timedelta(days=5), 12)
    assert transition.exclusion.next_transition_at is None


def test_a_date_never_ends_an_exclusion_that_only_a_lift_ends():
    running = excluded("+12m")

    _, transition = extended(running, "+30d", NOW + timedelta(days=5))

    assert transition.exclusion.ends_at is None
    assert transition.exclusion.minimum_until == running.minimum_until
    assert transition.event.payload.reason == NOT_SHORTENED


def test_the_later_minimum_wins():
    running = excluded("+6m", "UK")

    _, later = extended(running, "+6m", NOW + timedelta(days=30))
    _, earlier = extended(running, "+6m", NOW - timedelta(days=30))

    assert later.exclusion.minimum_until == add_months(NOW + timedelta(days=30), 6)
    assert earlier.exclusion.minimum_until == running.minimum_until


def test_scopes_join_on_extension():
    running = excluded("+30d", scope=SLOTS)

    _, transition = extended(running, "+30d", scope=POKER_AND_ADS)

    assert transition.exclusion.scope == Scope(
        types=frozenset({ExclusionType.GAMES, ExclusionType.ADS}), games=frozenset({Game.SLOTS, Game.POKER})
    )


def test_a_new_request_withdraws_a_pending_lift():
    running = excluded("+6m", "UK").model_copy(
        update={"state": ExclusionState.LIFT_REQUESTED, "lift_effective_at": NOW + timedelta(hours=24)}
    )

    _, transition = extended(running, "+6m", NOW + timedelta(hours=2))

    assert transition.event.type == "exclusion.extended"
    assert transition.exclusion.state is ExclusionState.ACTIVE
    assert transition.exclusion.lift_effective_at is None
    assert transition.exclusion.next_transition_at is None


def test_an_attested_request_completes_one_still_waiting_for_verification():
    running = excluded("+30d", channel=Channel.PORTAL)

    _, transition = extended(running, "+30d", NOW + timedelta(hours=1))

    assert transition.event.type == "exclusion.activated"
    assert transition.exclusion.state is ExclusionState.ACTIVE
    assert transition.exclusion.starts_at == NOW + timedelta(hours=1)
    assert transition.exclusion.ends_at == NOW + timedelta(hours=1, days=30)


def test_a_portal_request_for_one_waiting_for_verification_keeps_it_waiting():
    running = excluded("+30d", channel=Channel.PORTAL)

    _, transition = extended(running, "+60d", NOW, channel=Channel.PORTAL)

    assert transition.event.type == "exclusion.extended"
    assert transition.exclusion.state is ExclusionState.PENDING_VERIFICATION
    assert transition.exclusion.ends_at == NOW + timedelta(days=60)


def test_the_panic_button_ends_a_cooling_off_at_once():
    running = excluded("+30d", policy=COOLING)

    _, transition = extended(running, "+1d", NOW + timedelta(hours=1), policy=COOLING)

    assert transition.event.type == "exclusion.activated"
    assert transition.exclusion.state is ExclusionState.ACTIVE
    assert transition.exclusion.starts_at == NOW + timedelta(hours=1)
    assert transition.exclusion.ends_at == running.ends_at, "moved earlier in time, but not shortened"


def test_a_new_end_earns_a_new_reminder():
    running = excluded("+30d").model_copy(update={"reminded": True})

    _, longer = extended(running, "+60d")
    _, shorter = extended(running, "+10d")

    assert not longer.exclusion.reminded
    assert longer.exclusion.next_transition_at == NOW + timedelta(days=59)
    assert shorter.exclusion.reminded


# --- lifting ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exclusion", "policy", "at", "reason"),
    [
        (excluded("+30d"), SE, NOW + timedelta(days=5), "ends by itself at .*SE does not allow lifting it early"),
        (excluded("+6m", "UK"), UK, NOW + timedelta(days=100), "minimum period runs until 2025-07-31"),
        (excluded("+12m", "NL"), NL, add_months(NOW, 5), "minimum period runs until 2025-07-31"),
        (excluded("+6m", "NL"), NL, add_months(NOW, 6) - timedelta(days=2), "minimum period"),
        (excluded("+7m", "NL"), NL, add_months(NOW, 7) - timedelta(days=3), "ends by itself .* before a lift could take effect"),
        (excluded("+30d", channel=Channel.PORTAL), SE, NOW, "not in force yet \\(pending_verification\\)"),
        (excluded("+30d", policy=COOLING), COOLING, NOW, "not in force yet \\(cooling_off\\)"),
        (
            excluded("+6m", "UK").model_copy(update={"state": ExclusionState.LIFT_REQUESTED, "lift_effective_at": NOW}),
            UK,
            NOW,
            "already requested",
        ),
        (excluded("+30d").model_copy(update={"state": ExclusionState.EXPIRED}), SE, NOW, "already ended \\(expired\\)"),
    ],
    ids=[
        "se-automatic",
        "uk-minimum",
        "nl-before-six-months",
        "nl-minimum-equals-end",
        "nl-too-close-to-end",
        "pending",
        "cooling-off",
        "already-requested",
        "ended",
    ],
)
def test_a_lift_the_policy_does_not_allow_is_refused_with_why_and_nothing_else_changes(exclusion, policy, at, reason):
    req = lift_request()

    transition = request_lift(exclusion, req, policy, at)

    assert transition.event.type == "exclusion.lift_refused"
    assert transition.event.id == derived_id(req.id, "exclusion.lift_refused")
    assert transition.event.payload.reason
    assert re.search(reason, transition.event.payload.reason)
    after = transition.exclusion
    assert (after.state, after.ends_at, after.minimum_until, after.lift_effective_at) == (
        exclusion.state,
        exclusion.ends_at,
        exclusion.minimum_until,
        exclusion.lift_effective_at,
    )
    assert after.refusal.request_id == str(req.id) and after.refusal.reason == transition.event.payload.reason
    assert str(req.id) in after.request_ids


def test_a_uk_lift_after_the_minimum_takes_effect_after_the_24_hour_cooling_off():
    exclusion, at = excluded("+6m", "UK"), add_months(NOW, 6) + timedelta(days=10)

    transition = request_lift(exclusion, lift_request(), UK, at)

    assert transition.event.type == "exclusion.lift_requested"
    assert transition.exclusion.state is ExclusionState.LIFT_REQUESTED
    assert transition.exclusion.lift_effective_at == transition.exclusion.next_transition_at == at + timedelta(hours=24)
    assert transition.event.payload.excludes(), "still excluded until the lift takes effect"


def test_a_lift_without_return_cooling_off_takes_effect_at_once_and_support_persons_are_told():
    exclusion = excluded("+12m").model_copy(update={"support_persons": ["t"]})
    at = add_months(NOW, 12)

    transition = request_lift(exclusion, lift_request(), SE, at)

    assert transition.event.type == "exclusion.lifted"
    assert (transition.exclusion.state, transition.exclusion.ended_at) == (ExclusionState.LIFTED, at)
    assert [n.payload.template for n in transition.notifications] == ["exclusion_ended"]


# --- verification -------------------------------------------------------------------------------------


def test_a_verified_request_takes_effect_from_the_verification_and_its_end_moves_with_it():
    pending = excluded("+30d", channel=Channel.PORTAL)
    outcome = verified(pending)

    transition = verify(pending, outcome, SE, NOW + timedelta(minutes=10))

    assert transition.event.type == "exclusion.activated"
    assert transition.event.id == derived_id(outcome.id, "exclusion.activated")
    assert transition.exclusion.starts_at == NOW + timedelta(minutes=10)
    assert transition.exclusion.ends_at == NOW + timedelta(minutes=10, days=30)
    assert str(outcome.id) in transition.exclusion.causes


def test_a_verified_request_under_a_cooling_off_policy_cools_off_first():
    pending = excluded("+30d", channel=Channel.PORTAL, policy=COOLING)

    transition = verify(pending, verified(pending), COOLING, NOW)

    assert transition.event.type == "exclusion.cooling_off_started"
    assert transition.exclusion.starts_at == NOW + timedelta(hours=48)


def test_a_failed_verification_cancels_the_request_with_the_reason():
    pending = excluded("+30d", channel=Channel.PORTAL)
    outcome = VerificationFailed(
        source="v", payload=VerificationOutcomePayload(exclusion_id=pending.id, method="code", reason="code expired")
    )

    transition = fail(pending, outcome, SE, NOW)

    assert transition.event.type == "exclusion.cancelled"
    assert transition.exclusion.state is ExclusionState.CANCELLED
    assert transition.exclusion.ended_at == NOW
    assert transition.event.payload.reason == "verification failed: code expired"
    assert transition.exclusion.next_transition_at is None


def test_a_verification_outcome_for_a_request_no_longer_waiting_changes_nothing():
    active = excluded("+30d")

    assert verify(active, verified(active), SE, NOW) is None
    assert (
        fail(active, VerificationFailed(source="v", payload=VerificationOutcomePayload(exclusion_id=active.id, method="code")), SE, NOW)
        is None
    )


# --- timers -------------------------------------------------------------------------------------------


def test_nothing_is_due_before_its_time():
    assert due(excluded("+30d"), SE, NOW + timedelta(days=28)) is None
    assert due(excluded("+12m"), SE, NOW + timedelta(days=3000)) is None


def test_the_reminder_is_due_24_hours_before_the_end_then_the_expiry_at_the_end():
    exclusion = excluded("+30d")

    reminder = due(exclusion, SE, NOW + timedelta(days=29))
    expiry = due(reminder.exclusion, SE, NOW + timedelta(days=30))

    assert reminder.event.type == "exclusion.ending_soon"
    assert reminder.event.id == derived_id(exclusion.id, "remind@1")
    assert reminder.exclusion.reminded and reminder.exclusion.next_transition_at == exclusion.ends_at
    assert expiry.event.type == "exclusion.expired"
    assert expiry.event.id == derived_id(exclusion.id, "expire@2")
    assert (expiry.exclusion.state, expiry.exclusion.ended_at, expiry.exclusion.version) == (ExclusionState.EXPIRED, exclusion.ends_at, 3)
    assert expiry.event.correlation_id == exclusion.request_id


def test_a_late_tick_expires_without_a_reminder_first():
    assert due(excluded("+30d"), SE, NOW + timedelta(days=31)).event.type == "exclusion.expired"


def test_a_cooling_off_ends_in_activation():
    exclusion = excluded("+30d", policy=COOLING)

    transition = due(exclusion, COOLING, NOW + timedelta(hours=48))

    assert transition.event.type == "exclusion.activated"
    assert transition.exclusion.state is ExclusionState.ACTIVE
    assert transition.exclusion.starts_at == NOW + timedelta(hours=48)


def test_a_requested_lift_takes_effect_when_due():
    exclusion = excluded("+6m", "UK").model_copy(
        update={"state": ExclusionState.LIFT_REQUESTED, "lift_effective_at": NOW + timedelta(days=200)}
    )

    transition = due(exclusion, UK, NOW + timedelta(days=200))

    assert transition.event.type == "exclusion.lifted"
    assert (transition.exclusion.state, transition.exclusion.ended_at) == (ExclusionState.LIFTED, NOW + timedelta(days=200))


def test_an_unverified_request_is_cancelled_after_the_policy_timeout():
    pending = excluded("+30d", channel=Channel.PORTAL)

    assert due(pending, SE, NOW + timedelta(hours=71)) is None
    transition = due(pending, SE, NOW + timedelta(hours=72))

    assert transition.event.type == "exclusion.cancelled"
    assert transition.event.payload.reason == "not verified within 72 hours"


def test_support_persons_are_told_when_an_exclusion_ends():
    exclusion = excluded("+6m", "AU").model_copy(update={"support_persons": ["t"]})

    transition = due(exclusion, AU, add_months(NOW, 6))

    assert transition.event.type == "exclusion.expired"
    assert [(n.payload.template, n.payload.recipient) for n in transition.notifications] == [("exclusion_ended", "support_persons")]


def test_timer_event_ids_differ_per_version_so_a_second_reminder_after_an_extension_is_a_new_event():
    exclusion = excluded("+30d")
    first = due(exclusion, SE, NOW + timedelta(days=29))
    _, longer = extended(first.exclusion, "+60d", NOW + timedelta(days=29))

    second = due(longer.exclusion, SE, NOW + timedelta(days=29 + 59))

    assert second.event.type == "exclusion.ending_soon"
    assert second.event.id != first.event.id


# --- what the gateway's views learn from the events alone -------------------------------------------


def test_every_command_is_answered_by_an_event_naming_it_with_when_the_request_was_registered():
    running = excluded(now=NOW - timedelta(days=3))
    req, extension = extended(running, "+1d")  # shorter: nothing lengthens, and the event still says so
    lift = RequestLift(source="test", payload=LiftRequestedPayload(exclusion_id=running.id))
    refused = request_lift(running, lift, SE, NOW)
    ended = due(running, SE, running.ends_at)

    assert (extension.event.causation_id, extension.event.payload.exclusion_id) == (req.id, running.id)
    assert extension.event.payload.reason == NOT_SHORTENED
    assert (refused.event.type, refused.event.causation_id) == ("exclusion.lift_refused", lift.id)
    assert refused.event.payload.reason and refused.event.payload.exclusion_id == running.id
    assert {extension.event.payload.created_at, refused.event.payload.created_at} == {NOW - timedelta(days=3)}
    assert (ended.event.payload.ended_at, extension.event.payload.ended_at) == (running.ends_at, None)


# --- staff cancellation ---------------------------------------------------------------------------


def test_staff_cancel_a_running_exclusion_with_their_reason_and_nothing_once_it_has_ended():
    from services.registration.transitions import cancel
    from shared.events import CancelExclusion, CancellationPayload

    running = excluded("+6m", "UK")
    command = CancelExclusion(
        source="gateway",
        operator_id="staff-1",
        payload=CancellationPayload(exclusion_id=running.id, reason="wrong person", cancelled_by="Staff One"),
    )

    transition = cancel(running, command, UK, NOW + timedelta(days=1))
    ended = transition.exclusion

    assert (transition.event.type, transition.event.payload.reason, transition.event.operator_id) == (
        "exclusion.cancelled",
        "wrong person",
        "staff-1",
    )
    assert (ended.state, ended.ended_at, ended.next_transition_at) == (ExclusionState.CANCELLED, NOW + timedelta(days=1), None)
    assert transition.event.causation_id == command.id and str(command.id) in ended.causes
    assert [n.payload.template for n in transition.notifications] == ["exclusion_cancelled"]
    assert cancel(ended, command, UK, NOW + timedelta(days=2)) is None
