"""Event contracts: they round-trip, say their topic, derive ids from their cause, and redact."""

import base64
import hashlib
import json
import re
import uuid
from datetime import UTC, date, datetime

import pydantic
import pytest

from shared import topics
from shared.broker import describe
from shared.events import (
    EVENT_TYPES,
    LIFECYCLE_EVENTS,
    Envelope,
    Event,
    ExclusionActivated,
    ExclusionType,
    Game,
    MessageDeadLettered,
    RequestExclusion,
    Scope,
    derived_id,
    parse_event,
)
from shared.identity import Hasher, Identity, uid_from_personnummer

HASHER = Hasher(b"test-secret-0123456789abcdef")
PERSONNUMMER = "199001011234"
RAW = {
    "national_id": "19900101-1234",
    "first_name": "Åsa",
    "last_name": "Lindström",
    "date_of_birth": date(1990, 1, 1),
    "postcode": "SW1A 1AA",
    "email": "Asa.Lindstrom@Example.com",
    "mobile": "07700 900123",
}
IDENTITY = Identity(**RAW)
NOW = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)
SLOTS_AND_ADS = Scope(types=frozenset({ExclusionType.GAMES, ExclusionType.ADS}), games=frozenset({Game.SLOTS}))
EXCLUSION_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")
SNAPSHOT = {
    "exclusion_id": EXCLUSION_ID,
    "identifiers": sorted(HASHER.identifiers(IDENTITY).values()),
    "scope": SLOTS_AND_ADS,
    "jurisdiction": "SE",
    "starts_at": NOW,
}

