"""An exclusion made at A and forwarded to register B (native API) ends at B when it ends at A: the
lift (or cancellation) goes as ``POST /v1/register/ended`` with the delivery's Idempotency-Key, and B
ends its copy only if A's operator alone made it there. Two deployments for the module on the real
broker and store, A's forwarder reaching B through a fault-injecting proxy; A's clock moves (a lift
takes effect only once the policy's minimum has passed), B's is the real one.
"""

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from shared.events import LiftVerified, VerificationOutcomePayload
from tests.forwarder.conftest import Deployment, FaultProxy, deployments, person
from tests.gateway.conftest import Clock
from tests.support import Publisher, eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


@dataclass
class Pair:
    a: Deployment
    b: Deployment
    clock: Clock  # A's
    proxy: FaultProxy  # in front of B
    key: str  # the key B issued to A (A's forwarder uses it)

    async def answer_at_b(self, identity: dict[str, Any]) -> str:
        return await self.b.gamstop(self.b.world.keys["checker"], identity)

    async def until_b_answers(self, identity: dict[str, Any], answer: str) -> None:
        async def answered():
            return await self.answer_at_b(identity) == answer

        await eventually(answered, timeout=60, what=f"register B to answer {answer}")

    async def delivered(self, exclusion_id: str, change: str) -> dict[str, Any]:
        async def probe():
            found = await self.a.deliveries(exclusion_id=exclusion_id, change=change, status="delivered")
            return found[0] if found else None

        return await eventually(probe, timeout=60, what=f"A to deliver {change} to B")

    def end(self, identity: dict[str, Any], *, key: str | None = None, origin: str | None = "A", **body: Any):
        headers = {"X-API-Key": key or self.key}
        if origin is not None:
            headers["X-Selfex-Origin"] = origin
        sent = {"identity": identity, "ended_as": "lifted", "ended_at": "2030-01-01T00:00:00+00:00", **body}
        return self.b.http.post("/v1/register/ended", headers=headers, json=sent)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pair(servers) -> AsyncIterator[Pair]:
    clock = Clock()
    async with deployments(servers, "B", "A", A={"clock": clock}) as (b, a), FaultProxy(b.url).running() as proxy:
        key = await b.key_for("platform-a")
        await a.start_forwarder(
            forwarder_register="B", forwarder_register_url=proxy.url, forwarder_register_key=key, forwarder_timeout_seconds=3.0
        )
        yield Pair(a, b, clock, proxy, key)


async def test_a_lift_at_a_ends_bs_copy_once_even_when_the_first_answer_is_lost(pair):
    a, b = pair.a, pair.b
    harriet = person()
    made = await a.exclude(a.world.keys["excluder"], harriet, duration="+12m")  # until further notice: 12 months at least
    await pair.until_b_answers(harriet, "Y")
    await pair.delivered(made["exclusion_id"], "exclusion.activated")  # A has B's answer too

    # The person lifts it at A once the minimum has passed (verification's verdict on their code);
    # B stores the end, and its answer is lost on the way back: A tries again with the same key.
    pair.proxy.lose_after_store.add(harriet["email"])
    pair.clock.advance(days=400)
    [at_a] = await a.exclusions_of(harriet["email"])
    lift_id = uuid.uuid4()
    verified = LiftVerified(
        id=LiftVerified.id_for(lift_id),
        source="verification",
        subject=at_a["person_id"],
        payload=VerificationOutcomePayload(exclusion_id=uuid.UUID(made["exclusion_id"]), method="code", lift_id=lift_id),
    )
    async with Publisher(a.world.settings) as publish:
        await publish.event(verified)

    await pair.until_b_answers(harriet, "P")  # previously excluded
    end = await pair.delivered(made["exclusion_id"], "exclusion.lifted")
    ends = [r for r in pair.proxy.posts_for(harriet["email"]) if r["path"] == "/v1/register/ended"]
    assert len(ends) >= 2 and ends[0].get("lost") and end["attempts"] >= 2, ends
    assert {r["idempotency_key"] for r in ends} == {end["_id"]}  # every attempt the same end
    assert ends[-1]["status"] == 200 and ends[0]["fields"] == [
        "ended_as",
        "ended_at",
        "identity",
        *sorted(f"identity.{k}" for k in harriet),
    ]
    assert harriet["email"] not in str(end) and harriet["last_name"] not in str(end)  # the delivery keeps the person sealed

    [at_b] = await b.exclusions_of(harriet["email"])
    assert (at_b["state"], at_b["origin"], at_b["reason"]) == ("lifted", "A", "lifted at A")
    assert len(at_b["request_ids"]) == 2  # the create and one end: the retry changed nothing

    # Delivered once more (a replay of the same end): the same answer, nothing changes.
    again = await pair.end(harriet, ended_at=end["snapshot"]["ended_at"])
    assert again.status_code == 200 and again.json()["status"] == "ended", again.text
    [still] = await b.exclusions_of(harriet["email"])
    assert still["version"] == at_b["version"] and await pair.answer_at_b(harriet) == "P"


