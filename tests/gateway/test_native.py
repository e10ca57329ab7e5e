"""The native /v1 API over HTTP: exclusions and their lifecycle, people, checks, decisions, reviews."""

import hashlib
import uuid

import pytest

from shared import topics
from shared.broker import ensure_operator_topics
from shared.events import AccountEventKind, DecisionMade, DecisionPayload, Outcome
from tests.gateway.conftest import new_uid
from tests.support import Publisher, TopicReader, committed_offset, eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


def someone(**fields) -> dict:
    tag = uuid.uuid4().hex[:8]
    identity = {
        "first_name": "Astrid",
        "last_name": f"Berg{tag}",
        "date_of_birth": "1979-11-02",
        "postcode": "111 22",
        "email": f"astrid.{tag}@example.se",
    }
    identity.update(fields)
    return identity


def headers(gw, name: str) -> dict:
    return {"X-API-Key": gw.keys[name]}


async def create(gw, identity: dict, **fields) -> dict:
    body = {"identity": identity, "duration": "+6m", "jurisdiction": "UK", **fields}
    answer = await gw.client.post("/v1/exclusions", json=body, headers=headers(gw, "excluder"))
    assert answer.status_code == 201, answer.text
    return answer.json()


async def test_an_exclusion_is_created_in_force_and_readable(gw):
    identity = someone()

    created = await gw.client.post(
        "/v1/exclusions",
        json={
            "identity": identity,
            "duration": "+6m",
            "jurisdiction": "UK",
            "scope": {"types": ["GAMES", "ADS"]},
            "year_of_birth": 1979,
            "gender": "F",
        },
        headers={"Authorization": f"Bearer {gw.keys['excluder']}"},
    )
    view = created.json()
    shown = await gw.client.get(created.headers["Location"], headers=headers(gw, "compliance"))  # the operator's compliance key

    assert created.status_code == 201
    assert view["state"] == "active" and view["in_force"] is True
    assert view["jurisdiction"] == "UK" and view["channel"] == "operator"
    assert sorted(view["scope"]["types"]) == ["ADS", "GAMES"]
    assert shown.status_code == 200 and shown.json()["exclusion_id"] == view["exclusion_id"]
    assert "identifiers" not in view and "person_id" not in view


async def test_status_and_history_name_the_persons_exclusions(gw):
    identity = someone()
    view = await create(gw, identity)

    status = await gw.client.post("/v1/persons/status", json={"identity": {"email": identity["email"]}}, headers=headers(gw, "checker"))
    history = await gw.client.post("/v1/persons/history", json={"identity": identity}, headers=headers(gw, "checker"))
    nobody = await gw.client.post("/v1/persons/status", json={"identity": {"uid": new_uid()}}, headers=headers(gw, "checker"))

    assert status.json()["exclusion"] == "Y" and status.json()["excluded"] is True
    assert [e["exclusion_id"] for e in status.json()["in_force"]] == [view["exclusion_id"]]
    assert [e["exclusion_id"] for e in history.json()["exclusions"]] == [view["exclusion_id"]]
    assert nobody.json() == {"exclusion": "N", "excluded": False, "in_force": []}


async def test_an_extension_lengthens_the_running_exclusion(gw):
    identity = someone()
    view = await create(gw, identity)

    extended = await gw.client.post(
        f"/v1/exclusions/{view['exclusion_id']}/extend",
        json={"identity": {"email": identity["email"]}, "duration": "+12m"},
        headers=headers(gw, "excluder"),
    )

    assert extended.status_code == 200, extended.text
    assert extended.json()["exclusion_id"] == view["exclusion_id"]
    assert extended.json()["version"] > view["version"]
    assert extended.json()["duration"] == "+12m"
    assert (extended.json()["minimum_until"] or extended.json()["ends_at"]) > (view["minimum_until"] or view["ends_at"])


async def test_extend_and_lift_need_the_persons_identity(gw):
    view = await create(gw, someone())

    lift = await gw.client.post(
        f"/v1/exclusions/{view['exclusion_id']}/lift", json={"identity": someone()}, headers=headers(gw, "excluder")
    )
    extend = await gw.client.post(
        f"/v1/exclusions/{view['exclusion_id']}/extend",
        json={"identity": {"uid": new_uid()}, "duration": "+12m"},
        headers=headers(gw, "excluder"),
    )

    assert lift.status_code == extend.status_code == 404


