"""Blocking on the real broker and store: decisions for every kind of event and scope, circumvention,
enforcement pushed when an exclusion starts and ends, redelivery, poison, and the view after a restart."""

import json
from datetime import date, timedelta

import pytest
from aiokafka.partitioner import DefaultPartitioner

from services.blocking.app import VIEW, create_app
from shared import topics
from shared.broker import ensure_operator_topics
from shared.events import (
    SCOPE_ALL,
    AccountEventKind,
    ExclusionActivated,
    ExclusionCoolingOffStarted,
    ExclusionExpired,
    ExclusionLifted,
    ExclusionRequested,
    ExclusionState,
    ExclusionType,
    Game,
    MarketingChannel,
    Scope,
    derived_id,
)
from shared.identity import Hasher, Identity, uid_from_personnummer
from tests.blocking.conftest import OPERATORS, T0, Blocking, Clock, of
from tests.support import Publisher, TopicReader, dead_letter_original, eventually

pytestmark = pytest.mark.integration

K = AccountEventKind
SLOTS = Scope(types=frozenset({ExclusionType.GAMES}), games=frozenset({Game.SLOTS}))
ADS = Scope(types=frozenset({ExclusionType.ADS}))
DM = Scope(types=frozenset({ExclusionType.DM}))
ENDS = T0 + timedelta(days=30)
MESSAGE = "Your account is blocked as part of the responsible gambling programme until " + ENDS.date().isoformat()


def person(n: int, **more) -> Identity:
    return Identity(uid=uid_from_personnummer(f"1990010{n}1234"), **more)


# (kind, game or channel) -> scope -> BLOCK?  The table in services/blocking/domain.py.
EVENTS = [
    (K.LOGIN, {}),
    (K.REGISTRATION, {}),
    (K.DEPOSIT, {}),
    (K.BONUS, {}),
    (K.WITHDRAWAL, {}),
    (K.BET, {"game": Game.SLOTS}),
    (K.BET, {"game": Game.POKER}),
    (K.MARKETING, {"channel": MarketingChannel.ADS}),
    (K.MARKETING, {"channel": MarketingChannel.DM}),
]


def refused(scope_name: str, kind: AccountEventKind, detail: dict) -> bool:
    if kind is K.WITHDRAWAL:
        return False
    if kind is K.MARKETING:
        return scope_name in {"ALL", "SLOTS"} or scope_name == detail["channel"].value
    if kind is K.BET:
        return scope_name == "ALL" or (scope_name == "SLOTS" and detail["game"] is Game.SLOTS)
    return scope_name == "ALL"


async def test_every_kind_of_event_under_every_scope(blocking):
    scopes = {"ALL": SCOPE_ALL, "SLOTS": SLOTS, "ADS": ADS, "DM": DM}
    people = {name: person(n) for n, name in enumerate(scopes, start=1)}
    for name, scope in scopes.items():
        await blocking.lifecycle(ExclusionActivated, blocking.snapshot(people[name], scope=scope), subject=name)

    cases = {}
    for name in scopes:
        for kind, detail in EVENTS:
            event = blocking.account_event(kind, people[name], **detail)
            cases[str(event.id)] = (name, kind, detail, event)
    decided = await blocking.decide(*(case[3] for case in cases.values()))

    assert len(decided) == len(scopes) * len(EVENTS)
    for event_id, (name, kind, detail, event) in cases.items():
        payload, what = decided[event_id], f"{kind.value} {detail} under {name}"
        assert payload["operator_event_id"] == event.payload.operator_event_id, what
        assert payload["account_id"] == event.payload.account_id and payload["kind"] == kind.value, what
        if refused(name, kind, detail):
            assert payload["outcome"] == "BLOCK", what
            assert (payload["code"], payload["message"], payload["ends_on"]) == ("Self-Excluded", MESSAGE, ENDS.date().isoformat()), what
            assert Scope.model_validate(payload["scope"]) == scopes[name], what
            assert payload["matched"] == ["national_id"] and payload["flags"] == [], what
        else:
            assert payload["outcome"] == "ALLOW", what
            assert payload["code"] is None and payload["message"] is None and payload["matched"] == [], what
    withdrawals = [decided[i] for i, case in cases.items() if case[1] is K.WITHDRAWAL]
    assert len(withdrawals) == len(scopes) and all(w["outcome"] == "ALLOW" for w in withdrawals)


