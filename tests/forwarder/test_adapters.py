"""The ChipOut-compatible adapter (what it sends, and what it cannot) and the Kafka adapter, in one
chain on real gateways and a real broker: platform A forwards to register B over ChipOut; B publishes
its exclusions to its own topic; platform D imports them from there and honours them."""

import pytest

from shared.broker import ensure_topics
from tests.forwarder.conftest import FaultProxy, delivered, deployments, person, together
from tests.support import eventually

pytestmark = pytest.mark.integration


async def test_chipout_to_the_register_then_the_registers_topic_to_a_platform(servers):
    async with deployments(servers, "B", "A", "D") as (b, a, d):
        register_topic = b.world.settings.topic("register.exclusions")
        await ensure_topics(b.world.settings, ("register.exclusions",))
        async with FaultProxy(b.url).running() as seen:
            await together(
                a.start_forwarder(
                    forwarder_register="B",
                    forwarder_adapter="chipout",
                    forwarder_register_url=seen.url,
                    forwarder_register_key=await b.key_for("a"),
                ),
                b.start_forwarder(
                    forwarder_register="national",
                    forwarder_adapter="kafka",
                    forwarder_kafka_bootstrap=servers.kafka_bootstrap,
                    forwarder_kafka_topic=register_topic,
                ),
                d.start_forwarder(forwarder_sync_kafka_bootstrap=servers.kafka_bootstrap, forwarder_sync_kafka_topic=register_topic),
            )
            someone, nameless = person(), person()
            del nameless["uid"]
            await a.exclude(a.world.keys["excluder"], someone, duration="+4m")
            await a.exclude(a.world.keys["excluder"], nameless)
            await delivered(a, 1)

            async def refused():
                return await a.deliveries(status="failed")

            [failed] = await eventually(refused, what="the delivery without a uid to fail")
            assert "only by uid" in failed["last_error"] and failed["attempts"] == 1  # never retried: it cannot succeed
            [post] = [r for r in seen.seen if r["uid"] == someone["uid"]]
            assert post["path"] == "/api/v1.3/exclude-customers" and post["status"] == 201
            assert post["fields"] == ["duration", "games", "gender", "key", "type", "uid", "year"]  # no name, e-mail, address or birth date
            status = await b.http.get("/v1.3/customer-status", params={"key": b.world.keys["checker"], "uid": someone["uid"]})
            assert status.status_code == 200 and status.json()["Excluded"]

        # B's Kafka adapter published it to the register's topic; D imported it from there.
        async def excluded_at_d():
            answer = await d.http.get("/v1.3/customer-status", params={"key": d.world.keys["checker"], "uid": someone["uid"]})
            return answer.status_code == 200

        await eventually(excluded_at_d, timeout=60, what="platform D to import the exclusion from the register's topic")
        [imported] = await d.world.database["exclusions"].find({"channel": "register"}).to_list(None)
        assert imported["origin"] == "B" and imported["requested_by"] == f"register:{register_topic}"  # the topic names it
