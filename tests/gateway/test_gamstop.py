"""The GAMSTOP-compatible check over HTTP: Y/N/P in headers, bare status codes, the batch form."""

import uuid
from datetime import timedelta

import pytest

from shared.events import ExclusionExpired, ExclusionSnapshot, ExclusionState, Scope, utcnow
from tests.gateway.conftest import new_person
from tests.support import Publisher, eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


def identity_of(person: dict) -> dict:
    return {
        "first_name": person["firstName"],
        "last_name": person["lastName"],
        "date_of_birth": person["dateOfBirth"],
        "postcode": person["postcode"],
        "email": person["email"],
    }


async def excluded(gw, person: dict) -> dict:
    """Exclude the person through the native API (registration writes it), as a UK operator would."""
    answer = await gw.client.post(
        "/v1/exclusions",
        headers={"X-API-Key": gw.keys["excluder"]},
        json={"identity": identity_of(person), "duration": "+6m", "jurisdiction": "UK"},
    )
    assert answer.status_code == 201, answer.text
    return answer.json()


async def ask(gw, person: dict, path: str = "/", key: str | None = None, **headers):
    return await gw.client.post(path, data=person, headers={"X-API-Key": key or gw.keys["checker"], **headers})


async def test_someone_excluded_is_y_with_a_unique_id_and_a_date(gw):
    person = new_person()
    await excluded(gw, person)

    first, second = await ask(gw, person), await ask(gw, person, "/gamstop/v2")

    assert first.status_code == second.status_code == 200
    assert first.headers["X-Exclusion"] == second.headers["X-Exclusion"] == "Y"
    assert first.headers["X-Unique-Id"] != second.headers["X-Unique-Id"]
    assert first.headers["X-Unique-Id"] == first.headers["X-Request-Id"]
    assert first.headers["Date"].endswith("GMT")
    assert first.content == b""


async def test_someone_never_excluded_is_n(gw):
    answer = await ask(gw, new_person())

    assert answer.status_code == 200 and answer.headers["X-Exclusion"] == "N"


async def test_only_the_first_20_characters_of_a_name_count_and_postcode_spaces_do_not(gw):
    person = new_person(firstName="Maximiliana-Theodora Annabel", lastName="Featherstonehaugh-Wyn", postcode="SW1A 1AA")
    person["email"] = f"max.{uuid.uuid4().hex[:8]}@example.com"
    await excluded(gw, person)
    asked = dict(
        person,
        firstName="MAXIMILIANA-THEODORA Zed",  # differs after 20 characters, and in case
        lastName="Featherstonehaugh-Wyx",
        postcode="sw1a1aa",
        email="someone.else@example.com",
    )

    assert (await ask(gw, asked)).headers["X-Exclusion"] == "Y"
    assert (await ask(gw, dict(asked, lastName="Featherstonehaugh-Wy"))).headers["X-Exclusion"] == "Y"
    assert (await ask(gw, dict(asked, firstName="Maximiliano-Theodora"))).headers["X-Exclusion"] == "N"


async def test_an_expired_exclusion_is_p(gw):
    person = new_person()
    view = await excluded(gw, person)
    stored = await gw.database["exclusions"].find_one({"_id": view["exclusion_id"]})
    now = utcnow()
    snapshot = ExclusionSnapshot(
        exclusion_id=uuid.UUID(view["exclusion_id"]),
        identifiers=stored["identifiers"],
        scope=Scope.model_validate(stored["scope"]),
        jurisdiction="UK",
        state=ExclusionState.EXPIRED,
        starts_at=now - timedelta(days=200),
        ends_at=now - timedelta(days=1),
        version=stored["version"] + 1,
    )
    async with Publisher(gw.settings) as publish:  # as registration would, when the end passes
        await publish.event(ExclusionExpired(source="registration", subject=stored["person_id"], payload=snapshot))

    async def answered_p():
        return (await ask(gw, person)).headers["X-Exclusion"] == "P"

    await eventually(answered_p, what="the gateway to follow the expiry")


async def test_a_wrong_or_missing_key_is_403_with_no_body(gw):
    wrong = await ask(gw, new_person(), key="sx_wrong")
    missing = await gw.client.post("/", data=new_person())

    assert wrong.status_code == missing.status_code == 403
    assert wrong.content == missing.content == b""


async def test_a_key_without_the_check_scope_is_403(gw):
    assert (await ask(gw, new_person(), key=gw.keys["compliance"])).status_code == 403


@pytest.mark.parametrize(
    ("method", "path"),
    [
        (method, path)
        for path in ["/", "/gamstop/v2", "/gamstop/v2/batch"]
        for method in ["GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
        if (method, path) != ("GET", "/")  # GET / is the landing page for people (issue 17): the next test
    ],
)
async def test_any_other_method_is_405(gw, method, path):
    answer = await gw.client.request(method, path, headers={"X-API-Key": gw.keys["checker"]})

    assert answer.status_code == 405
    assert answer.content == b""
    assert answer.headers["Allow"] == "POST"


async def test_get_on_the_root_is_the_landing_page_and_post_stays_the_check(gw):
    page = await gw.client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'href="/portal"' in page.text and 'href="/console"' in page.text
    assert (await ask(gw, new_person())).headers["X-Exclusion"] == "N"


async def test_a_missing_or_malformed_parameter_is_400_with_no_body(gw):
    person = new_person()
    missing = {k: v for k, v in person.items() if k != "postcode"}

    for form in (missing, dict(person, dateOfBirth="12/04/1985"), dict(person, dateOfBirth="1985-4-12")):
        answer = await ask(gw, form)
        assert answer.status_code == 400, form
        assert answer.content == b""


async def test_a_batch_answers_each_record_in_order(gw):
    people = [new_person() for _ in range(5)]
    await excluded(gw, people[1])
    await excluded(gw, people[3])

    answer = await gw.client.post("/gamstop/v2/batch", json=people, headers={"X-API-Key": gw.keys["checker"]})

    assert answer.status_code == 200
    results = answer.json()
    assert [r["exclusion"] for r in results] == ["N", "Y", "N", "Y", "N"]
    assert len({r["uniqueId"] for r in results}) == 5


async def test_a_batch_of_1000_is_answered_and_1001_is_400(gw):
    people = [new_person() for _ in range(1001)]

    full = await gw.client.post("/gamstop/v2/batch", json=people[:1000], headers={"X-API-Key": gw.keys["checker"]})
    over = await gw.client.post("/gamstop/v2/batch", json=people, headers={"X-API-Key": gw.keys["checker"]})

    assert full.status_code == 200 and len(full.json()) == 1000
    assert {r["exclusion"] for r in full.json()} == {"N"}
    assert over.status_code == 400 and over.content == b""


async def test_a_batch_with_one_bad_record_is_400(gw):
    people = [new_person(), new_person(dateOfBirth="1985-02-30")]

    answer = await gw.client.post("/gamstop/v2/batch", json=people, headers={"X-API-Key": gw.keys["checker"]})

    assert answer.status_code == 400