# One filled-in payload per event type: a new contract needs one here (contract first).
PAYLOADS: dict[str, dict] = {
    "exclusion.request": {
        "identity": IDENTITY,
        "duration": "+30d",
        "scope": SLOTS_AND_ADS,
        "year_of_birth": 1990,
        "gender": "F",
        "third_party": {"applicant": "family", "applicant_name": "Per Lindström", "reason": "worried"},
        "support_persons": [{"name": "Karin Berg", "email": "karin@example.se", "mobile": "+46701234567"}],
    },
    "exclusion.lift_request": {"identity": IDENTITY},
    "verification.code_submitted": {"exclusion_id": EXCLUSION_ID, "sealed_code": "c2VhbGVk"},
    "verification.code_resend": {"exclusion_id": EXCLUSION_ID},
    "verification.lift_request": {
        "lift_id": uuid.UUID("00000000-0000-4000-8000-000000000002"),
        "exclusion_id": EXCLUSION_ID,
        "verify_by": "sms",
    },
    "verification.lift_verified": {
        "exclusion_id": EXCLUSION_ID,
        "method": "code",
        "lift_id": uuid.UUID("00000000-0000-4000-8000-000000000002"),
    },
    "exclusion.cancel": {"exclusion_id": EXCLUSION_ID, "reason": "registered for the wrong person", "cancelled_by": "staff-7"},
    "exclusion.end_at_origin": {
        "exclusion_id": EXCLUSION_ID,
        "origin": "platform-a",
        "ended_as": "lifted",
        "ended_at": "2026-11-01T00:00:00+00:00",
    },
    "exclusion.import": {
        "from_register": "spelpaus",
        "register_exclusion_id": str(EXCLUSION_ID),
        "origin": "spelpaus",
        "identifiers": ["email:" + "ab" * 32],
        "jurisdiction": "SE",
        "in_force": True,
        "starts_at": "2026-10-01T00:00:00+00:00",
        "ends_at": "2026-12-31T00:00:00+00:00",
        "duration": "+3m",
    },
    "forwarding.delivered": {
        "delivery_id": "d1",
        "exclusion_id": EXCLUSION_ID,
        "change": "exclusion.activated",
        "to_register": "spelpaus",
        "adapter": "native",
        "attempts": 1,
    },
    "forwarding.failed": {
        "delivery_id": "d1",
        "exclusion_id": EXCLUSION_ID,
        "change": "exclusion.activated",
        "to_register": "spelpaus",
        "adapter": "chipout",
        "attempts": 10,
        "reason": "POST exclude-customers: HTTP 500 (after 10 attempts)",
    },
    "forwarding.status": {
        "to_register": "spelpaus",
        "adapter": "native",
        "pending": 3,
        "failed": 1,
        "oldest_pending_at": "2026-01-10T11:58:00+00:00",
        "oldest_pending_age_seconds": 120.0,
        "last_delivered_at": "2026-01-10T11:00:00+00:00",
        "last_sync_at": None,
        "last_sync_age_seconds": None,
        "breaker": "opened",
    },
    "verification.document_submitted": {
        "exclusion_id": EXCLUSION_ID,
        "document_id": "doc-1",
        "content_type": "application/pdf",
        "size": 1024,
    },
    "verification.document_reviewed": {"exclusion_id": EXCLUSION_ID, "document_id": "doc-1", "approved": True, "reviewer": "rev-1"},
    "exclusion.verified": {"exclusion_id": EXCLUSION_ID, "method": "code"},
    "verification.failed": {"exclusion_id": EXCLUSION_ID, "method": "document", "reason": "rejected"},
    "verification.submission_refused": {"exclusion_id": EXCLUSION_ID, "reason": "wrong code"},
    "verification.progressed": {
        "exclusion_id": EXCLUSION_ID,
        "verification": {"method": "code", "state": "awaiting_code", "attempts_left": 4, "resends_left": 3, "version": 2},
        "answer": {"submission_id": EXCLUSION_ID, "status": "wrong_code", "refused": True, "reason": "wrong code", "attempts_left": 4},
    },
    "notification.requested": {"template": "exclusion_activated", "params": {"ends_on": "2025-03-02"}},
    "person.contacts_recorded": {"email": "t1:c2VhbGVk", "mobile": None, "locale": "sv", "jurisdiction": "SE"},
    "notification.delivery_recorded": {
        "notification_id": f"{EXCLUSION_ID}/0",
        "cause_id": EXCLUSION_ID,
        "kind": "verification_code",
        "channel": "email",
        "attempt": 1,
        "outcome": "sent",
        "final": True,
        "message_id": "<x@selfex>",
    },
    "account.event": {
        "operator_event_id": "evt-1",
        "account_id": "acc-1",
        "kind": "bet",
        "game": "SLOTS",
        "identity": IDENTITY,
    },
    "decision.made": {
        "account_event_id": uuid.uuid4(),
        "operator_event_id": "evt-1",
        "account_id": "acc-1",
        "kind": "bet",
        "outcome": "BLOCK",
        "code": "Self-Excluded",
        "ends_on": date(2025, 3, 2),
        "scope": SLOTS_AND_ADS,
        "matched": ["email"],
        "message": "Your account is blocked as part of the responsible gambling programme until 2025-03-02",
    },
    "enforcement.commanded": {"account_id": "acc-1", "action": "end_sessions", "exclusion_id": EXCLUSION_ID},
    "message.dead_lettered": {
        "topic": "selfex.exclusion.commands",
        "partition": 0,
        "offset": 7,
        "key": "k",
        "consumer": "registration",
        "error": "ValueError: bad",
        "original_sha256": hashlib.sha256(b"not json {").hexdigest(),
        "original_size": 10,
        "sealed_original": "e1:c2VhbGVk",
        "original_truncated": False,
    },
    "gateway.request_handled": {
        "request_id": "8c0e7a52-4f2d-4c55-9a0e-0d6f2b1c3a4e",
        "method": "POST",
        "route": "/",
        "api": "gamstop",
        "status": 200,
        "outcome": "N",
        "trace_id": "trace-1",
        "duration_ms": 1.5,
    },
}
LIFECYCLE_TYPES = [model.model_fields["type"].default for model in LIFECYCLE_EVENTS]