async def test_a_check_says_from_what_and_until_when(gw):
    identity = someone()
    await create(gw, identity, duration="+12m", scope={"types": ["GAMES"], "games": ["SLOTS"]})

    found = await gw.client.post("/v1/checks", json={"identity": {"email": identity["email"]}}, headers=headers(gw, "checker"))
    nobody = await gw.client.post("/v1/checks", json={"identity": {"email": "nobody@example.com"}}, headers=headers(gw, "checker"))

    assert found.json() == {
        "exclusion": "Y",
        "excluded": True,
        "scope": {"types": ["GAMES"], "games": ["SLOTS"]},
        "until": None,
        "until_further_notice": True,
    }
    assert nobody.json()["exclusion"] == "N" and nobody.json()["scope"] is None


async def test_a_batch_check_of_10000_answers_in_order_and_10001_is_refused(gw):
    excluded = someone()
    await create(gw, excluded)
    persons = [{"ref": f"crm-{i}", "identity": {"email": f"list-{i}-{uuid.uuid4().hex[:6]}@example.com"}} for i in range(10_000)]
    persons[4321] = {"ref": "crm-4321", "identity": {"email": excluded["email"]}}

    answer = await gw.client.post("/v1/checks/batch", json={"persons": persons}, headers=headers(gw, "checker"))
    over = await gw.client.post("/v1/checks/batch", json={"persons": persons + persons[:1]}, headers=headers(gw, "checker"))

    assert answer.status_code == 200, answer.text[:500]
    results = answer.json()["results"]
    assert [r["ref"] for r in results] == [p["ref"] for p in persons]
    assert [i for i, r in enumerate(results) if r["excluded"]] == [4321]
    assert over.status_code == 400 and over.json()["field"] == "persons"


async def test_an_operator_compliance_key_cannot_create_extend_or_lift(gw):
    identity = someone()
    view = await create(gw, identity)
    checker = headers(gw, "compliance")  # the same operator's, but for its compliance team

    create_answer = await gw.client.post(
        "/v1/exclusions", json={"identity": someone(), "duration": "+6m", "jurisdiction": "UK"}, headers=checker
    )
    extend_answer = await gw.client.post(
        f"/v1/exclusions/{view['exclusion_id']}/extend", json={"identity": identity, "duration": "+12m"}, headers=checker
    )
    lift_answer = await gw.client.post(f"/v1/exclusions/{view['exclusion_id']}/lift", json={"identity": identity}, headers=checker)

    assert create_answer.status_code == extend_answer.status_code == lift_answer.status_code == 403
    assert create_answer.json()["field"] == "role"


async def test_an_operator_reads_only_its_own_decisions(gw):
    mine, theirs = gw.operator_ids["checker"], gw.operator_ids["excluder"]
    await ensure_operator_topics(gw.settings, mine, theirs)  # as `selfex operator add` does
    decisions = [decision(mine, "acc-1"), decision(theirs, "acc-2"), decision(mine, "acc-3")]
    forged = decision(theirs, "acc-forged")  # on my decisions topic, naming them: shown to nobody
    async with Publisher(gw.settings) as publish:
        # On acc-3's key: its partition, so it is handled before acc-3's decision is seen.
        await publish.raw(topics.of_operator(mine, topics.DECISIONS), forged.model_dump_json().encode(), key=decisions[2].key())
        for made in decisions:  # each on its operator's own decisions topic
            await publish.event(made)

    async def both_of_mine():
        answer = await gw.client.get("/v1/decisions", headers=headers(gw, "checker"))
        return answer.json()["decisions"] if len(answer.json()["decisions"]) == 2 else None

    seen = await eventually(both_of_mine, what="the operator's two decisions")
    others = (await gw.client.get("/v1/decisions", headers=headers(gw, "excluder"))).json()["decisions"]

    assert {d["account_id"] for d in seen} == {"acc-1", "acc-3"}
    assert [d["account_id"] for d in others] == ["acc-2"], "not the decision forged on another operator's topic"
    assert (await gw.client.get("/v1/decisions", params={"limit": 1}, headers=headers(gw, "checker"))).json()["next_before"]


