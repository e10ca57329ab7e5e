"""Jurisdiction policies: one duration parser, the shipped policies' terms, and refusing a broken file."""

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.policies import (
    MAX_DAYS,
    MAX_MONTHS,
    Duration,
    DurationError,
    End,
    PolicyError,
    add_months,
    load_policies,
    parse_duration,
    policy_for,
    shipped_policies,
)

START = datetime(2025, 1, 31, 12, 30, tzinfo=UTC)
POLICIES = shipped_policies()


# --- parsing durations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("+0d", "between 1 and"),
        ("+-3d", r"is not \+Nd"),
        ("+13x", r"is not \+Nd"),
        ("+99999m", "between 1 and 1200"),
        ("", "empty"),
        ("   ", "empty"),
        (None, "empty"),
    ],
)
def test_each_malformed_duration_is_a_duration_error_that_says_what_is_wrong(text, problem):
    with pytest.raises(DurationError, match=problem):
        parse_duration(text)


@given(st.integers(min_value=1, max_value=MAX_DAYS))
def test_any_number_of_days_in_range_is_that_many_days(days):
    assert parse_duration(f"+{days}d") == Duration(days, "d")


@given(st.integers(min_value=1, max_value=MAX_MONTHS))
def test_any_number_of_months_in_range_is_that_many_months(months):
    assert parse_duration(f"+{months}m") == Duration(months, "m")


@given(
    sign=st.sampled_from(["+", "-", "", "++", "+-"]),
    amount=st.integers(min_value=-10, max_value=10_000_000),
    unit=st.sampled_from(["d", "m", "D", "M", "y", "x", "", "dd"]),
)
def test_a_duration_of_any_other_shape_or_size_is_refused(sign, amount, unit):
    text = f"{sign}{amount}{unit}"
    valid = sign == "+" and unit in ("d", "m") and 1 <= amount <= (MAX_DAYS if unit == "d" else MAX_MONTHS)

    if valid:
        assert parse_duration(text) == Duration(amount, unit)
    else:
        with pytest.raises(DurationError):
            parse_duration(text)


@given(st.text(max_size=12))
def test_arbitrary_text_either_parses_to_a_duration_that_prints_back_or_is_a_duration_error(text):
    try:
        duration = parse_duration(text)
    except DurationError as exc:
        assert str(exc)
    else:
        assert str(duration) == text.strip()


@given(st.integers(min_value=1, max_value=MAX_MONTHS), st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 12, 31)))
def test_months_land_on_the_same_day_or_the_last_day_of_a_shorter_month(months, day):
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)

    end = add_months(start, months)

    assert (end.year - start.year) * 12 + end.month - start.month == months
    last_day_of_its_month = (end + timedelta(days=1)).day == 1
    assert end.day == start.day or (end.day < start.day and last_day_of_its_month)


# --- the shipped policies -----------------------------------------------------------------------------


def test_every_shipped_jurisdiction_has_a_policy():
    assert sorted(POLICIES) == ["AU", "DE", "DK", "NL", "SE", "UK"]


def test_se_days_and_months_end_by_themselves_with_no_early_lift():
    terms = POLICIES["SE"].terms("+30d")

    assert terms.end is End.AUTOMATIC
    assert terms.ends_at(START) == datetime(2025, 3, 2, 12, 30, tzinfo=UTC)
    assert terms.minimum_until(START) is None
    assert not terms.panic


def test_se_twelve_months_is_until_further_notice_with_a_twelve_month_minimum():
    terms = POLICIES["SE"].terms("+12m")

    assert terms.ends_at(START) is None
    assert terms.minimum_until(START) == datetime(2026, 1, 31, 12, 30, tzinfo=UTC)


def test_se_one_day_is_the_panic_button():
    terms = POLICIES["SE"].terms("+1d")

    assert terms.panic
    assert terms.ends_at(START) == datetime(2025, 2, 1, 12, 30, tzinfo=UTC)


@pytest.mark.parametrize("duration", ["+6m", "+12m", "+60m"])
def test_uk_offers_six_months_one_year_five_years_each_staying_until_lifted(duration):
    terms = POLICIES["UK"].terms(duration)

    assert terms.ends_at(START) is None
    assert terms.minimum_until(START) == add_months(START, int(duration[1:-1]))
    assert POLICIES["UK"].return_cooling_off_hours == 24


@pytest.mark.parametrize("duration", ["+30d", "+3m", "+24m", "+1d"])
def test_uk_refuses_any_other_duration_naming_what_is_allowed(duration):
    with pytest.raises(DurationError, match=r"not allowed in UK: allowed: \+6m, \+12m, \+60m"):
        POLICIES["UK"].terms(duration)


@pytest.mark.parametrize("duration", ["+1d", "+1m", "+3m", "+6m"])
def test_dk_short_exclusions_end_by_themselves(duration):
    terms = POLICIES["DK"].terms(duration)

    assert terms.end is End.AUTOMATIC and terms.ends_at(START) is not None and terms.minimum_until(START) is None


def test_dk_permanent_has_a_one_year_minimum_then_ends_on_request():
    terms = POLICIES["DK"].terms("+12m")

    assert terms.label == "permanent"
    assert terms.ends_at(START) is None
    assert terms.minimum_until(START) == add_months(START, 12)


@pytest.mark.parametrize("duration", ["+2m", "+30d", "+24m"])
def test_dk_refuses_other_durations(duration):
    with pytest.raises(DurationError):
        POLICIES["DK"].terms(duration)