def sample(type_name: str, **fields) -> Event:
    model = EVENT_TYPES[type_name]
    payload = SNAPSHOT if type_name in LIFECYCLE_TYPES else PAYLOADS[type_name]
    return model(source="test", operator_id="op-1", subject="person-1", payload=payload, **fields)


def raw_strings() -> list[str]:
    strings = [str(v) for v in RAW.values()] + [PERSONNUMMER, uid_from_personnummer(PERSONNUMMER)]
    return strings + ["asa.lindstrom@example.com", "+447700900123", "SW1A1AA", "lindstrom", "1990-01-01"]


def test_every_event_type_has_a_sample_here():
    assert set(EVENT_TYPES) == set(PAYLOADS) | set(LIFECYCLE_TYPES)


@pytest.mark.parametrize("type_name", sorted(EVENT_TYPES))
def test_every_contract_round_trips_through_json(type_name):
    event = sample(type_name)
    text = event.model_dump_json()

    assert type(parse_event(json.loads(text))) is type(event)
    assert parse_event(json.loads(text)) == event
    assert type(event).model_validate_json(text) == event


@pytest.mark.parametrize("type_name", sorted(EVENT_TYPES))
def test_every_event_model_names_its_own_type_and_a_topic_that_exists(type_name):
    model = EVENT_TYPES[type_name]

    assert model.model_fields["type"].default == type_name
    assert model.topic in topics.ALL + topics.PER_OPERATOR


def test_topic_names_are_unique_and_all_of_them_are_listed():
    declared = {value for name, value in vars(topics).items() if name.isupper() and isinstance(value, str)}
    listed = topics.ALL + topics.PER_OPERATOR

    assert len(set(listed)) == len(listed)
    assert declared == set(listed)


def test_an_operator_s_topics_are_its_own_and_the_patterns_match_only_operators_topics():
    import re

    assert topics.operator_topics("op-1") == ("operator.op-1.account_events", "operator.op-1.decisions", "operator.op-1.enforcement")
    pattern = re.compile(topics.operator_pattern("selfex.", topics.DECISIONS))
    assert pattern.match("selfex.operator.op-1.decisions")
    for other in (
        "selfex.operator.op-1.enforcement",
        "selfex.operator.a.b.decisions",
        "selfex.decisions",
        "other.operator.op-1.decisions",
        "selfex.operator.op-1.decisions.x",
    ):
        assert not pattern.match(other), other
    assert topics.OperatorTopics("selfex.", topics.ACCOUNT_EVENTS).operator_of("selfex.operator.op-7.account_events") == "op-7"
    with pytest.raises(ValueError):
        topics.of_operator("a.b", topics.DECISIONS)  # an id with a dot could pass for another operator's topic


def test_a_derived_id_is_the_same_for_the_same_cause_and_name():
    cause = uuid.uuid4()

    assert derived_id(cause, "exclusion") == derived_id(cause, "exclusion")
    assert derived_id(str(cause), "exclusion") == derived_id(cause, "exclusion")
    assert derived_id(cause, "exclusion") != derived_id(cause, "person")
    assert derived_id(cause, "exclusion") != derived_id(uuid.uuid4(), "exclusion")


def test_a_follow_on_event_derives_its_id_from_its_cause_and_name():
    cause = sample("exclusion.request")

    once = ExclusionActivated.caused_by(cause, source="registration", payload=SNAPSHOT)
    redelivered = ExclusionActivated.caused_by(cause, source="registration", payload=SNAPSHOT)
    named = ExclusionActivated.caused_by(cause, source="registration", name="second", payload=SNAPSHOT)

    assert once.id == redelivered.id == derived_id(cause.id, "exclusion.activated")
    assert named.id == derived_id(cause.id, "second") != once.id
    assert ExclusionActivated.caused_by(sample("exclusion.request"), source="registration", payload=SNAPSHOT).id != once.id