EVERYTHING = Identity(
    uid=uid_from_personnummer("198001011234"),
    first_name="Åsa",
    last_name="Lindström",
    date_of_birth=date(1980, 1, 1),
    postcode="SW1A 1AA",
    email="asa@example.se",
    mobile="+46701234567",
    device_fingerprint="dev-asa",
    payment_fingerprint="card-asa",
)
ALONE = {
    "national_id": Identity(uid=EVERYTHING.uid),
    "name_dob_postcode": Identity(first_name="ASA", last_name="lindstrom", date_of_birth=date(1980, 1, 1), postcode="sw1a1aa"),
    "email": Identity(email="ASA@example.se"),
    "mobile": Identity(mobile="+46 70 123 45 67"),
    "device": Identity(device_fingerprint="dev-asa"),
    "payment": Identity(payment_fingerprint="card-asa"),
}


async def test_each_identifier_kind_alone_and_circumvention_at_registration(blocking):
    await blocking.lifecycle(ExclusionActivated, blocking.snapshot(EVERYTHING, ends_at=None))
    logins = {kind: blocking.account_event(K.LOGIN, identity) for kind, identity in ALONE.items()}
    registrations = {kind: blocking.account_event(K.REGISTRATION, identity) for kind, identity in ALONE.items()}

    sibling = blocking.account_event(
        K.LOGIN, Identity(email="sibling@example.se", device_fingerprint="dev-asa", payment_fingerprint="card-asa")
    )
    decided = await blocking.decide(*logins.values(), *registrations.values(), sibling)

    assert decided[str(sibling.id)]["outcome"] == "ALLOW", "a shared device or card does not refuse another person's account"

    for kind in ALONE:
        login, registration = decided[str(logins[kind].id)], decided[str(registrations[kind].id)]
        assert registration["outcome"] == "BLOCK", kind
        assert registration["matched"] == [kind], kind
        assert registration["ends_on"] is None
        assert registration["message"].endswith("until further notice")
        if kind in {"device", "payment"}:
            assert registration["flags"] == ["suspected_circumvention"], kind
            assert login["outcome"] == "UNAVAILABLE", f"a {kind} alone names nobody: the login cannot be checked"
        else:
            assert registration["flags"] == [], kind
            assert (login["outcome"], login["matched"]) == ("BLOCK", [kind]), kind


