"""The web pages' pieces without a browser: sealed sessions and notice tokens (forged, altered,
expired), CSRF, the language from Accept-Language, and the portal's form checks and choices."""

from datetime import UTC, date, datetime, timedelta

from starlette.requests import Request
from starlette.responses import Response

from services.gateway.web import forms, trends
from services.gateway.web.notices import Notice, notice_token, read_notice
from services.gateway.web.sessions import Sessions, csrf_ok
from services.gateway.web.texts import Words, preferred
from shared.crypto import Sealer
from shared.policies import shipped_policies

SEALER = Sealer({"e1": b"k" * 32}, "e1")
OTHER = Sealer({"e1": b"x" * 32}, "e1")
NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def request_with(cookie: str = "", headers: dict[str, str] | None = None) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    if cookie:
        raw.append((b"cookie", cookie.encode()))
    return Request({"type": "http", "method": "POST", "path": "/", "headers": [(b"host", b"selfex.test"), *raw], "query_string": b""})


def written_cookie(sessions: Sessions, session: dict) -> str:
    response = Response()
    sessions.write(response, session)
    header = response.headers["set-cookie"]
    assert "HttpOnly" in header and "Secure" in header and "SameSite=lax" in header
    return header.split(";", 1)[0]


def test_a_session_reads_back_sealed_and_not_readable_in_the_cookie():
    sessions = Sessions(SEALER, "s", 60, clock=lambda: 1000.0)
    cookie = written_cookie(sessions, {"identity": {"email": "kim@example.com"}, "csrf": "t"})
    assert "kim@example.com" not in cookie
    assert sessions.read(request_with(cookie))["identity"] == {"email": "kim@example.com"}


def test_a_forged_an_altered_or_an_old_session_is_no_session():
    sessions = Sessions(SEALER, "s", 60, clock=lambda: 1000.0)
    cookie = written_cookie(sessions, {"verified": True, "csrf": "t"})
    assert "verified" not in Sessions(OTHER, "s", 60, clock=lambda: 1000.0).read(request_with(cookie))
    name, value = cookie.split("=", 1)
    altered = f"{name}={value[:-4]}{'AAAA' if not value.endswith('AAAA') else 'BBBB'}"
    assert "verified" not in sessions.read(request_with(altered))
    assert "verified" not in Sessions(SEALER, "other", 60, clock=lambda: 1000.0).read(request_with(cookie.replace("s=", "other=", 1)))
    assert "verified" not in Sessions(SEALER, "s", 60, clock=lambda: 1061.0).read(request_with(cookie))
    assert "csrf" in sessions.read(request_with(altered)), "a fresh session still gets a CSRF token"


def test_csrf_needs_the_sessions_token_and_this_site():
    session = {"csrf": "token"}
    assert csrf_ok(request_with(), session, "token")
    assert csrf_ok(request_with(headers={"Origin": "http://selfex.test"}), session, "token")
    assert not csrf_ok(request_with(), session, "other")
    assert not csrf_ok(request_with(), session, None)
    assert not csrf_ok(request_with(headers={"Origin": "https://evil.example"}), session, "token")
    assert not csrf_ok(request_with(), {}, "token")


def test_a_notice_token_carries_its_date_until_it_expires_and_cannot_be_forged():
    token = notice_token(SEALER, Notice(date(2027, 1, 2), "SE"), NOW)
    assert read_notice(SEALER, token, NOW + timedelta(days=6)) == Notice(date(2027, 1, 2), "SE")
    assert read_notice(SEALER, token, NOW + timedelta(days=8)) is None
    assert read_notice(OTHER, token, NOW) is None
    assert read_notice(SEALER, token[:-6] + "AAAAAA", NOW) is None
    assert read_notice(SEALER, "not a token", NOW) is None
    assert read_notice(SEALER, notice_token(SEALER, Notice(None, "UK"), NOW), NOW) == Notice(None, "UK")


def test_the_language_is_the_browsers_first_one_we_have():
    assert preferred("sv-SE,sv;q=0.9,en;q=0.8") == "sv"
    assert preferred("de-DE,de;q=0.9,sv;q=0.5,en;q=0.4") == "sv"
    assert preferred("en;q=0.3,sv;q=0.7") == "sv"
    assert preferred("fr, de") == "en"
    assert preferred("") == "en"
    assert Words("sv")("error_code") == "Ange de sex siffrorna du fick."