async def test_decisions_stored_in_batches_keep_one_of_each_and_park_only_the_bad_record(gw):
    mine = gw.operator_ids["checker"]
    await ensure_operator_topics(gw.settings, mine)
    made = [decision(mine, f"batch-{n}") for n in range(50)]
    topic = topics.of_operator(mine, topics.DECISIONS)
    bad = b"not a decision"
    async with Publisher(gw.settings) as publish, TopicReader(gw.settings, topics.DEAD_LETTER) as dead_letters:
        # One key: one partition, so the records arrive together and in this order.
        sent = []
        for record in [*made[:25], made[3], bad, *made[25:], made[0]]:
            value = record if isinstance(record, bytes) else record.model_dump_json().encode()
            sent.append((value, await publish.raw(topic, value, key=b"one-partition")))

        async def all_of_them():
            answer = await gw.client.get("/v1/decisions", params={"limit": 1000}, headers=headers(gw, "checker"))
            found = [d for d in answer.json()["decisions"] if d["account_id"].startswith("batch-")]
            return found if len(found) >= len(made) else None

        stored = await eventually(all_of_them, what="the batch's decisions")
        # Every record of this batch handled (its bad ones parked first): the group committed past the last one.
        partition, last = sent[-1][1].partition, sent[-1][1].offset
        group = f"{gw.settings.topic_prefix}gateway.operator.{topics.DECISIONS}"

        async def all_handled():
            committed = await committed_offset(gw.settings, group, topic, partition)
            return committed if committed is not None and committed > last else None

        await eventually(all_handled, what="the gateway's commit past the batch")
        ours = {(partition, meta.offset) for _, meta in sent}  # the module's other tests park records of this topic too
        parked = [
            m
            for m in await dead_letters.read_to_end()  # parked before the commit: all of them are there
            if m["payload"]["consumer"] == "gateway"
            and m["payload"]["topic"].endswith(topic)
            and (m["payload"]["partition"], m["payload"]["offset"]) in ours
        ]

    assert sorted(d["account_id"] for d in stored) == sorted(f"batch-{n}" for n in range(50)), "each once, duplicates not again"
    assert [(m["payload"]["offset"], m["payload"]["original_sha256"]) for m in parked] == [
        (next(meta.offset for value, meta in sent if value == bad), hashlib.sha256(bad).hexdigest())
    ], "the bad record alone, once"


def decision(operator_id: str, account: str) -> DecisionMade:
    return DecisionMade(
        source="blocking",
        operator_id=operator_id,
        payload=DecisionPayload(
            account_event_id=uuid.uuid4(),
            operator_event_id=f"evt-{account}",
            account_id=account,
            kind=AccountEventKind.LOGIN,
            outcome=Outcome.ALLOW,
        ),
    )


async def test_register_staff_review_a_document(gw):
    view = await create(gw, someone())
    path = f"/v1/verifications/{view['exclusion_id']}/documents/doc-123/review"

    async with TopicReader(gw.settings, topics.VERIFICATION_INPUTS) as inputs:
        refused = await gw.client.post(path, json={"approved": True}, headers=headers(gw, "excluder"))
        accepted = await gw.client.post(path, json={"approved": True, "note": "passport matches"}, headers=headers(gw, "staff"))
        [review] = await inputs.wait_for(lambda m: m["type"] == "verification.document_reviewed")

    assert refused.status_code == 403
    assert accepted.status_code == 202
    assert review["id"] == accepted.json()["review_id"]
    assert review["payload"] == {
        "exclusion_id": view["exclusion_id"],
        "document_id": "doc-123",
        "approved": True,
        "reviewer": f"staff-{gw.settings.mongo_db}",
        "note": "passport matches",
    }
    assert review["operator_id"] == gw.operator_ids["staff"]


async def test_the_openapi_schema_and_docs_are_served(gw):
    schema = (await gw.client.get("/openapi.json")).json()
    docs = await gw.client.get("/docs")

    assert {"/v1/exclusions", "/v1/checks/batch", "/api/v1.3/exclude-customers", "/"} <= set(schema["paths"])
    assert schema["components"]["schemas"]["ExclusionCreate"]["examples"]
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