async def test_enforcement_reaches_accounts_in_session_when_an_exclusion_starts_and_ends(blocking):
    anna = person(1, email="anna@example.se", device_fingerprint="dev-shared")
    exclusion = blocking.snapshot(anna, state=ExclusionState.PENDING_VERIFICATION)
    in_session = [
        blocking.account_event(K.LOGIN, anna, account="acc-a", operator="op-1"),
        blocking.account_event(K.LOGIN, Identity(email="anna@example.se"), account="acc-b", operator="op-2"),
        blocking.account_event(
            K.LOGIN, Identity(email="sibling@example.se", device_fingerprint="dev-shared"), account="acc-sibling", operator="op-1"
        ),
    ]
    assert {p["outcome"] for p in (await blocking.decide(*in_session)).values()} == {"ALLOW"}

    # Requested and cooling off: nothing excludes yet, nothing is enforced.
    await blocking.lifecycle(ExclusionRequested, exclusion)
    cooling = exclusion.model_copy(update={"state": ExclusionState.COOLING_OFF, "version": 2})
    await blocking.lifecycle(ExclusionCoolingOffStarted, cooling)
    assert (await blocking.decide(blocking.account_event(K.BET, anna, account="acc-a", game=Game.SLOTS))).popitem()[1]["outcome"] == "ALLOW"

    active = exclusion.model_copy(update={"state": ExclusionState.ACTIVE, "version": 3})
    activated = await blocking.lifecycle(ExclusionActivated, active)
    enforced = {operator: await blocking.reader(topics.ENFORCEMENT, operator) for operator in OPERATORS}
    commands = [c for reader in enforced.values() for c in await reader.wait_for(lambda m: m["causation_id"] == str(activated.id))]
    assert {(c["operator_id"], c["payload"]["account_id"]) for c in commands} == {("op-1", "acc-a"), ("op-2", "acc-b")}
    for operator, reader in enforced.items():  # each operator is told about its own accounts only
        assert {m["operator_id"] for m in reader.messages()} == {operator}
    for command in commands:
        assert command["type"] == "enforcement.commanded"
        assert command["payload"]["action"] == "end_sessions"
        assert command["payload"]["exclusion_id"] == str(exclusion.exclusion_id)
        assert command["payload"]["ends_on"] == ENDS.date().isoformat()
        assert command["payload"]["message"] == MESSAGE
        assert command["id"] == str(
            derived_id(activated.id, f"enforcement.commanded/end_sessions/{command['operator_id']}:{command['payload']['account_id']}")
        )
    assert (await blocking.decide(blocking.account_event(K.BET, anna, account="acc-a", game=Game.POKER))).popitem()[1]["outcome"] == "BLOCK"

    lifted = await blocking.lifecycle(ExclusionLifted, active.model_copy(update={"state": ExclusionState.LIFTED, "version": 4}))
    lifts = [c for reader in enforced.values() for c in await reader.wait_for(lambda m: m["causation_id"] == str(lifted.id))]
    assert {(c["operator_id"], c["payload"]["account_id"], c["payload"]["action"]) for c in lifts} == {
        ("op-1", "acc-a", "lift"),
        ("op-2", "acc-b", "lift"),
    }
    # A late copy of the older activation does not bring the exclusion back.
    await blocking.lifecycle(ExclusionActivated, active, wait=False)
    barrier = await blocking.lifecycle(ExclusionRequested, blocking.snapshot(person(9), state=ExclusionState.PENDING_VERIFICATION))
    assert barrier.subject == activated.subject, "same key, same partition: handled after the late copy"
    assert (await blocking.decide(blocking.account_event(K.LOGIN, anna, account="acc-a"))).popitem()[1]["outcome"] == "ALLOW"
    stored = await blocking.database["blocking_exclusions"].find_one({"_id": str(exclusion.exclusion_id)})
    assert (stored["version"], stored["state"], stored["excluding"]) == (4, "lifted", False)
    late_commands = [m for reader in enforced.values() for m in reader.messages() if m["causation_id"] == str(activated.id)]
    assert len(late_commands) == 2, "the stale copy enforced nothing more"

    # Hashes only: nothing raw was stored.
    stored = json.dumps(
        [d async for d in blocking.database["blocking_accounts"].find()]
        + [d async for d in blocking.database["blocking_exclusions"].find()],
        default=str,
    )
    assert "anna@example.se" not in stored and anna.uid not in stored and "dev-shared" not in stored
    assert "email:" in stored


async def test_events_after_the_end_of_an_exclusion_are_allowed(blocking):
    anna = person(1)
    exclusion = blocking.snapshot(anna, ends_at=T0 + timedelta(days=1))
    await blocking.lifecycle(ExclusionActivated, exclusion)
    [before] = (await blocking.decide(blocking.account_event(K.DEPOSIT, anna, account="acc-a"))).values()
    assert (before["outcome"], before["ends_on"]) == ("BLOCK", "2025-03-02")

    blocking.clock.now = T0 + timedelta(days=1)
    [at_the_end] = (await blocking.decide(blocking.account_event(K.DEPOSIT, anna, account="acc-a"))).values()
    assert at_the_end["outcome"] == "ALLOW", "the end is the end, even before registration says it expired"

    expired = await blocking.lifecycle(ExclusionExpired, exclusion.model_copy(update={"state": ExclusionState.EXPIRED, "version": 2}))
    [lift] = await blocking.enforcement.wait_for(lambda m: m["causation_id"] == str(expired.id))
    assert (lift["operator_id"], lift["payload"]["account_id"], lift["payload"]["action"]) == ("op-1", "acc-a", "lift")
    [after] = (await blocking.decide(blocking.account_event(K.BET, anna, account="acc-a", game=Game.SLOTS))).values()
    assert after["outcome"] == "ALLOW"


