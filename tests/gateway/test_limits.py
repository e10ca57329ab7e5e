"""Rate limits per key, and every request in the audit log: who, what, when, outcome, trace id;
never the personal data or the key."""

import json

import pytest
import pytest_asyncio

from services.gateway.access import Role
from tests.gateway.conftest import new_person, new_uid, world
from tests.support import eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

BURST = 3


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def limited(servers):
    """Gateway, registration and audit; each key may make 3 requests at once, then 1 a second."""
    async with world(servers, audit=True, gateway_rate_per_second=1.0, gateway_rate_burst=BURST) as the_world:
        yield the_world


async def test_past_its_burst_a_key_is_429_with_retry_after_on_every_api(limited):
    key = await limited.operator("busy", {Role.OPERATOR})
    other = await limited.operator("quiet", {Role.OPERATOR})

    answers = [await limited.client.post("/", data=new_person(), headers={"X-API-Key": key}) for _ in range(BURST + 1)]
    chipout = await limited.client.get("/v1.3/customer-status", params={"key": key, "uid": new_uid()})
    native = await limited.client.post("/v1/checks", json={"identity": {"uid": new_uid()}}, headers={"X-API-Key": key})
    unaffected = await limited.client.post("/", data=new_person(), headers={"X-API-Key": other})

    assert [a.status_code for a in answers] == [200] * BURST + [429]
    assert answers[-1].content == b"" and int(answers[-1].headers["Retry-After"]) >= 1
    assert chipout.status_code == native.status_code == 429
    assert int(chipout.headers["Retry-After"]) >= 1 and native.json()["error"]
    assert unaffected.status_code == 200


async def test_every_request_reaches_the_audit_log_without_personal_data(limited):
    key = await limited.operator("audited", {Role.OPERATOR})
    person = new_person()
    uid = new_uid()

    checked = await limited.client.post("/", data=person, headers={"X-API-Key": key, "X-Trace-Id": "trace-7f3a"})
    status = await limited.client.get("/v1.3/customer-status", params={"key": key, "uid": uid})
    refused = await limited.client.post("/gamstop/v2", data=person, headers={"X-API-Key": "sx_guessed-key"})
    not_found = await limited.client.get("/no/such/route")

    ids = [a.headers["X-Request-Id"] for a in (checked, status, refused, not_found)]

    async def all_audited():
        # An audit record keeps its event whole only in its hashed body (services/audit/chain.py).
        records = await limited.database["audit_log"].find({"type": "gateway.request_handled"}, {"body": 1}).to_list(None)
        events = [json.loads(r["body"])["event"] for r in records]
        found = [e for e in events if e["payload"]["request_id"] in ids]
        return found if len(found) == len(ids) else None

    entries = {e["payload"]["request_id"]: e for e in await eventually(all_audited, what="four request records in the audit log")}
    check_record, status_record, refused_record, missing_record = (entries[i] for i in ids)
    assert check_record["type"] == "gateway.request_handled"
    assert check_record["operator_id"] == limited.operator_ids["audited"]
    assert check_record["payload"] | {"duration_ms": 0} == {
        "request_id": checked.headers["X-Unique-Id"],
        "method": "POST",
        "route": "/",
        "api": "gamstop",
        "status": 200,
        "outcome": "N",
        "trace_id": "trace-7f3a",
        "key_fingerprint": None,
        "duration_ms": 0,
        "count": None,
    }
    assert (status_record["payload"]["route"], status_record["payload"]["status"]) == ("/v1.3/customer-status", 204)
    assert refused_record["operator_id"] is None and refused_record["payload"]["status"] == 403
    assert refused_record["payload"]["key_fingerprint"] and refused_record["payload"]["outcome"] == "wrong key"
    assert missing_record["payload"]["status"] == 404 and missing_record["payload"]["route"] == "(no route)"
    dumped = json.dumps(list(entries.values()), default=str)
    for secret in (person["lastName"], person["email"], uid, key, "sx_guessed-key", "/no/such/route"):
        assert secret not in dumped
