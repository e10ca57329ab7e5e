"""The walking skeleton, end to end, with every service in its own process.

An exclusion command goes in; registration stores an active exclusion; a login for the excluded
person is blocked, a login for someone else is allowed; audit has every one of those events, and
none of them carries the personnummer.
"""

import hashlib
import json
from datetime import timedelta

import pytest

from shared import topics
from shared.broker import ensure_operator_topics
from shared.events import (
    AccountEventKind,
    AccountEventOccurred,
    AccountEventPayload,
    ExclusionRequestedPayload,
    RequestExclusion,
    Scope,
    utcnow,
)
from shared.identity import Identity
from tests.support import Publisher, TopicReader, eventually

pytestmark = pytest.mark.e2e

PERSONNUMMER = "198507091234"
OTHER_PERSONNUMMER = "199912310000"


def uid(personnummer: str) -> str:
    return hashlib.sha256(personnummer.encode()).hexdigest()


def login(person_uid: str, account: str) -> AccountEventOccurred:
    return AccountEventOccurred(
        source="operator-test",
        operator_id="op-1",
        payload=AccountEventPayload(
            operator_event_id=f"evt-{account}",
            account_id=account,
            kind=AccountEventKind.LOGIN,
            identity=Identity(uid=person_uid),
        ),
    )


async def test_an_excluded_person_is_blocked_and_everything_is_audited(stack, databases):
    settings = stack.settings
    request = RequestExclusion(
        source="operator-test",
        operator_id="op-1",
        payload=ExclusionRequestedPayload(
            identity=Identity(uid=uid(PERSONNUMMER)),
            duration="+30d",
            scope=Scope.model_validate({"types": ["GAMES"], "games": ["ALL"]}),
            jurisdiction="SE",
            attested=True,
            year_of_birth=1985,
            gender="F",
        ),
    )
    await ensure_operator_topics(settings, "op-1")  # as `selfex operator add` makes them
    async with Publisher(settings) as publish, TopicReader(settings, topics.of_operator("op-1", topics.DECISIONS)) as decisions:
        await publish.event(request)

        stored = await eventually(
            lambda: databases["registration"]["exclusions"].find_one({"request_id": str(request.id), "state": "active"}),
            what="registration to store an active exclusion",
        )
        assert stored["ends_at"].date() == (utcnow() + timedelta(days=30)).date()
        # Blocking learns of it from the lifecycle topic; wait until its view has it.
        await eventually(
            lambda: databases["blocking"]["blocking_exclusions"].find_one({"_id": stored["_id"]}),
            what="blocking to take the exclusion into its view",
        )

        excluded, other = login(uid(PERSONNUMMER), "acc-excluded"), login(uid(OTHER_PERSONNUMMER), "acc-other")
        await publish.event(excluded)
        await publish.event(other)
        found = await decisions.wait_for(lambda m: m["causation_id"] in {str(excluded.id), str(other.id)}, count=2, timeout=30)

    by_cause = {m["causation_id"]: m for m in found}
    blocked, allowed = by_cause[str(excluded.id)]["payload"], by_cause[str(other.id)]["payload"]
    assert blocked["outcome"] == "BLOCK"
    assert blocked["code"] == "Self-Excluded"
    assert blocked["ends_on"] == stored["ends_at"].date().isoformat()
    assert blocked["message"] == (
        "Your account is blocked as part of the responsible gambling programme until " + stored["ends_at"].date().isoformat()
    )
    assert blocked["matched"] == ["national_id"]
    assert blocked["operator_event_id"] == "evt-acc-excluded"
    assert allowed["outcome"] == "ALLOW"

    # Audit has stored every one of those events: command, activation, two logins, two decisions.
    expected = {str(request.id), str(excluded.id), str(other.id)} | {m["id"] for m in found}
    audited = await eventually(lambda: _audited(databases["audit"], expected), timeout=30, what="audit to store every event of the flow")
    types = sorted(entry["type"] for entry in audited)
    assert types.count("exclusion.activated") == 1
    assert types.count("account.event") == 2 and types.count("decision.made") == 2
    assert "exclusion.request" in types
    # Private by construction: no raw identifier reached the audit log.
    dumped = json.dumps(audited, default=str)
    assert uid(PERSONNUMMER) not in dumped and PERSONNUMMER not in dumped


async def _audited(database, expected_ids: set[str]):
    activated = await database["audit_log"].find_one({"type": "exclusion.activated"})
    entries = await database["audit_log"].find({"_id": {"$in": sorted(expected_ids)}}).to_list(None)
    if activated is None or len(entries) < len(expected_ids):
        return None
    return [*entries, activated]