async def test_a_redelivered_account_event_gets_the_same_decision(blocking):
    await blocking.lifecycle(ExclusionActivated, blocking.snapshot(person(1)))
    event = blocking.account_event(K.LOGIN, person(1))

    await blocking.publish.event(event)
    await blocking.publish.event(event)
    decisions = await blocking.decisions.wait_for(lambda m: m["causation_id"] == str(event.id), count=2)

    assert {d["id"] for d in decisions} == {str(derived_id(event.id, "decision.made"))}
    assert decisions[0]["payload"] == decisions[1]["payload"]
    assert decisions[0]["payload"]["outcome"] == "BLOCK"
    # Keyed by the account, on the partition the producer's own partitioner picks for that key.
    records = [r for r in blocking.decisions.records if json.loads(r.value)["causation_id"] == str(event.id)]
    partitions = list(range(blocking.settings.topic_partitions))
    assert {(r.key, r.partition) for r in records} == {(event.key(), DefaultPartitioner()(event.key(), partitions, partitions))}


NOT_JSON = b"\xff\xfe not json {"
NO_ACCOUNT = json.dumps({"type": "account.event", "operator_id": "op-1", "payload": {"operator_event_id": "e", "kind": "login"}}).encode()
NO_IDENTITY_ID = "6d3c1b8e-6a57-4a0e-9e49-0d4f4f8a1c11"
NO_IDENTITY = json.dumps(
    {
        "id": NO_IDENTITY_ID,
        "type": "account.event",
        "operator_id": "op-1",
        "payload": {"operator_event_id": "e", "account_id": "a", "kind": "login"},
    }
).encode()


async def test_poison_events_are_dead_lettered_one_by_one_and_the_batch_is_still_decided(blocking):
    """What names no account cannot be answered and is parked; what names an account but cannot be
    checked (no identity, a mobile that is no number) is answered UNAVAILABLE; the rest is decided."""
    good, after = blocking.account_event(K.LOGIN, person(2)), blocking.account_event(K.LOGIN, person(3))
    bad_mobile = blocking.account_event(K.LOGIN, Identity(mobile="not a number"))
    key = b"op-1:acc-same"
    producer = blocking.publish.producer
    topic = blocking.settings.topic(of(topics.ACCOUNT_EVENTS))
    # Sent together on one key: one partition, most likely one batch.
    sent = [
        await producer.send(topic, NOT_JSON, key=key),
        await producer.send(topic, good.model_dump_json().encode(), key=key),
        await producer.send(topic, NO_IDENTITY, key=key),
        await producer.send(topic, NO_ACCOUNT, key=key),
        await producer.send(topic, bad_mobile.model_dump_json().encode(), key=key),
        await producer.send(topic, after.model_dump_json().encode(), key=key),
    ]
    for future in sent:
        await future

    parked = await blocking.dead_letters.wait_for(lambda m: m["payload"]["topic"] == topic, count=2)
    wanted = {str(good.id): "ALLOW", str(after.id): "ALLOW", NO_IDENTITY_ID: "UNAVAILABLE", str(bad_mobile.id): "UNAVAILABLE"}
    decided = await blocking.decisions.wait_for(lambda m: m["causation_id"] in wanted, count=len(wanted))

    assert {d["causation_id"]: d["payload"]["outcome"] for d in decided} == wanted
    reasons = {d["causation_id"]: d["payload"]["reason"] for d in decided}
    assert reasons[NO_IDENTITY_ID].startswith("event_invalid: payload.identity")
    assert reasons[str(bad_mobile.id)].startswith("identity_unusable: mobile")
    assert {dead_letter_original(blocking.settings, m) for m in parked} == {NOT_JSON, NO_ACCOUNT}
    assert len({m["payload"]["offset"] for m in parked}) == 2, "each record is parked on its own"
    assert all(m["payload"]["error"] and m["payload"]["consumer"] == "blocking" for m in parked)


