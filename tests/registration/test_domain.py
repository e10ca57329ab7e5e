"""Registration's rules: durations, the end of an exclusion, and who a request names."""

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.registration.domain import (
    MAX_DAYS,
    MAX_MONTHS,
    Duration,
    DurationError,
    ExclusionState,
    IdentityRequiredError,
    activated,
    add_months,
    exclude,
    parse_duration,
    person_identifiers,
)
from shared.events import SCOPE_ALL, ExclusionRequestedPayload, ExclusionType, RequestExclusion, Scope, derived_id
from shared.identity import Hasher, IdentifierKind, Identity, uid_from_personnummer

HASHER = Hasher(b"test-secret-0123456789abcdef")
NOW = datetime(2025, 1, 31, 12, 30, tzinfo=timezone.utc)
IDENTITY = Identity(uid=uid_from_personnummer("199001011234"), email="anna@example.se", device_fingerprint="dev-1")


def request(duration: str = "+30d", jurisdiction: str = "SE", scope: Scope = SCOPE_ALL) -> RequestExclusion:
    return RequestExclusion(
        source="gateway",
        operator_id="op-1",
        payload=ExclusionRequestedPayload(identity=IDENTITY, duration=duration, jurisdiction=jurisdiction, scope=scope),
    )


def excluded(req: RequestExclusion, now: datetime = NOW):
    identifiers = person_identifiers(HASHER.identifiers(req.payload.identity))
    return exclude(req, person_id="person-1", identifiers=identifiers, now=now)


@pytest.mark.parametrize(
    ("text", "duration"),
    [("+1d", Duration(1, "d")), ("+30d", Duration(30, "d")), ("+4m", Duration(4, "m")), ("+12m", Duration(12, "m")),
     (" +30d ", Duration(30, "d")), (f"+{MAX_DAYS}d", Duration(MAX_DAYS, "d")), (f"+{MAX_MONTHS}m", Duration(MAX_MONTHS, "m"))],
)
def test_a_chipout_duration_is_read_as_days_or_months(text, duration):
    assert parse_duration(text) == duration


@pytest.mark.parametrize(
    "text",
    ["", "+0d", "+0m", "+-3d", "+13x", "+99999m", f"+{MAX_DAYS + 1}d", f"+{MAX_MONTHS + 1}m", "30d", "-30d", "+30", "+d",
     "+30 d", "+30D", "+1234567d", None, 30],
)
def test_anything_else_is_a_duration_error(text):
    with pytest.raises(DurationError):
        parse_duration(text)


def test_a_duration_in_other_digits_than_ascii_is_refused():
    with pytest.raises(DurationError):
        parse_duration("+٣٠d")


@given(st.integers(min_value=1, max_value=MAX_DAYS))
def test_any_number_of_days_in_range_parses_to_that_number(days):
    assert parse_duration(f"+{days}d") == Duration(days, "d")


@given(
    sign=st.sampled_from(["+", "-", "", "++"]),
    amount=st.integers(min_value=-10, max_value=10_000_000),
    unit=st.sampled_from(["d", "m", "D", "M", "y", "", "dd"]),
)
def test_a_duration_of_any_other_shape_is_refused(sign, amount, unit):
    text = f"{sign}{amount}{unit}"
    valid = sign == "+" and unit in ("d", "m") and 1 <= amount <= (MAX_DAYS if unit == "d" else MAX_MONTHS)

    if valid:
        assert parse_duration(text) == Duration(amount, unit)
    else:
        with pytest.raises(DurationError):
            parse_duration(text)