async def test_a_cancellation_at_a_leaves_bs_copy_in_force_when_a_request_made_at_b_joined_it(pair):
    a, b = pair.a, pair.b
    someone = person()
    made = await a.exclude(a.world.keys["excluder"], someone)
    await pair.until_b_answers(someone, "Y")
    await b.exclude(b.world.keys["excluder"], someone, duration="+60d")  # B's own operator excludes them too: it joins

    cancelled = await a.http.post(
        f"/v1/exclusions/{made['exclusion_id']}/cancel", headers={"X-API-Key": a.world.keys["staff"]}, json={"reason": "wrong person"}
    )
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled", cancelled.text
    await pair.delivered(made["exclusion_id"], "exclusion.cancelled")  # B answered: kept

    async def refused():
        [at_b] = await b.exclusions_of(someone["email"])
        return at_b if at_b.get("refusal") else None

    at_b = await eventually(refused, what="B to record why it kept its copy")
    assert at_b["state"] == "active" and at_b["refusal"]["reason"].startswith("kept:")
    assert await pair.answer_at_b(someone) == "Y"


async def test_b_never_ends_one_made_at_b_or_from_another_origin_and_says_only_not_found(pair):
    b = pair.b
    made_at_b, from_c, nobody = person(), person(), person()
    await b.exclude(b.world.keys["excluder"], made_at_b)
    key_c = await b.key_for("platform-c")
    created = await b.http.post(
        "/v1/exclusions",
        headers={"X-API-Key": key_c, "X-Selfex-Origin": "C"},
        json={"identity": from_c, "duration": "+30d", "jurisdiction": "SE"},
    )
    assert created.status_code == 201, created.text

    answers = [
        await pair.end(made_at_b),  # A's key, origin A: made at B
        await pair.end(made_at_b, origin="B"),
        await pair.end(from_c),  # A's key, origin A: came from C
        await pair.end(from_c, origin="C"),  # A's key naming C: not A's operator's
        await pair.end(from_c, key=await b.key_for("platform-x")),  # another operator naming A
    ]
    never_excluded = await pair.end(nobody)
    assert [r.status_code for r in answers] == [404] * 5, [r.text for r in answers]
    assert never_excluded.status_code == 404
    named_a = [answers[0], answers[2], answers[4], never_excluded]  # what each says of someone never excluded: nothing more
    assert len({(r.text, r.json()["field"]) for r in named_a}) == 1, [r.text for r in named_a]
    assert await pair.answer_at_b(made_at_b) == "Y" and await pair.answer_at_b(from_c) == "Y"
    stored = [*await b.exclusions_of(made_at_b["email"]), *await b.exclusions_of(from_c["email"])]
    assert [(e["state"], e.get("refusal"), len(e["request_ids"])) for e in stored] == [("active", None, 1)] * 2  # untouched


async def test_a_malformed_end_is_refused_naming_what_is_wrong(pair):
    someone = person()
    cases = {
        "X-Selfex-Origin": await pair.end(someone, origin=None),
        "X-Selfex-Origin ": await pair.end(someone, origin="not a name"),
        "ended_as": await pair.end(someone, ended_as="paused"),
        "ended_at": await pair.end(someone, ended_at="2030-01-01T00:00:00"),  # no UTC offset
        "ended_at ": await pair.end(someone, ended_at="yesterday"),
        "identity": await pair.end({}),
        "reason": await pair.end(someone, reason="extra"),
    }
    not_json = await pair.b.http.post(
        "/v1/register/ended", headers={"X-API-Key": pair.key, "X-Selfex-Origin": "A", "content-type": "application/json"}, content=b"{"
    )
    bad_key = await pair.b.http.post(
        "/v1/register/ended",
        headers={"X-API-Key": pair.key, "X-Selfex-Origin": "A", "Idempotency-Key": "two words"},
        json={"identity": someone, "ended_as": "lifted", "ended_at": "2030-01-01T00:00:00+00:00"},
    )
    found = {name: (r.status_code, r.json().get("field")) for name, r in cases.items()}
    assert all(status == 400 and field and field.startswith(name.strip()) for name, (status, field) in found.items()), found
    assert (not_json.status_code, bad_key.status_code) == (400, 400) and bad_key.json()["field"] == "Idempotency-Key"