def test_de_needs_three_months_at_least_and_never_ends_without_a_request_lifted_a_week_later():
    policy = POLICIES["DE"]
    terms = policy.terms("+3m")

    assert terms.ends_at(START) is None
    assert terms.minimum_until(START) == add_months(START, 3)
    assert policy.return_cooling_off_hours == 7 * 24
    assert policy.document_check
    with pytest.raises(DurationError):
        policy.terms("+2m")


def test_de_third_party_application_gets_a_one_year_minimum():
    policy = POLICIES["DE"]

    terms = policy.third_party_terms(policy.terms("+3m"))

    assert terms.ends_at(START) is None
    assert terms.minimum_until(START) == add_months(START, 12)
    assert policy.third_party.applicants == ["regulator", "family"]


def test_nl_ends_by_itself_and_may_be_cancelled_after_six_months_with_eight_days_reflection():
    policy = POLICIES["NL"]
    terms = policy.terms("+24m")

    assert terms.ends_at(START) == add_months(START, 24)
    assert terms.minimum_until(START) == add_months(START, 6)
    assert policy.lift_allowed_early()
    assert policy.return_cooling_off_hours == 8 * 24
    with pytest.raises(DurationError):
        policy.terms("+5m")
    assert policy.terms("+1188m").ends_at(START) == add_months(START, 99 * 12)


def test_nl_third_party_application_lasts_six_months_at_least_and_ends_by_itself():
    policy = POLICIES["NL"]

    terms = policy.third_party_terms(policy.terms("+6m"))

    assert terms.ends_at(START) == add_months(START, 6)
    assert terms.minimum_until(START) == add_months(START, 6)


def test_au_runs_three_months_to_lifetime_removal_after_three_months_seven_days_later_support_persons():
    policy = POLICIES["AU"]
    terms = policy.terms("+12m")

    assert terms.ends_at(START) == add_months(START, 12)
    assert terms.minimum_until(START) == add_months(START, 3)
    assert policy.return_cooling_off_hours == 7 * 24
    assert policy.support_persons_max == 5
    with pytest.raises(DurationError):
        policy.terms("+2m")


def test_an_unknown_jurisdiction_is_a_policy_error_naming_the_known_ones():
    with pytest.raises(PolicyError, match="no policy for jurisdiction 'FR'; known: AU, DE, DK, NL, SE, UK"):
        policy_for(POLICIES, "FR")


def test_a_jurisdiction_without_third_party_applications_refuses_them():
    with pytest.raises(PolicyError, match="SE takes no third-party applications"):
        POLICIES["SE"].third_party_terms(POLICIES["SE"].terms("+30d"))


# --- policy files -------------------------------------------------------------------------------------


def policy_text(top: str = "", durations: str = '[[durations]]\nvalue = "+30d"\n', jurisdiction: str = "XX") -> str:
    """A policy file: top-level keys first (TOML puts keys after a table header into that table)."""
    return f'jurisdiction = "{jurisdiction}"\nname = "Test"\n{top}{durations}'


GOOD = policy_text()


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(exist_ok=True)
    (directory / name).write_text(text)
    return directory


def test_a_new_jurisdiction_is_only_a_file(tmp_path):
    policies = load_policies(write(tmp_path, "xx.toml", policy_text("activation_cooling_off_hours = 48\n")))

    assert policies["XX"].terms("+30d").end is End.AUTOMATIC
    assert policies["XX"].activation_cooling_off_hours == 48


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('jurisdiction = "XX"\nname = ', "Invalid value"),  # not TOML at all
        (policy_text(durations='[[durations]]\nvalue = "+0d"\n'), "between 1 and"),
        (policy_text(durations='[[durations]]\nvalue = "30 days"\n'), r"is not \+Nd"),
        (policy_text(durations='[[durations]]\nunit = "d"\nmin = 30\nmax = 1\n'), "min <= max"),
        (policy_text(durations='[[durations]]\nvalue = "+1d"\nunit = "d"\nmin = 1\nmax = 2\n'), "either value"),
        (policy_text(durations="durations = []\n"), "durations"),
        (policy_text("activation_cooling_off_hours = -1\n"), "activation_cooling_off_hours"),
        (policy_text('cancellable_after = "+13x"\n'), r"'\+13x'"),
        (policy_text("surprise = true\n"), "surprise"),
        (policy_text(jurisdiction="xx"), "jurisdiction"),
        (GOOD + '[third_party]\napplicants = ["neighbour"]\nminimum = "+6m"\n', "applicants"),
        (GOOD + '[third_party]\napplicants = ["family"]\nminimum = "+6"\n', r"'\+6'"),
    ],
)
def test_a_broken_policy_file_is_refused_with_its_name_and_the_problem(tmp_path, text, problem):
    write(tmp_path, "aa.toml", policy_text(jurisdiction="AA"))
    write(tmp_path, "xx.toml", text)

    with pytest.raises(PolicyError, match=f"(?s)^xx.toml: .*{problem}"):
        load_policies(tmp_path)


def test_two_files_for_one_jurisdiction_are_refused(tmp_path):
    write(tmp_path, "a.toml", GOOD)
    write(tmp_path, "b.toml", GOOD)

    with pytest.raises(PolicyError, match=r"b\.toml: a second policy for XX"):
        load_policies(tmp_path)


def test_a_directory_without_policies_is_refused(tmp_path):
    with pytest.raises(PolicyError, match="no policy files"):
        load_policies(tmp_path)
