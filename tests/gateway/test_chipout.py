"""The ChipOut-compatible API over HTTP: every status code, and a status call right after a 201."""

import pytest

from services.gateway.access import Role
from tests.gateway.conftest import new_uid

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

EXCLUDE = "/api/v1.3/exclude-customers"
STATUS = "/v1.3/customer-status"


def exclusion(key: str, uid: str, **fields) -> dict:
    body = {"key": key, "uid": uid, "type": ["GAMES"], "games": ["ALL"], "duration": "+30d", "year": "1985", "gender": "F"}
    body.update(fields)
    return body


async def test_a_201_means_the_status_call_right_after_answers_200(gw):
    uid = new_uid()

    created = await gw.client.post(EXCLUDE, json=exclusion(gw.keys["excluder"], uid))
    status = await gw.client.get(STATUS, params={"key": gw.keys["checker"], "uid": uid})

    assert created.status_code == 201, created.text
    assert status.status_code == 200, status.text
    [excluded] = status.json()["Excluded"]
    assert excluded["Type"] == "All"
    assert excluded["From"] < excluded["To"]
    stored = await gw.database["exclusions"].find_one({"state": "active", "requested_by": gw.operator_ids["excluder"], "duration": "+30d"})
    assert stored is not None


async def test_both_host_prefixes_serve_both_calls(gw):
    uid = new_uid()

    created = await gw.client.post("/v1.3/exclude-customers", json=exclusion(gw.keys["excluder"], uid, type=["ADS", "DM"], games=[]))
    status = await gw.client.get("/api/v1.3/customer-status", params={"key": gw.keys["checker"], "uid": uid})

    assert created.status_code == 201
    assert status.json() == {
        "Excluded": [{"Type": "ADS,DM", "From": status.json()["Excluded"][0]["From"], "To": status.json()["Excluded"][0]["To"]}]
    }


async def test_until_further_notice_shows_its_minimum_as_to(gw):
    uid = new_uid()

    await gw.client.post(EXCLUDE, json=exclusion(gw.keys["excluder"], uid, duration="+12m", games=["SLOTS", "POKER"]))
    [excluded] = (await gw.client.get(STATUS, params={"key": gw.keys["checker"], "uid": uid})).json()["Excluded"]

    assert excluded["Type"] == "Poker,Slots"
    assert int(excluded["To"][:4]) == int(excluded["From"][:4]) + 1


async def test_a_person_without_an_exclusion_is_204_with_no_body(gw):
    answer = await gw.client.get(STATUS, params={"key": gw.keys["checker"], "uid": new_uid()})

    assert answer.status_code == 204
    assert answer.content == b""


async def test_a_wrong_key_is_401_and_changes_nothing(gw):
    uid = new_uid()

    refused = await gw.client.post(EXCLUDE, json=exclusion("sx_not-a-key", uid))
    status = await gw.client.get(STATUS, params={"key": "sx_not-a-key", "uid": uid})

    assert refused.status_code == 401 and refused.json()["field"] == "key"
    assert status.status_code == 401
    assert (await gw.client.get(STATUS, params={"key": gw.keys["checker"], "uid": uid})).status_code == 204


async def test_a_key_whose_roles_do_not_allow_excluding_cannot_exclude(gw):
    uid = new_uid()

    refused = await gw.client.post(EXCLUDE, json=exclusion(gw.keys["regulator"], uid))

    assert refused.status_code == 401
    assert "exclude" in refused.json()["error"]
    assert (await gw.client.get(STATUS, params={"key": gw.keys["checker"], "uid": uid})).status_code == 204


async def test_a_bad_parameter_is_400_naming_it(gw):
    missing_games = await gw.client.post(EXCLUDE, json=exclusion(gw.keys["excluder"], new_uid(), games=None))
    bad_uid = await gw.client.get(STATUS, params={"key": gw.keys["checker"], "uid": "1234"})

    assert missing_games.status_code == 400 and missing_games.json()["field"] == "games"
    assert bad_uid.status_code == 400 and bad_uid.json()["field"] == "uid"


async def test_an_operator_compliance_key_cannot_ask_status(gw):
    key = await gw.operator("reviewer-only", {Role.OPERATOR_COMPLIANCE})

    answer = await gw.client.get(STATUS, params={"key": key, "uid": new_uid()})

    assert answer.status_code == 401
