"""The ChipOut-compatible adapter (what it sends, and what it cannot), and the Kafka adapter with a
platform importing from the register's topic: real gateways, a real broker."""

import pytest

from shared.broker import ensure_topics
from tests.forwarder.conftest import FaultProxy, delivered, deployment, person
from tests.support import eventually

pytestmark = pytest.mark.integration


async def test_the_chipout_adapter_sends_the_uid_scope_duration_year_and_gender_and_nothing_personal_besides(servers):
    async with deployment(servers, "B") as b, deployment(servers, "A") as a:
        async with FaultProxy(b.url).running() as seen:
            await a.start_forwarder(
                forwarder_register="B",
                forwarder_adapter="chipout",
                forwarder_register_url=seen.url,
                forwarder_register_key=await b.key_for("a"),
            )
            someone, nameless = person(), person()
            del nameless["uid"]
            await a.exclude(a.world.keys["excluder"], someone, duration="+4m")
            await a.exclude(a.world.keys["excluder"], nameless)
            [sent] = await delivered(a, 1)

            async def both_done():
                return len(await a.deliveries(status="failed")) == 1 and sent

            await eventually(both_done, what="the delivery without a uid to fail")
            [refused] = await a.deliveries(status="failed")
            assert "only by uid" in refused["last_error"] and refused["attempts"] == 1  # never retried: it cannot succeed
            [post] = [r for r in seen.seen if r["uid"] == someone["uid"]]
            assert post["path"] == "/api/v1.3/exclude-customers" and post["status"] == 201
            assert post["fields"] == [
                "duration",
                "games",
                "gender",
                "key",
                "type",
                "uid",
                "year",
            ]  # no name, e-mail, address or date of birth
            status = await b.http.get("/v1.3/customer-status", params={"key": b.world.keys["checker"], "uid": someone["uid"]})
            assert status.status_code == 200 and status.json()["Excluded"]


async def test_the_kafka_adapter_publishes_to_the_registers_topic_and_a_platform_imports_from_it(servers):
    async with deployment(servers, "A") as a, deployment(servers, "D") as d:
        register_topic = "register.exclusions"
        await ensure_topics(a.world.settings, (register_topic,))
        topic = a.world.settings.topic(register_topic)
        await a.start_forwarder(
            forwarder_register="national",
            forwarder_adapter="kafka",
            forwarder_kafka_bootstrap=servers.kafka_bootstrap,
            forwarder_kafka_topic=topic,
        )
        await d.start_forwarder(forwarder_sync_kafka_bootstrap=servers.kafka_bootstrap, forwarder_sync_kafka_topic=topic)
        someone = person()
        await a.exclude(a.world.keys["excluder"], someone)
        await delivered(a, 1)

        async def excluded_at_d():
            return await d.gamstop(d.world.keys["checker"], someone) == "Y"

        await eventually(excluded_at_d, timeout=60, what="platform D to import the exclusion from the register's topic")
        [imported] = await d.exclusions_of(someone["email"])
        assert imported["channel"] == "register" and imported["origin"] == "A"
