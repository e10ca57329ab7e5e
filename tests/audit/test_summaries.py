"""What a record repeats of its event for the queries, and how a statement reads: plain functions, no store."""

import uuid
from datetime import UTC, datetime, timedelta, timezone

from services.audit.statements import as_html, entry, statement
from services.audit.summaries import birth_band, facts, instant, moment, moment_of, query_fields, references


def test_a_moment_is_microseconds_in_utc_whatever_the_offset_and_back():
    stockholm = datetime(2026, 1, 31, 13, 0, 0, 250_000, tzinfo=timezone(timedelta(hours=1)))

    assert moment_of("2026-01-31T13:00:00.25+01:00") == moment_of("2026-01-31T12:00:00.250000Z") == moment(stockholm)
    assert instant(moment(stockholm)) == stockholm.astimezone(UTC)
    assert moment_of("not a moment") is None and moment_of("2026-01-31T12:00:00") is None, "a moment without an offset is no moment"


def test_references_are_the_identifier_hashes_subject_and_what_the_event_names():
    exclusion, account_event = str(uuid.uuid4()), str(uuid.uuid4())
    event = {
        "subject": "person-1",
        "payload": {"identifiers": ["email:ab", "mobile:cd"], "exclusion_id": exclusion, "account_event_id": account_event, "note": "x"},
    }

    assert references(event) == sorted(["person-1", "email:ab", "mobile:cd", exclusion, account_event])
    assert references({"payload": {"identity": "[unhashable identity withheld]"}}) == []


def test_facts_keep_a_decade_of_birth_never_the_year():
    request = {"type": "exclusion.request", "id": "r1", "payload": {"jurisdiction": "SE", "year_of_birth": 1987, "gender": "F"}}

    assert facts(request) == {"jurisdiction": "SE", "gender": "F", "birth_band": "1980s", "request": "r1"}
    assert birth_band(None) is None and birth_band(True) is None
    assert facts({"type": "exclusion.activated", "correlation_id": "r1", "payload": {"exclusion_id": "e", "ends_at": None}})[
        "duration_kind"
    ] == ("until_lifted")
    assert "facts" not in query_fields({"type": "person.contacts_recorded", "payload": {}})


def test_a_statement_shows_steps_and_details_never_identity():
    record = {
        "id": "1",
        "occurred_at": "2026-01-31T12:00:00Z",
        "type": "exclusion.activated",
        "operator_id": "op-1",
        "chain": "t.exclusion.lifecycle/0",
        "seq": 3,
        "hash": "ab",
        "event": {
            "payload": {"exclusion_id": "e-1", "identifiers": ["email:secret-hash"], "state": "active", "scope": {"types": ["GAMES"]}}
        },
    }

    made = statement([record], scope="all", generated_at=datetime(2026, 2, 1, tzinfo=UTC))

    [step] = made["entries"]
    assert (step["step"], step["what"], step["exclusion_id"]) == ("activation", "Exclusion in force", "e-1")
    assert step["details"] == {"state": "active", "scope": ["GAMES"]} and made["steps"] == {"activation": 1}
    assert "email:secret-hash" not in str(made)
    html = as_html({**made, "entries": [{**step, "what": "<script>"}]})
    assert "<script>" not in html and "&lt;script&gt;" in html, "the page escapes what it shows"
    assert entry({"type": "something.new", "event": {}})["step"] == "other"
