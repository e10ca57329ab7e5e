"""What ``selfex bench http`` and ``selfex bench enforcement`` load is each service's own data, in its
own database, as that service would have written it: registration goes on to handle new requests for
the loaded people (matched by an identifier, never a second running exclusion), and the gateway
finds them in its lookup and views."""

import uuid
from datetime import UTC, datetime

import pytest

from bench.http import Stores, load, person
from services.gateway.repository import MongoLookup, MongoViews
from services.registration.repository import MongoExclusions
from shared.identity import Hasher, IdentifierKind, Identity
from shared.store import create_client
from tests.registration.harness import ManualClock, registration, request

pytestmark = pytest.mark.integration

LOADED = 40


def loaded_id(i: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench-exclusion-{i}"))


async def test_loaded_people_are_matched_and_never_given_a_second_running_exclusion(settings):
    hasher = Hasher.from_settings(settings)
    client = create_client(settings)
    stores = Stores.of(client, settings)
    try:
        await stores.indexed()
        await load(stores, hasher, 0, LOADED)
        assert stores.registration.name == settings.database_for("registration") != stores.gateway.name == settings.database_for("gateway")
        assert not set(await stores.gateway.list_collection_names()) & {"exclusions", "persons", "running_exclusions"}

        # The gateway: each loaded person under each of their identifiers, and the exclusion's view.
        national_id = hasher.hash(IdentifierKind.NATIONAL_ID, person(1).uid)
        [summary] = (await MongoLookup(stores.gateway).summaries_by_identifier([national_id]))[national_id]
        view = await MongoViews(stores.gateway).get(loaded_id(1))
        assert (summary.exclusion_id, summary.person_id, summary.state.value) == (loaded_id(1), "bench-person-1", "active")
        assert view is not None and view["state"] == "active" and national_id in view["identifiers"]

        # Registration: the running exclusions hold their identifiers' claims; the expired ones none.
        exclusions = MongoExclusions(stores.registration)
        assert national_id in await exclusions.running_claims(loaded_id(1))
        assert await exclusions.running_claims(loaded_id(20)) == []

        clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
        async with registration(settings, stores.registration, clock) as running:
            by_whole_identity = await running.handle(request(person(1), "+12m"))
            by_national_id_alone = await running.handle(request(Identity(uid=person(3).uid), "+12m"))
            after_an_expired_one = await running.handle(request(person(20), "+12m"))

        assert (by_whole_identity["payload"]["exclusion_id"], by_whole_identity["subject"]) == (loaded_id(1), "bench-person-1")
        assert (by_national_id_alone["payload"]["exclusion_id"], by_national_id_alone["subject"]) == (loaded_id(3), "bench-person-3")
        assert after_an_expired_one["subject"] == "bench-person-20", "the loaded person is matched"
        assert after_an_expired_one["payload"]["exclusion_id"] != loaded_id(20) and after_an_expired_one["type"] != "exclusion.extended"
        for i in (1, 3):
            assert await stores.registration["exclusions"].count_documents({"person_id": f"bench-person-{i}"}) == 1
    finally:
        for name in ("registration", "gateway"):
            await client.drop_database(settings.database_for(name))
        await client.close()
