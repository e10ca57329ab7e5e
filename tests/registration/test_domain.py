"""Registration's rules for a new request: who it names, what its policy allows, how the exclusion starts."""

from datetime import UTC, datetime, timedelta

import pytest

from services.registration.domain import (
    IdentityRequiredError,
    RequestRefusedError,
    Sealed,
    best_match,
    exclude,
    next_transition_at,
    person_identifiers,
    reminder_at,
    terms_for,
)
from shared.events import (
    SCOPE_ALL,
    Channel,
    ExclusionRequestedPayload,
    ExclusionState,
    ExclusionType,
    RequestExclusion,
    Scope,
    SupportPerson,
    ThirdPartyApplication,
    derived_id,
)
from shared.identity import Hasher, IdentifierKind, Identity, uid_from_personnummer
from shared.policies import Policy, add_months, shipped_policies

HASHER = Hasher(b"test-secret-0123456789abcdef")
NOW = datetime(2025, 1, 31, 12, 30, tzinfo=UTC)
IDENTITY = Identity(uid=uid_from_personnummer("199001011234"), email="anna@example.se", device_fingerprint="dev-1")
POLICIES = shipped_policies()
COOLING = POLICIES["SE"].model_copy(update={"jurisdiction": "SE", "activation_cooling_off_hours": 48})
ADS = Scope(types=frozenset({ExclusionType.ADS}))


def request(duration: str = "+30d", jurisdiction: str = "SE", *, channel: Channel = Channel.OPERATOR, **payload) -> RequestExclusion:
    return RequestExclusion(
        source="gateway",
        operator_id="op-1",
        payload=ExclusionRequestedPayload(identity=IDENTITY, duration=duration, jurisdiction=jurisdiction, channel=channel, **payload),
    )


def excluded(req: RequestExclusion, now: datetime = NOW, policy: Policy | None = None, **options):
    return exclude(req, person_id="person-1", identifiers=["national_id:x"], now=now, policy=policy, **options)


def family(name: str = "Eva Andersson") -> ThirdPartyApplication:
    return ThirdPartyApplication(applicant="family", applicant_name=name, reason="gambling debts")


# --- who a request names ----------------------------------------------------------------------------


def test_person_identifiers_are_the_personal_hashes_sorted():
    hashes = HASHER.identifiers(IDENTITY)

    assert person_identifiers(hashes) == sorted([hashes[IdentifierKind.NATIONAL_ID], hashes[IdentifierKind.EMAIL]])


def test_a_request_with_only_device_and_payment_identifiers_names_nobody():
    hashes = HASHER.identifiers(Identity(device_fingerprint="dev-1", payment_fingerprint="card-1"))

    with pytest.raises(IdentityRequiredError):
        person_identifiers(hashes)
    with pytest.raises(IdentityRequiredError):
        person_identifiers({})


def test_when_two_persons_match_the_one_the_national_id_names_wins_over_the_email():
    candidates = {"p-email": ["email:a", "mobile:m"], "p-national": ["national_id:n", "email:other"]}

    assert best_match(candidates, ["email:a", "national_id:n"]) == "p-national"
    assert best_match(candidates, ["email:a"]) == "p-email"
    assert best_match(candidates, ["email:unknown"]) is None
    assert best_match({}, ["email:a"]) is None


# --- what the policy allows -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("req", "problem"),
    [
        (request("+0d"), "between 1 and"),
        (request("+13x"), r"is not \+Nd"),
        (request("+30d", "UK"), r"not allowed in UK: allowed: \+6m, \+12m, \+60m"),
        (request("+6m", "DE", scope=ADS), "scope ADS is not offered in DE"),
        (
            request("+6m", "AU", support_persons=[SupportPerson(name=f"S{n}", email=f"s{n}@x.au") for n in range(6)]),
            "6 support persons named; AU allows 5",
        ),
        (request("+30d", support_persons=[SupportPerson(name="S", email="s@x.se")]), "1 support persons named; SE allows 0"),
        (request("+30d", third_party=family()), "SE takes no third-party application from a family"),
        (
            request("+6m", "DE", third_party=ThirdPartyApplication(applicant="operator", applicant_name="Op", reason="r")),
            "DE takes no third-party application from a operator",
        ),
        (request("+6m", "DE", channel=Channel.THIRD_PARTY), "must say who applied and why"),
    ],
)
def test_what_the_policy_does_not_allow_is_refused_with_the_reason(req, problem):
    with pytest.raises(RequestRefusedError, match=problem):
        terms_for(req.payload, POLICIES[req.payload.jurisdiction])


