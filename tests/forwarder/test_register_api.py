"""The register's side of federation, on one gateway: the Idempotency-Key on POST /v1/exclusions and
the change feed GET /v1/register/changes, with what each says to a malformed request."""

import uuid

import pytest
import pytest_asyncio

from services.gateway.register import KEY_CHECK_VALUE
from shared.identity import Hasher, IdentifierKind
from tests.forwarder.conftest import person
from tests.gateway.conftest import world
from tests.support import eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def register(servers):
    async with world(servers, deployment_name="R") as the_world:
        yield the_world


def exclude(register, identity, key: str | None, **headers):
    sent = {"X-API-Key": register.keys["excluder"], **headers}
    if key is not None:
        sent["Idempotency-Key"] = key
    return register.client.post("/v1/exclusions", headers=sent, json={"identity": identity, "duration": "+30d", "jurisdiction": "SE"})


async def test_the_same_idempotency_key_and_request_is_answered_as_the_first_and_registered_once(register):
    someone, key = person(), str(uuid.uuid4())
    first = await exclude(register, someone, key)
    again = await exclude(register, someone, key)
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert again.json()["exclusion_id"] == first.json()["exclusion_id"]
    stored = await register.database["exclusions"].find_one({"_id": first.json()["exclusion_id"]})
    assert len(stored["request_ids"]) == 1


async def test_an_idempotency_key_used_with_another_request_is_refused_and_a_malformed_one_named(register):
    key = str(uuid.uuid4())
    assert (await exclude(register, person(), key)).status_code == 201
    reused = await exclude(register, person(), key)
    assert reused.status_code == 422 and reused.json()["field"] == "Idempotency-Key"
    malformed = await exclude(register, person(), "two words")
    assert malformed.status_code == 400 and malformed.json()["field"] == "Idempotency-Key"
    origin = await exclude(register, person(), None, **{"X-Selfex-Origin": "no spaces allowed"})
    assert origin.status_code == 400 and origin.json()["field"] == "X-Selfex-Origin"


async def test_the_change_feed_pages_every_exclusion_with_hashes_only_and_a_cursor_to_go_on_from(register):
    made = [person() for _ in range(3)]
    for someone in made:
        assert (await exclude(register, someone, None)).status_code == 201
    headers = {"X-API-Key": register.keys["checker"]}
    emails = {Hasher.from_settings(register.settings).hash(IdentifierKind.EMAIL, p["email"]) for p in made}

    async def every_page():
        changes, cursor = [], ""
        while True:
            page = (await register.client.get("/v1/register/changes", params={"since": cursor, "limit": 2}, headers=headers)).json()
            changes += page["changes"]
            cursor = page["next"]
            if not page["more"]:
                return changes, cursor, page

    changes, cursor, last = await every_page()
    assert emails <= {h for c in changes for h in c["identifiers"]}
    assert all(c["origin"] == "R" and c["in_force"] for c in changes)
    text = str(changes)
    assert not any(p["email"] in text or p["last_name"] in text or p["uid"] in text for p in made)  # keyed hashes only
    assert last["hash_key_check"] == Hasher.from_settings(register.settings).hash(IdentifierKind.EMAIL, KEY_CHECK_VALUE)
    after = (await register.client.get("/v1/register/changes", params={"since": cursor}, headers=headers)).json()
    assert after["changes"] == [] and after["next"] == cursor  # nothing new since

    later = person()
    await exclude(register, later, None)

    async def the_new_one():
        page = (await register.client.get("/v1/register/changes", params={"since": cursor}, headers=headers)).json()
        return page["changes"]

    [new] = await eventually(the_new_one, what="the next change after the cursor")
    assert Hasher.from_settings(register.settings).hash(IdentifierKind.EMAIL, later["email"]) in new["identifiers"]


async def test_the_change_feed_names_a_malformed_cursor_or_limit_and_refuses_keys_without_sync(register):
    headers = {"X-API-Key": register.keys["checker"]}
    bad_cursor = await register.client.get("/v1/register/changes", params={"since": "zero:1"}, headers=headers)
    assert bad_cursor.status_code == 400 and bad_cursor.json()["field"] == "since"
    bad_limit = await register.client.get("/v1/register/changes", params={"limit": 0}, headers=headers)
    assert bad_limit.status_code == 400 and "limit" in bad_limit.json()["field"]
    staff = await register.client.get("/v1/register/changes", headers={"X-API-Key": register.keys["staff"]})
    assert staff.status_code == 403
