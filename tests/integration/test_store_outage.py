"""The store away mid-stream: commands wait (offset held, consumer not ready), none is dead-lettered,
and every one becomes an exclusion once the store is back."""

import uuid

import httpx
import pytest
from pymongo import AsyncMongoClient

from services.registration.app import create_app as create_registration
from shared import topics
from shared.events import ExclusionRequestedPayload, RequestExclusion
from shared.identity import Identity, uid_from_personnummer
from shared.infra import free_port
from tests.support import Publisher, TcpProxy, TopicReader, eventually

pytestmark = pytest.mark.integration

COMMANDS = 5


def request_exclusion() -> RequestExclusion:
    uid = uid_from_personnummer(f"19{uuid.uuid4().int % 10**10:010d}")
    return RequestExclusion(source="test", payload=ExclusionRequestedPayload(identity=Identity(uid=uid), duration="+30d", attested=True))


async def test_commands_consumed_while_the_store_is_away_all_take_effect_and_none_is_dead_lettered(servers, settings):
    settings = settings.model_copy(
        update={
            "consumer_retry_first_seconds": 0.05,
            "consumer_retry_longest_seconds": 0.5,
            "registration_timer_seconds": 0.0,
            "health_port": free_port(),
        }
    )
    part = f"consumer:{settings.topic(topics.EXCLUSION_COMMANDS)}"
    first, during = request_exclusion(), [request_exclusion() for _ in range(COMMANDS)]
    async with TcpProxy(servers.mongo_uri) as proxy:
        # The service reaches the store only through the proxy, and gives up on a server quickly.
        client = AsyncMongoClient(f"mongodb://127.0.0.1:{proxy.port}", tz_aware=True, serverSelectionTimeoutMS=500, connectTimeoutMS=500)
        try:
            app = create_registration(settings, database=client[settings.mongo_db])
            async with (
                app,
                Publisher(settings) as publish,
                TopicReader(settings, topics.EXCLUSION_LIFECYCLE) as lifecycle,
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.health_port}") as health,
            ):

                async def readiness() -> dict:
                    return (await health.get("/readyz")).json()

                await publish.event(first)
                await lifecycle.wait_for(lambda m: m["causation_id"] == str(first.id))

                await proxy.cut()
                for command in during:
                    await publish.raw(topics.EXCLUSION_COMMANDS, command.model_dump_json().encode(), key=b"one-partition")
                # Away for longer than a server selection: the consumer has retried, and says why it waits.
                stalled = await eventually(
                    lambda: _when(readiness(), lambda r: r.get("reasons", {}).get(part) == "retrying_after_ServerSelectionTimeoutError"),
                    what="the consumer to say it is not ready",
                )
                assert stalled["status"] == "unavailable"
                await proxy.resume()

                activated = await lifecycle.wait_for(
                    lambda m: m["type"] == "exclusion.activated" and m["causation_id"] in {str(c.id) for c in during}, count=COMMANDS
                )
                assert len({m["causation_id"] for m in activated}) == COMMANDS
                await eventually(lambda: _when(readiness(), lambda r: r["status"] == "ready"), what="the consumer to be ready again")

            async with TopicReader(settings, topics.DEAD_LETTER) as dead_letters:
                assert await dead_letters.read_to_end() == [], "nothing was parked as poison"
        finally:
            await client.close()


async def _when(answer, condition):
    value = await answer
    return value if condition(value) else None