def test_the_first_event_of_a_chain_becomes_the_correlation_id_and_later_ones_keep_it():
    cause = sample("exclusion.request")
    activated = ExclusionActivated.caused_by(cause, source="registration", payload=SNAPSHOT)
    next_one = ExclusionActivated.caused_by(activated, source="registration", name="next", payload=SNAPSHOT)

    assert (activated.correlation_id, activated.causation_id) == (cause.id, cause.id)
    assert (next_one.correlation_id, next_one.causation_id) == (cause.id, activated.id)


@pytest.mark.parametrize("type_name", ["exclusion.request", "exclusion.lift_request", "account.event"])
def test_a_redacted_entry_point_message_holds_the_identifier_hashes_and_no_raw_identity(type_name):
    redacted = sample(type_name).redacted(HASHER)
    dumped = json.dumps(redacted, ensure_ascii=False).casefold()

    for raw in raw_strings():
        assert raw.casefold() not in dumped, raw
    assert redacted["payload"]["identity"] == sorted(HASHER.identifiers(IDENTITY).values())


def test_a_redacted_request_withholds_the_applicant_and_support_persons():
    dumped = json.dumps(sample("exclusion.request").redacted(HASHER), ensure_ascii=False)

    for raw in ["Per Lindström", "Karin Berg", "karin@example.se", "+46701234567"]:
        assert raw not in dumped


def test_an_identity_that_cannot_be_hashed_is_withheld_whole():
    event = sample("account.event")
    event = event.model_copy(update={"payload": event.payload.model_copy(update={"identity": Identity(email="a@b.c", mobile="garbage")})})

    redacted = event.redacted(HASHER)

    assert redacted["payload"]["identity"] == "[unhashable identity withheld]"
    assert "a@b.c" not in json.dumps(redacted)


@pytest.mark.parametrize("type_name", ["decision.made", "exclusion.activated", "notification.requested"])
def test_events_without_raw_identity_are_redacted_as_they_are(type_name):
    event = sample(type_name)

    assert event.redacted(HASHER) == event.model_dump(mode="json")


def test_a_redacted_contacts_record_keeps_not_even_the_sealed_tokens():
    redacted = sample("person.contacts_recorded").redacted(HASHER)

    assert (redacted["payload"]["email"], redacted["payload"]["mobile"], redacted["payload"]["locale"]) == ("[sealed]", None, "sv")


def test_a_redacted_dead_letter_keeps_a_sha256_digest_and_not_even_the_sealed_original():
    event = sample("message.dead_lettered")

    redacted = event.redacted(HASHER)

    assert redacted["payload"]["original"] == "sha256:" + hashlib.sha256(b"not json {").hexdigest()
    assert "sealed_original" not in redacted["payload"]
    assert event.payload.sealed_original not in json.dumps(redacted)
    assert {k: v for k, v in redacted.items() if k != "payload"} == {
        k: v for k, v in event.model_dump(mode="json").items() if k != "payload"
    }


def test_a_version_1_dead_letter_with_the_original_in_clear_is_still_read_and_redacted_to_its_digest():
    data = json.loads(sample("message.dead_lettered").model_dump_json())
    data["version"] = 1
    data["payload"] = {k: data["payload"][k] for k in ("topic", "partition", "offset", "key", "consumer", "error")}
    data["payload"]["original"] = base64.b64encode(b"not json {").decode()

    event = parse_event(data)

    assert (type(event), event.version) == (MessageDeadLettered, 1)
    redacted = event.redacted(HASHER)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", redacted["payload"]["original"])
    assert redacted["payload"]["original"] == "sha256:" + hashlib.sha256(b"not json {").hexdigest()
    assert data["payload"]["original"] not in json.dumps(redacted)


def test_a_new_dead_letter_is_version_2():
    assert sample("message.dead_lettered").version == 2