@pytest.mark.parametrize(
    ("start", "months", "end"),
    [
        (datetime(2025, 1, 31), 1, datetime(2025, 2, 28)),
        (datetime(2024, 1, 31), 1, datetime(2024, 2, 29)),
        (datetime(2025, 1, 31), 3, datetime(2025, 4, 30)),
        (datetime(2025, 1, 31), 4, datetime(2025, 5, 31)),
        (datetime(2025, 11, 15), 2, datetime(2026, 1, 15)),
        (datetime(2025, 12, 31), 1, datetime(2026, 1, 31)),
        (datetime(2025, 12, 1), 12, datetime(2026, 12, 1)),
        (datetime(2024, 2, 29), 12, datetime(2025, 2, 28)),
        (datetime(2025, 6, 15), 1200, datetime(2125, 6, 15)),
    ],
)
def test_calendar_months_are_added_falling_back_to_the_last_day_of_a_shorter_month(start, months, end):
    assert add_months(start, months) == end


def test_adding_months_keeps_the_time_of_day_and_zone():
    assert add_months(NOW, 1) == datetime(2025, 2, 28, 12, 30, tzinfo=timezone.utc)


def test_a_30_day_exclusion_ends_30_days_after_now():
    exclusion = excluded(request("+30d"))

    assert exclusion.starts_at == NOW
    assert exclusion.ends_at == NOW + timedelta(days=30)
    assert exclusion.state is ExclusionState.ACTIVE


def test_a_month_exclusion_ends_on_the_same_day_months_later():
    assert excluded(request("+4m")).ends_at == datetime(2025, 5, 31, 12, 30, tzinfo=timezone.utc)


def test_twelve_months_in_sweden_means_until_further_notice():
    assert excluded(request("+12m", "SE")).ends_at is None


def test_twelve_months_elsewhere_means_twelve_months():
    assert excluded(request("+12m", "GB")).ends_at == datetime(2026, 1, 31, 12, 30, tzinfo=timezone.utc)


def test_an_exclusion_carries_what_the_request_asked_for():
    scope = Scope(types=frozenset({ExclusionType.ADS}))
    req = request("+30d", "GB", scope)

    exclusion = excluded(req)

    assert exclusion.scope == scope
    assert exclusion.jurisdiction == "GB"
    assert exclusion.duration == "+30d"
    assert exclusion.requested_by == "op-1"
    assert exclusion.request_id == req.id
    assert exclusion.person_id == "person-1"


def test_the_same_request_makes_the_same_exclusion_id_whenever_it_is_handled():
    req = request()

    first, redelivered = excluded(req), excluded(req, now=NOW + timedelta(hours=1))

    assert first.id == redelivered.id == derived_id(req.id, "exclusion")
    assert excluded(request()).id != first.id


def test_an_invalid_duration_in_a_request_is_a_duration_error():
    with pytest.raises(DurationError):
        excluded(request("+0d"))


def test_the_activation_derives_from_the_request_and_carries_the_exclusion():
    req = request()
    exclusion = excluded(req)

    event = activated(exclusion, req)

    assert event.id == derived_id(req.id, "exclusion.activated")
    assert event.causation_id == req.id
    assert event.correlation_id == req.id
    assert event.subject == "person-1"
    assert event.payload.exclusion_id == exclusion.id
    assert event.payload.identifiers == exclusion.identifiers
    assert (event.payload.starts_at, event.payload.ends_at) == (exclusion.starts_at, exclusion.ends_at)
    assert activated(exclusion, req).model_dump(exclude={"occurred_at"}) == event.model_dump(exclude={"occurred_at"})


def test_person_identifiers_are_the_personal_hashes_sorted():
    hashes = HASHER.identifiers(IDENTITY)

    assert person_identifiers(hashes) == sorted([hashes[IdentifierKind.NATIONAL_ID], hashes[IdentifierKind.EMAIL]])


def test_a_request_with_only_device_and_payment_identifiers_names_nobody():
    hashes = HASHER.identifiers(Identity(device_fingerprint="dev-1", payment_fingerprint="card-1"))

    with pytest.raises(IdentityRequiredError):
        person_identifiers(hashes)
    with pytest.raises(IdentityRequiredError):
        person_identifiers({})
