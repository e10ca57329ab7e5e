"""Lifting is the person's act: an operator's key relays a lift request, the code goes to the person,
and only the person's code takes it to the policy. Staff cancel an exclusion made in error.

Gateway, registration and verification on the real broker and store, one world for the module with a
clock the tests move forward (each test makes its own person, so moving time disturbs no other test).
"""

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
import pytest_asyncio

from services.verification.app import create_app as verification_app
from services.verification.domain import sealed_context
from shared import topics
from shared.crypto import Sealer
from tests.gateway.conftest import Clock, World, world
from tests.gateway.test_native import headers, someone
from tests.support import TopicReader, eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


@dataclass
class Lifting:
    gw: World
    clock: Clock
    verification: object
    notices: TopicReader
    lifecycle: TopicReader

    @property
    def client(self):
        return self.gw.client

    async def excluded(self, identity: dict, duration: str = "+6m", jurisdiction: str = "UK") -> dict:
        body = {"identity": identity, "duration": duration, "jurisdiction": jurisdiction}
        answer = await self.client.post("/v1/exclusions", json=body, headers=headers(self.gw, "excluder"))
        assert answer.status_code == 201, answer.text
        return answer.json()

    async def relayed(self, exclusion_id: str, identity: dict) -> dict:
        """An operator relays the person's lift request."""
        answer = await self.client.post(
            f"/v1/exclusions/{exclusion_id}/lift", json={"identity": identity}, headers=headers(self.gw, "excluder")
        )
        assert answer.status_code == 202, answer.text
        return answer.json()

    async def code(self, lift_id: str, count: int = 1) -> str:
        """The latest code sent for the lift, opened as the notification service will open it."""
        notices = await self.notices.wait_for(
            lambda m: m["payload"]["template"] == "lift_code" and m["payload"]["params"].get("lift_id") == lift_id, count=count
        )
        sealer = Sealer.from_settings(self.gw.settings)
        return json.loads(sealer.open_text(notices[-1]["payload"]["sealed_params"], sealed_context(notices[-1]["id"])))["code"]

    async def shown(self, exclusion_id: str) -> dict:
        return (
            await self.client.get(f"/v1/exclusions/{exclusion_id}", headers=headers(self.gw, "compliance"))
        ).json()  # the maker's compliance key


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def lw(servers) -> AsyncIterator[Lifting]:
    clock = Clock()
    async with world(servers, clock=clock) as gw:
        settings = gw.settings.model_copy(update={"verification_timer_seconds": 0})
        async with (
            verification_app(settings, database=gw.database, clock=clock) as verification,
            TopicReader(settings, topics.NOTIFICATION_REQUESTS) as notices,
            TopicReader(settings, topics.EXCLUSION_LIFECYCLE) as lifecycle,
        ):
            yield Lifting(gw, clock, verification, notices, lifecycle)


