"""Two Selfex deployments, each the other's register, and a third platform syncing from one of them.

An exclusion made at operator platform A is forwarded to register B; operator C, checking B, gets
``Y`` (GAMSTOP) and ``200`` (ChipOut status); D syncs B's change feed and blocks the person's login;
nothing loops back: B never forwards what came from A, A never imports its own exclusion back, D
never forwards what it imported.
"""

import pytest

from services.blocking.app import create_app as blocking_app
from shared import topics
from shared.broker import ensure_operator_topics
from shared.events import AccountEventKind, AccountEventOccurred, AccountEventPayload
from shared.identity import Identity
from tests.forwarder.conftest import delivered, deployments, person, together
from tests.support import Publisher, TopicReader, eventually

pytestmark = pytest.mark.e2e


async def test_an_exclusion_made_at_a_reaches_register_b_and_platform_d_and_nothing_loops(servers):
    async with deployments(servers, "B", "A", "D", A={"forwarder_sync_seconds": 0.5}) as (b, a, d):
        # A and B are each other's register (native API, each with a key of the other); D syncs from B.
        # The three forwarders and D's blocking start at the same time.
        async def blocking_at_d() -> None:
            await ensure_operator_topics(d.world.settings, "op-d")
            await d.stack.enter_async_context(blocking_app(d.world.settings, database=d.world.database))

        async def registered_at_b(platform: str) -> dict:
            """A platform's forwarder settings for register B: deliveries to it, and its change feed."""
            return {
                "forwarder_register": "B",
                "forwarder_register_url": b.url,
                "forwarder_register_key": await b.key_for(platform),
                "forwarder_sync_url": b.url,
                "forwarder_sync_key": await b.key_for(f"{platform}-sync"),
                "forwarder_sync_seconds": 0.5,
            }

        await together(
            a.start_forwarder(**await registered_at_b("platform-a")),
            b.start_forwarder(forwarder_register="A", forwarder_register_url=a.url, forwarder_register_key=await a.key_for("register-b")),
            d.start_forwarder(**await registered_at_b("platform-d")),
            blocking_at_d(),
        )

        harriet = person()
        made = await a.exclude(a.world.keys["excluder"], harriet)
        assert made["state"] == "active"

        # Register B has it: operator C's GAMSTOP check says Y, its ChipOut status 200.
        checker_at_b = b.world.keys["checker"]

        async def excluded_at_b():
            return await b.gamstop(checker_at_b, harriet) == "Y"

        await eventually(excluded_at_b, what="register B to answer Y for the person excluded at A")
        status = await b.http.get("/v1.3/customer-status", params={"key": checker_at_b, "uid": harriet["uid"]})
        assert status.status_code == 200 and status.json()["Excluded"], status.text
        [sent] = await delivered(a, 1)
        assert sent["exclusion_id"] == made["exclusion_id"]  # once, or again after a slow answer: the same Idempotency-Key
        assert "sealed_identity" in sent and harriet["email"] not in str(sent)  # kept sealed, never in clear

        # D imports B's exclusion from the change feed (on its schedule) and blocks a login.
        async def excluded_at_d():
            return await d.gamstop(d.world.keys["checker"], harriet) == "Y"

        await eventually(excluded_at_d, what="platform D to import register B's exclusion")
        [imported] = await d.exclusions_of(harriet["email"])
        assert imported["channel"] == "register" and imported["origin"] == "A"
        login = AccountEventOccurred(
            source="operator-d",
            operator_id="op-d",
            payload=AccountEventPayload(
                operator_event_id="login-1", account_id="acct-1", kind=AccountEventKind.LOGIN, identity=Identity(email=harriet["email"])
            ),
        )
        async with (
            Publisher(d.world.settings) as publish,
            TopicReader(d.world.settings, topics.of_operator("op-d", topics.DECISIONS)) as decisions,
        ):
            await publish.event(login)
            [decision] = await decisions.wait_for(lambda m: m["payload"]["operator_event_id"] == "login-1", timeout=60)
        assert decision["payload"]["outcome"] == "BLOCK", decision

        # Nothing loops back: B forwarded nothing to A, A imported nothing of its own, D forwarded nothing.
        async def a_synced():
            return (await a.forwarder_db["forwarder_state"].find_one({"_id": "sync"}) or {}).get("last_sync_at")

        await eventually(a_synced, what="A to sync B's change feed")
        assert await b.deliveries() == []
        assert await d.deliveries() == []
        [only] = await a.exclusions_of(harriet["email"])
        assert only["origin"] is None and len(only["request_ids"]) == 1
        [at_b] = await b.exclusions_of(harriet["email"])
        assert at_b["origin"] == "A" and len(at_b["request_ids"]) == 1