def test_up_to_five_support_persons_are_allowed_in_au():
    req = request("+6m", "AU", support_persons=[SupportPerson(name=f"S{n}", mobile="+61400000000") for n in range(5)])

    assert terms_for(req.payload, POLICIES["AU"]).ends_at(NOW) == add_months(NOW, 6)


# --- a new exclusion ----------------------------------------------------------------------------------


def test_an_attested_30_day_exclusion_is_in_force_now_and_ends_30_days_later():
    exclusion = excluded(request("+30d"))

    assert exclusion.state is ExclusionState.ACTIVE
    assert (exclusion.created_at, exclusion.starts_at) == (NOW, NOW)
    assert exclusion.ends_at == NOW + timedelta(days=30)
    assert exclusion.minimum_until is None
    assert exclusion.next_transition_at == NOW + timedelta(days=29), "the reminder, 24 hours before the end"


def test_a_month_exclusion_ends_on_the_same_day_months_later():
    assert excluded(request("+4m")).ends_at == datetime(2025, 5, 31, 12, 30, tzinfo=UTC)


def test_twelve_months_in_sweden_means_until_further_notice_with_a_twelve_month_minimum():
    exclusion = excluded(request("+12m", "SE"))

    assert exclusion.ends_at is None
    assert exclusion.minimum_until == datetime(2026, 1, 31, 12, 30, tzinfo=UTC)
    assert exclusion.next_transition_at is None, "nothing happens until the person asks"


def test_six_months_in_denmark_means_six_months():
    assert excluded(request("+6m", "DK")).ends_at == datetime(2025, 7, 31, 12, 30, tzinfo=UTC)


def test_an_exclusion_carries_what_the_request_asked_for():
    scope = Scope(types=frozenset({ExclusionType.ADS, ExclusionType.GAMES}))
    req = request("+60m", "UK", scope=scope, locale="en-GB")

    exclusion = excluded(req)

    assert exclusion.scope == scope
    assert exclusion.jurisdiction == "UK"
    assert exclusion.duration == "+60m"
    assert exclusion.channel is Channel.OPERATOR
    assert exclusion.requested_by == "op-1"
    assert exclusion.request_id == req.id
    assert exclusion.request_ids == exclusion.causes == [str(req.id)]
    assert exclusion.person_id == "person-1"
    assert exclusion.locale == "en-GB"
    assert exclusion.version == 1


def test_the_same_request_makes_the_same_exclusion_id_whenever_it_is_handled():
    req = request()

    first, redelivered = excluded(req), excluded(req, now=NOW + timedelta(hours=1))

    assert first.id == redelivered.id == derived_id(req.id, "exclusion")
    assert excluded(request()).id != first.id


def test_a_portal_request_waits_for_verification_until_the_policy_timeout():
    exclusion = excluded(request("+30d", channel=Channel.PORTAL, verify_by="sms"))

    assert exclusion.state is ExclusionState.PENDING_VERIFICATION
    assert exclusion.verify_by == "sms"
    assert not exclusion.document_check
    assert exclusion.next_transition_at == NOW + timedelta(hours=72)


def test_a_portal_request_where_the_policy_wants_a_document_says_so():
    exclusion = excluded(request("+6m", "DE", channel=Channel.PORTAL))

    assert exclusion.state is ExclusionState.PENDING_VERIFICATION
    assert exclusion.document_check


def test_an_attested_request_under_a_cooling_off_policy_starts_after_it():
    exclusion = excluded(request("+30d"), policy=COOLING)

    assert exclusion.state is ExclusionState.COOLING_OFF
    assert exclusion.starts_at == exclusion.next_transition_at == NOW + timedelta(hours=48)
    assert exclusion.ends_at == NOW + timedelta(hours=48, days=30)


