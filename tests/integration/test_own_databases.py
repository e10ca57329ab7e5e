"""Each service on a database of its own, talking only through topics: the gateway's answers still
read their own writes (native, ChipOut, lifts, the portal's whole flow).

Registration, verification and the gateway share the broker and nothing else, so whatever the gateway
answers it can only have learnt from the lifecycle and verification topics.
"""

import json
import uuid
from contextlib import AsyncExitStack

import httpx
import pytest

from services.gateway.access import Permission
from services.gateway.app import create_app as gateway_app
from services.gateway.operators import add
from services.gateway.repository import MongoOperators
from services.registration.app import create_app as registration_app
from services.verification.app import create_app as verification_app
from services.verification.domain import sealed_context
from shared import topics
from shared.crypto import Sealer
from shared.infra import free_port
from shared.settings import Settings
from shared.store import create_client
from tests.gateway.conftest import Clock, new_uid, serving, settings_for
from tests.registration.harness import person, request
from tests.support import Publisher, TopicReader, eventually

pytestmark = pytest.mark.integration


async def test_the_gateway_answers_from_what_the_topics_told_it(servers):
    settings = settings_for(servers, verification_timer_seconds=0)
    databases = {name: f"{settings.mongo_db}_{name}" for name in ("registration", "verification", "gateway")}
    client = create_client(settings)
    clock = Clock()
    port = free_port()
    try:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(registration_app(settings, database=client[databases["registration"]], clock=clock))
            await stack.enter_async_context(verification_app(settings, database=client[databases["verification"]], clock=clock))
            gateway_db = client[databases["gateway"]]
            await stack.enter_async_context(serving(gateway_app(settings, database=gateway_db, clock=clock), port))
            notices = await stack.enter_async_context(TopicReader(settings, topics.NOTIFICATION_REQUESTS))
            http = await stack.enter_async_context(httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60))
            excluder = (await add(MongoOperators(gateway_db), f"excluder-{settings.mongo_db}", {Permission.CHECK, Permission.EXCLUDE})).key
            key = {"X-API-Key": excluder}

            async def ready():
                return (await http.get("/readyz")).status_code == 200

            await eventually(ready, timeout=60, what="the gateway to be ready")

            # Native: created, shown, checked, a lift (relayed, then the person's code) refused with the policy's reason.
            tag = uuid.uuid4().hex[:8]
            identity = {
                "first_name": "Astrid",
                "last_name": f"Berg{tag}",
                "date_of_birth": "1979-11-02",
                "postcode": "111 22",
                "email": f"a.{tag}@example.se",
            }
            created = await http.post("/v1/exclusions", json={"identity": identity, "duration": "+6m", "jurisdiction": "UK"}, headers=key)
            assert created.status_code == 201, created.text
            view = created.json()
            assert view["state"] == "active" and view["created_at"] is not None
            shown = await http.get(created.headers["Location"], headers=key)
            checked = await http.post("/v1/checks", json={"identity": {"email": identity["email"]}}, headers=key)
            relayed = await http.post(f"/v1/exclusions/{view['exclusion_id']}/lift", json={"identity": identity}, headers=key)
            assert relayed.status_code == 202 and relayed.json()["status"] == "code_sent", relayed.text
            [lift_notice] = await notices.wait_for(lambda m: m["payload"]["params"].get("lift_id") == relayed.json()["lift_id"])
            lift_code = json.loads(
                Sealer.from_settings(settings).open_text(lift_notice["payload"]["sealed_params"], sealed_context(lift_notice["id"]))
            )
            lift = await http.post(f"/v1/lifts/{relayed.json()['lift_id']}/code", json={"code": lift_code["code"]})
            again = await http.post("/v1/exclusions", json={"identity": identity, "duration": "+12m", "jurisdiction": "UK"}, headers=key)
            assert shown.status_code == 200 and shown.json()["exclusion_id"] == view["exclusion_id"]
            assert checked.json()["exclusion"] == "Y"
            assert lift.status_code == 409 and "minimum" in lift.json()["reason"], lift.text
            assert (await http.get(created.headers["Location"], headers=key)).json()["last_lift_refusal"]["reason"] == lift.json()["reason"]
            assert again.status_code == 201 and again.json()["exclusion_id"] == view["exclusion_id"], (
                "a second request extends the running one"
            )

            # ChipOut: excluded, and a status right after answers 200.
            uid = new_uid()
            body = {"key": excluder, "uid": uid, "type": ["GAMES"], "games": ["ALL"], "duration": "+30d", "year": "1985", "gender": "F"}
            excluded = await http.post("/api/v1.3/exclude-customers", json=body)
            status = await http.get("/v1.3/customer-status", params={"key": excluder, "uid": uid})
            assert excluded.status_code == 201, excluded.text
            assert status.status_code == 200 and status.json()["Excluded"][0]["Type"] == "All"

            # The portal: request, code, confirmation, status.
            email = f"anna.{tag}@example.se"
            portal_request = {"national_id": "199001011234", "email": email, "duration": "+30d", "jurisdiction": "SE", "verify_by": "email"}
            requested = await http.post("/v1/portal/exclusions", json=portal_request)
            assert requested.status_code == 202, requested.text
            assert (requested.json()["state"], requested.json()["verification"]) == ("pending_verification", "code")
            exclusion_id = requested.json()["exclusion_id"]
            [notice] = await notices.wait_for(
                lambda m: m["payload"]["template"] == "verification_code" and m["payload"]["params"]["exclusion_id"] == exclusion_id
            )
            code = json.loads(Sealer.from_settings(settings).open_text(notice["payload"]["sealed_params"], sealed_context(notice["id"])))[
                "code"
            ]
            wrong = f"{(int(code) + 1) % 1_000_000:06d}"
            refused = await http.post(f"/v1/portal/exclusions/{exclusion_id}/code", json={"code": wrong})
            confirmed = await http.post(f"/v1/portal/exclusions/{exclusion_id}/code", json={"code": code})
            assert (refused.status_code, refused.json()["attempts_left"]) == (400, 4), refused.text
            assert confirmed.status_code == 200 and confirmed.json()["status"] == "verified", confirmed.text

            async def active():
                body = (await http.get(f"/v1/portal/exclusions/{exclusion_id}")).json()
                return body if body["state"] == "active" else None

            shown = await eventually(active, what="the confirmed request to be in force")
            assert shown["verification"]["state"] == "verified" and shown["starts_on"] == clock.now.date().isoformat()

            # Nothing the gateway answered came from another service's collections: it has none of them.
            names = set(await gateway_db.list_collection_names())
            assert not names & {"exclusions", "persons", "verifications", "verification_submissions", "documents"}, names
    finally:
        for name in databases.values():
            await client.drop_database(name)
        await client.close()