def other_than(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


async def test_an_operators_lift_does_not_end_the_exclusion_it_sends_the_person_a_code(lw):
    identity = someone()
    view = await lw.excluded(identity)
    lw.clock.advance(days=200)  # past the minimum: only the missing code stands in the way

    answer = await lw.client.post(
        f"/v1/exclusions/{view['exclusion_id']}/lift", json={"identity": identity}, headers=headers(lw.gw, "excluder")
    )
    lift = answer.json()
    code = await lw.code(lift["lift_id"])
    [notice] = await lw.notices.wait_for(lambda m: m["payload"]["params"].get("lift_id") == lift["lift_id"])
    # The operator's key, without the code, cannot complete it: a guess is a wrong code, nothing more.
    guessed = await lw.client.post(f"/v1/lifts/{lift['lift_id']}/code", json={"code": other_than(code)}, headers=headers(lw.gw, "excluder"))
    no_code = await lw.client.post(f"/v1/lifts/{lift['lift_id']}/code", json={}, headers=headers(lw.gw, "excluder"))
    shown = await lw.shown(view["exclusion_id"])
    status = await lw.client.post("/v1/persons/status", json={"identity": identity}, headers=headers(lw.gw, "checker"))

    assert answer.status_code == 202, answer.text
    assert lift["status"] == "code_sent" and lift["exclusion_id"] == view["exclusion_id"]
    assert code not in answer.text, "the code goes to the person, never back to the operator"
    assert notice["subject"] != lw.gw.operator_ids["excluder"] and notice["payload"]["recipient"] == "person"
    assert guessed.status_code == 400 and guessed.json()["status"] == "wrong_code"
    assert no_code.status_code == 400
    assert (shown["state"], shown["version"], shown["lift_effective_at"]) == ("active", view["version"], None)
    assert status.json()["exclusion"] == "Y"
    await lw.lifecycle._drain()
    assert [m["type"] for m in lw.lifecycle.messages() if m["payload"]["exclusion_id"] == view["exclusion_id"]] == ["exclusion.activated"]


async def test_the_persons_code_takes_the_lift_to_the_policy_which_refuses_it_before_the_minimum(lw):
    identity = someone()
    view = await lw.excluded(identity)  # UK +6m: no lift before six months
    lift = await lw.relayed(view["exclusion_id"], identity)

    answer = await lw.client.post(f"/v1/lifts/{lift['lift_id']}/code", json={"code": await lw.code(lift["lift_id"])})
    shown = await lw.shown(view["exclusion_id"])

    assert answer.status_code == 409, answer.text
    assert answer.json()["status"] == "refused" and "minimum" in answer.json()["reason"]
    assert answer.json()["exclusion"]["state"] == "active"
    assert shown["state"] == "active" and shown["last_lift_refusal"]["reason"] == answer.json()["reason"]


async def test_the_persons_code_after_the_minimum_requests_the_lift_effective_after_the_return_cooling_off(lw):
    identity = someone()
    view = await lw.excluded(identity)
    lw.clock.advance(days=200)
    started = await lw.client.post(f"/v1/portal/exclusions/{view['exclusion_id']}/lift", json={"email": identity["email"]})
    lift_id = started.json()["lift_id"]

    wrong = await lw.client.post(f"/v1/portal/lifts/{lift_id}/code", json={"code": other_than(await lw.code(lift_id))})
    after_wrong = await lw.shown(view["exclusion_id"])
    right = await lw.client.post(f"/v1/portal/lifts/{lift_id}/code", json={"code": await lw.code(lift_id)})
    status = await lw.client.post("/v1/persons/status", json={"identity": identity}, headers=headers(lw.gw, "checker"))

    assert started.status_code == 202 and started.json()["status"] == "code_sent", started.text
    assert wrong.status_code == 400 and wrong.json()["attempts_left"] == 4
    assert after_wrong["state"] == "active" and after_wrong["version"] == view["version"], "a wrong code lifts nothing"
    assert right.status_code == 200, right.text
    assert right.json()["exclusion"]["state"] == "lift_requested"
    assert right.json()["exclusion"]["lift_effective_at"] == (lw.clock.now + timedelta(hours=24)).isoformat()
    assert status.json()["exclusion"] == "Y", "in force until the lift takes effect"


async def test_a_lift_code_expires_and_codes_are_limited_like_an_exclusion_requests(lw):
    identity = someone()
    view = await lw.excluded(identity)
    lw.clock.advance(days=200)
    lift = await lw.relayed(view["exclusion_id"], identity)
    lift_id = lift["lift_id"]
    resends = [(await lw.client.post(f"/v1/portal/lifts/{lift_id}/code/resend")) for _ in range(4)]
    code = await lw.code(lift_id, count=4)

    lw.clock.advance(minutes=16)
    assert await lw.verification.timers.tick(lw.clock()) >= 1
    late = await lw.client.post(f"/v1/lifts/{lift_id}/code", json={"code": code})
    standing = await eventually(
        lambda: _when(lw.client.get(f"/v1/portal/lifts/{lift_id}"), lambda body: body["state"] == "failed"), what="the lift to show failed"
    )

    assert [r.status_code for r in resends] == [202, 202, 202, 429]
    assert late.status_code == 410 and late.json()["status"] == "expired"
    assert standing["state"] == "failed"
    assert (await lw.shown(view["exclusion_id"]))["state"] == "active"


async def test_a_lift_request_for_someone_else_or_an_unknown_lift_is_refused(lw):
    identity = someone()
    view = await lw.excluded(identity)

    stranger = await lw.client.post(f"/v1/portal/exclusions/{view['exclusion_id']}/lift", json={"email": someone()["email"]})
    unknown = await lw.client.post(f"/v1/lifts/{uuid.uuid4()}/code", json={"code": "123456"})
    # An exclusion's id is not a lift's: its verification cannot be completed here.
    not_a_lift = await lw.client.post(f"/v1/lifts/{view['exclusion_id']}/code", json={"code": "123456"})

    assert stranger.status_code == 404
    assert unknown.status_code == 404 and not_a_lift.status_code == 404


async def test_register_staff_cancel_an_exclusion_made_in_error_with_the_reason(lw):
    identity = someone()
    view = await lw.excluded(identity)
    reason = f"registered for the wrong person (case {uuid.uuid4().hex[:6]})"

    by_operator = await lw.client.post(
        f"/v1/exclusions/{view['exclusion_id']}/cancel", json={"reason": reason}, headers=headers(lw.gw, "excluder")
    )
    no_reason = await lw.client.post(f"/v1/exclusions/{view['exclusion_id']}/cancel", json={}, headers=headers(lw.gw, "staff"))
    cancelled = await lw.client.post(
        f"/v1/exclusions/{view['exclusion_id']}/cancel", json={"reason": reason}, headers=headers(lw.gw, "staff")
    )
    again = await lw.client.post(f"/v1/exclusions/{view['exclusion_id']}/cancel", json={"reason": reason}, headers=headers(lw.gw, "staff"))
    [event] = await lw.lifecycle.wait_for(
        lambda m: m["payload"]["exclusion_id"] == view["exclusion_id"] and m["type"] == "exclusion.cancelled"
    )
    check = await lw.client.post("/v1/checks", json={"identity": identity}, headers=headers(lw.gw, "checker"))

    assert by_operator.status_code == 403 and no_reason.status_code == 400
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] == "cancelled" and cancelled.json()["in_force"] is False
    assert event["payload"]["reason"] == reason and event["operator_id"] == lw.gw.operator_ids["staff"]
    assert again.status_code == 409
    assert check.json()["excluded"] is False


async def _when(answer, holds):
    body = (await answer).json()
    return body if holds(body) else None