async def test_the_view_is_rebuilt_from_the_store_after_a_restart(settings, database):
    clock = Clock()
    await ensure_operator_topics(settings, *OPERATORS)
    async with (
        create_app(settings, database=database, clock=clock),
        Publisher(settings) as publish,
        TopicReader(settings, of(topics.DECISIONS)) as decisions,
        TopicReader(settings, of(topics.ENFORCEMENT)) as enforcement,
        TopicReader(settings, topics.DEAD_LETTER) as dead,
    ):
        first = Blocking(settings, database, clock, Hasher.from_settings(settings), publish, decisions, enforcement, dead)
        ended = first.snapshot(person(2), ends_at=T0 - timedelta(minutes=1))
        await first.lifecycle(ExclusionActivated, first.snapshot(person(1), scope=SLOTS))
        await first.lifecycle(ExclusionActivated, ended, subject="person-2")

    async with (
        create_app(settings, database=database, clock=clock),
        Publisher(settings) as publish,
        TopicReader(settings, of(topics.DECISIONS)) as decisions,
    ):
        again = Blocking(settings, database, clock, first.hasher, publish, decisions, enforcement, dead, accounts=100)
        decided = await again.decide(
            slots := again.account_event(K.BET, person(1), game=Game.SLOTS),
            poker := again.account_event(K.BET, person(1), game=Game.POKER),
            other := again.account_event(K.BET, person(2), game=Game.SLOTS),
        )
    assert decided[str(slots.id)]["outcome"] == "BLOCK"
    assert decided[str(poker.id)]["outcome"] == "ALLOW"
    assert decided[str(other.id)]["outcome"] == "ALLOW", "an exclusion that ended is not loaded"


def assigned(app) -> bool:
    return all(s.consumer is not None and s.consumer.assignment() for s in app.broker.subscribers)


async def test_two_instances_each_decide_with_every_exclusion_whichever_partitions_they_own(settings, database):
    """The instances share the groups, so each handles some partitions, but each view holds every exclusion."""
    clock, partitions = Clock(), list(range(settings.topic_partitions))
    await ensure_operator_topics(settings, *OPERATORS)
    first, second = create_app(settings, database=database, clock=clock), create_app(settings, database=database, clock=clock)
    async with first, second, Publisher(settings) as publish, TopicReader(settings, of(topics.DECISIONS)) as decisions:
        await eventually(lambda: _true(assigned(first) and assigned(second)), what="both instances to own partitions")
        blocking = Blocking(settings, database, clock, Hasher.from_settings(settings), publish, decisions, None, None)
        people, subjects = [person(n) for n in range(1, 7)], {}
        for n in range(200):  # subjects on every lifecycle partition
            subjects.setdefault(DefaultPartitioner()(f"person-{n}".encode(), partitions, partitions), []).append(f"person-{n}")
        for n, who in enumerate(people):
            subject = subjects[n % len(partitions)][n]
            await blocking.lifecycle(ExclusionActivated, blocking.snapshot(who), subject=subject)
        in_view = [app.context.get(VIEW) for app in (first, second)]
        await eventually(lambda: _true(all(len(view) == len(people) for view in in_view)), what="both views to hold all")
        events = []
        for who in people:
            for account in _accounts_on_every_partition(partitions):
                events.append(blocking.account_event(K.LOGIN, who, account=account))
        decided = await blocking.decide(*events)

    assert len(decided) == len(people) * len(partitions)
    assert {d["outcome"] for d in decided.values()} == {"BLOCK"}


def _accounts_on_every_partition(partitions: list[int]) -> list[str]:
    found: dict[int, str] = {}
    for n in range(1000):
        account = f"acc-spread-{n}"
        found.setdefault(DefaultPartitioner()(f"op-1:{account}".encode(), partitions, partitions), account)
    return [found[p] for p in partitions]


async def _true(value):
    return value