def test_the_panic_button_is_swedens_24_hours_and_takes_an_email_or_a_mobile():
    policy, duration = forms.panic_policy(shipped_policies())
    assert (policy.jurisdiction, duration) == ("SE", "+1d")
    assert forms.check_panic({"contact": "kim@example.se"}, policy).clean == {"email": "kim@example.se", "verify_by": "email"}
    assert forms.check_panic({"contact": "+46 70 123 45 67"}, policy).clean["verify_by"] == "sms"
    assert forms.check_panic({"contact": "kim@"}, policy).errors == {"contact": "error_email"}
    assert forms.check_panic({"contact": "12"}, policy).errors == {"contact": "error_mobile"}
    assert forms.check_panic({}, policy).errors == {"contact": "error_contact"}


def test_the_full_request_names_each_wrong_field_and_keeps_what_was_typed():
    policy = shipped_policies()["SE"]
    checked = forms.check_request({"national_id": "12345", "email": "kim@example.se", "scope": ["GAMES"], "game": []}, policy, NOW)
    assert checked.errors == {"duration": "error_duration", "national_id": "error_national_id", "consent": "error_consent"}
    assert checked.values["national_id"] == "12345" and checked.values["email"] == "kim@example.se"
    good = forms.check_request(
        {
            "duration": "+3m",
            "national_id": "198507091234",
            "scope": ["GAMES", "DM"],
            "games": "chosen",
            "game": ["POKER"],
            "consent": "yes",
        },
        policy,
        NOW,
    )
    assert good.errors == {"verify_by": "error_contact"}, "a code needs an e-mail or a mobile"
    good.values.update(email="kim@example.se")
    ok = forms.check_request({**good.values, "consent": "yes"}, policy, NOW)
    assert ok.errors == {}
    assert {t.value for t in ok.clean["scope"].types} == {"GAMES", "DM"} and {g.value for g in ok.clean["scope"].games} == {"POKER"}


def test_durations_are_offered_as_the_policy_allows_and_extending_never_offers_shorter():
    se = [c.value for c in forms.duration_choices(shipped_policies()["SE"], NOW)]
    assert se[0] == "+1d" and "+12m" in se and "+60m" in se
    assert [c.value for c in forms.duration_choices(shipped_policies()["UK"], NOW)] == ["+6m", "+12m", "+60m"]
    running = {"ends_at": (NOW + timedelta(days=90)).isoformat(), "minimum_until": None}
    longer = [c.value for c in forms.longer_choices(shipped_policies()["SE"], NOW, running)]
    assert "+1m" not in longer and "+3m" not in longer and "+6m" in longer and "+12m" in longer
    on_request = {"ends_at": None, "minimum_until": (NOW + timedelta(days=182)).isoformat()}
    assert [c.value for c in forms.longer_choices(shipped_policies()["UK"], NOW, on_request)] == ["+12m", "+60m"]
    made_a_minute_ago = {"ends_at": None, "minimum_until": datetime(2027, 6, 3, 8, 59, tzinfo=UTC).isoformat()}  # +6m, a minute ago
    assert [c.value for c in forms.longer_choices(shipped_policies()["UK"], NOW, made_a_minute_ago)] == ["+12m", "+60m"]


def test_the_last_six_months_end_now_and_chart_each_jurisdiction():
    buckets = trends.months(NOW)
    assert [label for label, _, _ in buckets] == ["2026-07", "2026-08", "2026-09", "2026-10", "2026-11", "2026-12"]
    assert buckets[-1][1:] == (datetime(2026, 12, 1, tzinfo=UTC), NOW) and buckets[0][2] == buckets[1][1]
    assert [label for label, _, _ in trends.months(datetime(2027, 2, 10, tzinfo=UTC), 3)] == ["2026-12", "2027-01", "2027-02"]
    figures = {"exclusions_started": {"by_jurisdiction": {"SE": 2}}, "exclusions_active": {"by_jurisdiction": {"SE": 2, "UK": 1}}}
    started, active = trends.trend_charts([("2026-11", {}), ("2026-12", figures)])
    assert started["series"] == [{"label": "SE", "data": [0, 2]}, {"label": "UK", "data": [0, 0]}]
    assert active["series"] == [{"label": "SE", "data": [0, 2]}, {"label": "UK", "data": [0, 1]}]
