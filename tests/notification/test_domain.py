"""The notification rules that need no I/O: quiet hours, languages, channels, letters, the cap."""

from datetime import UTC, datetime

import pytest

from services.notification import domain
from services.notification.templates import Templates
from shared.events import ExclusionActivated, ExclusionExtended, ExclusionRequested
from tests.notification.conftest import snapshot

STOCKHOLM = "Europe/Stockholm 21:00-08:00"


def test_a_message_at_night_in_stockholm_waits_until_eight_in_the_morning_there():
    late_evening = datetime(2026, 12, 3, 22, 30, tzinfo=UTC)  # 23:30 in Stockholm (UTC+1 in winter)

    assert domain.quiet_until(late_evening, STOCKHOLM) == datetime(2026, 12, 4, 7, 0, tzinfo=UTC)


def test_after_midnight_the_quiet_hours_end_the_same_morning():
    early = datetime(2026, 6, 3, 3, 0, tzinfo=UTC)  # 05:00 in Stockholm (UTC+2 in summer)

    assert domain.quiet_until(early, STOCKHOLM) == datetime(2026, 6, 3, 6, 0, tzinfo=UTC)


def test_daytime_is_not_quiet_and_no_setting_means_never_quiet():
    noon = datetime(2026, 12, 3, 11, 0, tzinfo=UTC)

    assert domain.quiet_until(noon, STOCKHOLM) is None
    assert domain.quiet_until(datetime(2026, 12, 3, 23, 0, tzinfo=UTC), None) is None


def test_a_window_within_one_day_works_too():
    assert domain.quiet_until(datetime(2026, 12, 3, 13, 0, tzinfo=UTC), "UTC 12:00-14:00") == datetime(2026, 12, 3, 14, 0, tzinfo=UTC)


def test_a_quiet_hours_setting_that_does_not_read_is_refused():
    with pytest.raises(domain.QuietHoursError):
        domain.quiet_until(datetime(2026, 12, 3, tzinfo=UTC), "Stockholm at night")


def test_codes_are_urgent_and_letters_are_not():
    def notification(kind: str) -> domain.Notification:
        return domain.Notification(
            id="x/0",
            cause_id="00000000-0000-4000-8000-000000000001",
            subject="p",
            recipient_key="p",
            kind=kind,
            created_at=datetime.now(UTC),
        )

    assert notification("verification_code").urgent and notification("lift_code").urgent
    assert not notification("exclusion_started").urgent and not notification("exclusion_ending_soon").urgent


@pytest.mark.parametrize(
    ("requested", "known", "jurisdiction", "locale"),
    [("sv-SE", None, "UK", "sv"), (None, "en", "SE", "en"), (None, None, "SE", "sv"), (None, None, "UK", "en"), ("fi", None, "DK", "en")],
)
def test_the_language_is_the_request_s_then_the_person_s_then_the_jurisdiction_s_then_english(requested, known, jurisdiction, locale):
    assert domain.locale_for(requested, known, jurisdiction) == locale


def test_the_channel_asked_for_wins_when_there_is_a_contact_for_it_else_the_other():
    assert domain.channel_for("sms", True, True) == "sms"
    assert domain.channel_for("sms", True, False) == "email"
    assert domain.channel_for("any", True, True) == "email"
    assert domain.channel_for("email", False, True) == "sms"
    assert domain.channel_for("any", False, False) is None


def test_the_person_is_written_to_when_an_exclusion_starts_and_not_when_it_is_only_requested():
    assert domain.letter_for(ExclusionActivated(subject="p", payload=snapshot())) == "exclusion_started"
    assert domain.letter_for(ExclusionRequested(subject="p", payload=snapshot())) is None


def test_an_extension_that_lengthened_nothing_tells_nobody():
    assert domain.letter_for(ExclusionExtended(subject="p", payload=snapshot())) == "exclusion_extended"
    assert domain.letter_for(ExclusionExtended(subject="p", payload=snapshot(reason="already longer"))) is None


def test_the_cap_allows_up_to_n_an_hour():
    assert not domain.over_cap(5, 6) and domain.over_cap(6, 6)


def test_a_deployment_s_template_folder_overrides_a_shipped_template_and_keeps_the_rest(tmp_path):
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "verification_code.txt").write_text(
        "{% block subject %}Code {{ code }}{% endblock %}{% block text %}Our own words: {{ code }}{% endblock %}"
        "{% block sms %}{{ code }}{% endblock %}"
    )
    (tmp_path / "en" / "verification_code.html").write_text("<p>{{ code }}</p>")
    templates = Templates(str(tmp_path))

    own = templates.render("en", "verification_code", {"p": {}, "code": "<123>", "organisations": []})
    shipped = templates.render("sv", "verification_code", {"p": {"valid_minutes": "15"}, "code": "123", "organisations": []})

    assert (own.subject, own.text, own.sms) == ("Code <123>", "Our own words: <123>\n", "<123>")
    assert own.html == "<p>&lt;123&gt;</p>", "HTML is escaped"
    assert shipped.subject == "Din kod från Selfex: 123"