def test_each_service_is_given_a_database_of_its_own_unless_one_is_named():
    settings = Settings(mongo_db="selfex", mongo_databases={"gateway": "gateway_eu"})

    assert [settings.database_for(name) for name in ("registration", "verification", "blocking", "audit")] == [
        "selfex_registration",
        "selfex_verification",
        "selfex_blocking",
        "selfex_audit",
    ]
    assert settings.database_for("gateway") == "gateway_eu"
    assert Settings(mongo_db="selfex").database_for("gateway") == "selfex_gateway"


async def test_services_started_without_a_database_open_their_own(servers):
    """No database injected: registration and verification each open ``<mongo_db>_<service>``, and an
    exclusion requested lands in registration's alone."""
    settings = settings_for(servers, verification_timer_seconds=0, registration_timer_seconds=0)
    own = {name: settings.database_for(name) for name in ("registration", "verification")}
    assert len(set(own.values())) == 2 and settings.mongo_db not in own.values()
    client = create_client(settings)
    command = request(person(int(uuid.uuid4().int % 10**8)), "+6m")
    try:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(registration_app(settings))
            await stack.enter_async_context(verification_app(settings))
            publisher = await stack.enter_async_context(Publisher(settings))
            await publisher.event(command)

            async def stored():
                return await client[own["registration"]]["exclusions"].find_one({"request_id": str(command.id)})

            await eventually(stored, what="the exclusion in registration's own database")
            registration_names = set(await client[own["registration"]].list_collection_names())
            verification_names = set(await client[own["verification"]].list_collection_names())
            assert {"exclusions", "persons"} <= registration_names and not registration_names & {"verifications", "documents"}
            assert "verifications" in verification_names and not verification_names & {"exclusions", "persons"}
            assert settings.mongo_db not in await client.list_database_names(), "nothing is written to the bare prefix"
    finally:
        for name in own.values():
            await client.drop_database(name)
        await client.close()