def test_the_panic_button_skips_the_cooling_off():
    exclusion = excluded(request("+1d"), policy=COOLING)

    assert exclusion.state is ExclusionState.ACTIVE
    assert exclusion.panic
    assert exclusion.ends_at == NOW + timedelta(days=1)
    assert exclusion.next_transition_at == exclusion.ends_at, "a 24-hour exclusion gets no 24-hour reminder"


def test_a_third_party_exclusion_records_who_applied_and_why_with_the_name_only_sealed():
    req = request("+3m", "DE", channel=Channel.THIRD_PARTY, third_party=family())

    exclusion = excluded(req, policy=POLICIES["DE"], sealed=Sealed(applicant_name="sealed-token"))

    assert exclusion.state is ExclusionState.ACTIVE, "no verification of the excluded person"
    assert exclusion.channel is Channel.THIRD_PARTY
    assert exclusion.third_party.model_dump() == {"applicant": "family", "reason": "gambling debts", "applicant_name": "sealed-token"}
    assert exclusion.ends_at is None
    assert exclusion.minimum_until == add_months(NOW, 12), "the third-party minimum, not the three months asked"
    assert "Eva" not in exclusion.model_dump_json()
    assert exclusion.snapshot().third_party == "family"


def test_support_persons_are_kept_sealed_on_the_exclusion():
    req = request("+6m", "AU", support_persons=[SupportPerson(name="Sam", email="sam@example.au")])

    exclusion = excluded(req, policy=POLICIES["AU"], sealed=Sealed(support_persons=["token-1"]))

    assert exclusion.support_persons == ["token-1"]
    assert "sam@example.au" not in exclusion.model_dump_json()


# --- the timer's work list ----------------------------------------------------------------------------


def test_the_reminder_is_due_the_policy_hours_before_an_automatic_end():
    exclusion = excluded(request("+30d"))

    assert reminder_at(exclusion, POLICIES["SE"]) == NOW + timedelta(days=29)
    assert reminder_at(exclusion.model_copy(update={"reminded": True}), POLICIES["SE"]) is None
    no_reminders = POLICIES["SE"].model_copy(update={"reminder_hours_before_end": 0})
    assert reminder_at(exclusion, no_reminders) is None


def test_an_exclusion_that_only_a_lift_ends_has_no_reminder():
    assert reminder_at(excluded(request("+6m", "UK")), POLICIES["UK"]) is None


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (ExclusionState.PENDING_VERIFICATION, NOW + timedelta(hours=72)),
        (ExclusionState.COOLING_OFF, NOW),
        (ExclusionState.LIFT_REQUESTED, NOW + timedelta(days=3)),
        (ExclusionState.EXPIRED, None),
        (ExclusionState.LIFTED, None),
        (ExclusionState.CANCELLED, None),
    ],
)
def test_each_state_says_when_it_next_changes_by_itself(state, expected):
    exclusion = excluded(request("+30d")).model_copy(update={"state": state, "lift_effective_at": NOW + timedelta(days=3)})

    assert next_transition_at(exclusion, POLICIES["SE"]) == expected


def test_the_snapshot_carries_the_exclusion_as_it_stands():
    exclusion = excluded(request("+30d", channel=Channel.PORTAL, verify_by="email"))

    snapshot = exclusion.snapshot(reason="because")

    assert snapshot.exclusion_id == exclusion.id
    assert snapshot.identifiers == ["national_id:x"]
    assert snapshot.state is ExclusionState.PENDING_VERIFICATION
    assert (snapshot.starts_at, snapshot.ends_at, snapshot.minimum_until) == (NOW, NOW + timedelta(days=30), None)
    assert (snapshot.duration, snapshot.version, snapshot.channel, snapshot.verify_by) == ("+30d", 1, Channel.PORTAL, "email")
    assert snapshot.reason == "because"
    assert snapshot.scope == SCOPE_ALL