@pytest.mark.parametrize("type_name", sorted(EVENT_TYPES))
def test_a_message_of_a_version_its_contract_does_not_know_is_refused_not_read_as_version_1(type_name):
    data = json.loads(sample(type_name).model_dump_json())
    data["version"] = 99

    with pytest.raises(pydantic.ValidationError) as refused:
        parse_event(data)

    assert "version 99" in describe(refused.value)


def test_a_contract_knows_version_1_unless_it_says_otherwise_and_the_bare_envelope_takes_any():
    assert RequestExclusion.versions == frozenset({1})
    assert MessageDeadLettered.versions == frozenset({1, 2})
    assert parse_event({"type": "exclusion.reinstated", "version": 7, "payload": {}}).version == 7


def test_a_dead_letter_for_a_refused_contract_does_not_quote_the_raw_input_in_its_error():
    with pytest.raises(pydantic.ValidationError) as refused:
        RequestExclusion.model_validate({"payload": {"identity": {"email": "asa.lindstrom"}, "duration": "+30d"}})
    event = sample("message.dead_lettered")
    event = event.model_copy(update={"payload": event.payload.model_copy(update={"error": describe(refused.value)})})

    assert "payload.identity.email" in event.payload.error
    assert "asa.lindstrom" not in json.dumps(event.redacted(HASHER))


def test_an_unknown_event_type_parses_to_the_bare_envelope():
    data = {"id": str(uuid.uuid4()), "type": "exclusion.reinstated", "occurred_at": NOW.isoformat(), "payload": {"days": 30}}

    event = parse_event(data)

    assert type(event) is Envelope
    assert (event.type, event.payload) == ("exclusion.reinstated", {"days": 30})


@pytest.mark.parametrize(
    "data",
    [
        {"type": "exclusion.request", "payload": {"duration": 30}},
        {"type": "account.event", "operator_id": "op-1", "payload": {"kind": "dance"}},
        {"type": "exclusion.activated", "payload": {**SNAPSHOT, "starts_at": "2025-01-31T12:00:00"}},
        {"type": "decision.made", "id": "not-a-uuid", "payload": {}},
    ],
    ids=["duration-not-text", "kind-unknown", "naive-datetime", "id-not-uuid"],
)
def test_a_message_that_breaks_its_contract_is_refused(data):
    with pytest.raises(pydantic.ValidationError):
        parse_event(data)


@pytest.mark.parametrize("type_name", sorted(EVENT_TYPES))
def test_fields_a_consumer_does_not_know_are_ignored(type_name):
    event = sample(type_name)
    data = json.loads(event.model_dump_json())
    data["added_in_version_2"] = "x"
    data["payload"]["also_new"] = {"nested": True}

    assert parse_event(data) == event


@pytest.mark.parametrize("unknown", ["passport_number", "UID", "uid ", "personnummer"])
def test_an_identity_field_the_contract_does_not_know_is_a_contract_error_not_ignored(unknown):
    """Ignoring it could leave an identity that names nobody, and an excluded person allowed."""
    data = json.loads(sample("account.event").model_dump_json())
    data["payload"]["identity"][unknown] = "X1234567"

    with pytest.raises(pydantic.ValidationError) as refused:
        parse_event(data)

    assert "identity" in describe(refused.value) and "X1234567" not in describe(refused.value)


def test_operator_scoped_events_are_keyed_by_operator_and_account_and_the_rest_by_subject():
    assert sample("account.event").key() == b"op-1:acc-1"
    assert sample("decision.made").key() == b"op-1:acc-1"
    assert sample("enforcement.commanded").key() == b"op-1:acc-1"
    assert sample("exclusion.activated").key() == b"person-1"
    assert MessageDeadLettered.model_validate({"payload": PAYLOADS["message.dead_lettered"]}).key() is None


def test_a_scope_needs_at_least_one_type():
    with pytest.raises(pydantic.ValidationError):
        Scope(types=frozenset())
