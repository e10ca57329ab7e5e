"""When what the gateway depends on fails: ChipOut's documented 500, 503 elsewhere, 202 past the bound."""

import pytest

from tests.gateway.conftest import new_person, new_uid, world
from tests.gateway.test_chipout import exclusion
from tests.support import TcpProxy

pytestmark = pytest.mark.integration


async def test_with_the_store_gone_chipout_answers_500_and_the_others_503(servers):
    async with TcpProxy(servers.mongo_uri) as proxy:
        async with world(servers, registration=False, gateway_mongo_uri=f"mongodb://127.0.0.1:{proxy.port}") as gw:
            assert (await gw.client.get("/v1.3/customer-status", params={"key": gw.keys["checker"], "uid": new_uid()})).status_code == 204
            await proxy.cut()

            chipout = await gw.client.get("/v1.3/customer-status", params={"key": gw.keys["checker"], "uid": new_uid()})
            gamstop = await gw.client.post("/", data=new_person(), headers={"X-API-Key": gw.keys["checker"]})
            native = await gw.client.post("/v1/checks", json={"identity": {"uid": new_uid()}}, headers={"X-API-Key": gw.keys["checker"]})

    assert chipout.status_code == 500 and chipout.json()["error"]
    assert gamstop.status_code == 503 and gamstop.content == b"" and gamstop.headers["Retry-After"]
    assert native.status_code == 503 and native.json()["error"] and native.headers["Retry-After"]
    assert "x-request-id" in chipout.headers and "x-request-id" in gamstop.headers


async def test_a_write_registration_has_not_made_within_the_bound_is_202(servers):
    async with world(servers, registration=False, gateway_read_your_write_seconds=0.3) as gw:
        answer = await gw.client.post("/api/v1.3/exclude-customers", json=exclusion(gw.keys["excluder"], new_uid()))

    assert answer.status_code == 202
    assert answer.json()["status"] == "processing" and answer.json()["request_id"]
