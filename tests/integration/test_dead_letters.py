"""Bad input on the real broker: parked on the dead-letter topic with the reason and the bytes."""

import base64
import json

import pytest

from services.blocking.app import create_app as create_blocking
from services.registration.app import create_app as create_registration
from shared import topics
from shared.events import ExclusionRequestedPayload, RequestExclusion
from shared.identity import Identity, uid_from_personnummer
from tests.support import Publisher, TopicReader

pytestmark = pytest.mark.integration

NOT_JSON = b"\xff\xfe this is not JSON {"
BREAKS_CONTRACT = json.dumps({"type": "exclusion.request", "payload": {"duration": 30}}).encode()


@pytest.mark.parametrize(
    ("create_app", "topic"),
    [(create_registration, topics.EXCLUSION_COMMANDS), (create_blocking, topics.ACCOUNT_EVENTS), (create_blocking, topics.EXCLUSION_LIFECYCLE)],
    ids=["registration-commands", "blocking-account-events", "blocking-lifecycle"],
)
async def test_bad_messages_are_dead_lettered_and_the_consumer_goes_on(settings, database, create_app, topic):
    app = create_app(settings, database=database)
    async with app, Publisher(settings) as publish, TopicReader(settings, topics.DEAD_LETTER) as dead_letters:
        await publish.raw(topic, NOT_JSON, key=b"k")
        await publish.raw(topic, BREAKS_CONTRACT, key=b"k")
        parked = await dead_letters.wait_for(lambda m: m["payload"]["topic"] == settings.topic(topic), count=2)

        originals = {base64.b64decode(m["payload"]["original"]) for m in parked}
        assert originals == {NOT_JSON, BREAKS_CONTRACT}
        for message in parked:
            assert message["type"] == "message.dead_lettered"
            assert message["payload"]["error"], "the reason is recorded"
            assert message["payload"]["offset"] is not None
        if topic == topics.EXCLUSION_COMMANDS:
            # The consumer goes on: a good command after the bad ones is handled.
            good = RequestExclusion(
                source="test",
                payload=ExclusionRequestedPayload(identity=Identity(uid=uid_from_personnummer("199001011234")), duration="+30d", attested=True),
            )
            await publish.event(good)
            async with TopicReader(settings, topics.EXCLUSION_LIFECYCLE) as lifecycle:
                [activated] = await lifecycle.wait_for(lambda m: m["causation_id"] == str(good.id))
            assert activated["type"] == "exclusion.activated"
