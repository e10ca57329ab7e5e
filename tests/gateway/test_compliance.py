"""The compliance routes over real HTTP: the gateway, registration, audit and the audit's query API on
the real broker and store. Every route is cut to an operator-compliance key's own operator (even
when it names another), staff and the regulator see every operator's records, exports parse, and a
malformed request is a 4xx naming the field."""

import csv
import io
import json

import httpx
import pytest
import pytest_asyncio
from pydantic import SecretStr

from services.audit.query import create_app as query_app
from shared.infra import free_port
from shared.settings import InsecureSettingsError
from tests.gateway.conftest import serving, world
from tests.gateway.test_native import someone
from tests.support import eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

TOKEN = "compliance-test-token-0123456789abcdefghij"
ROUTES = ("records", "export", "statement", "statistics")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cw(servers):
    """A world with audit and the audit query API, and one exclusion each of operators A and B."""
    port = free_port()
    async with world(servers, audit=True, audit_query_port=port, audit_query_token=TOKEN) as the_world:
        async with serving(query_app(the_world.settings, database=the_world.database), port):
            the_world.people = {"A": someone(), "B": someone()}  # type: ignore[attr-defined]
            for owner, key in (("A", "excluder"), ("B", "checker")):
                made = await the_world.client.post(
                    "/v1/exclusions",
                    json={
                        "identity": the_world.people[owner],
                        "duration": "+6m",
                        "jurisdiction": "UK",
                        "year_of_birth": 1979,
                        "gender": "F",
                    },
                    headers=headers(the_world, key),
                )
                assert made.status_code == 201, made.text

            async def both_audited():
                found = await search(the_world, "staff", {"types": ["exclusion.activated"]})
                return len(found.json()["records"]) >= 2

            await eventually(both_audited, timeout=60, what="both exclusions to reach the audit log")
            yield the_world


def headers(w, name: str) -> dict[str, str]:
    return {"X-API-Key": w.keys[name]}


async def search(w, key: str, body: dict, **params) -> httpx.Response:
    return await w.client.post("/v1/compliance/records", json=body, headers=headers(w, key), params=params)


async def ask(w, key: str, route: str, body: dict | None = None, **params) -> httpx.Response:
    """One compliance route, the search's body where it takes one."""
    if route == "records":
        return await search(w, key, body or {}, **params)
    if route == "export":
        return await w.client.post("/v1/compliance/records/export", json=body or {}, headers=headers(w, key), params=params)
    if route == "statement":
        return await w.client.post("/v1/compliance/statement", json=body or {}, headers=headers(w, key), params=params)
    return await w.client.get("/v1/compliance/statistics", headers=headers(w, key), params=params)


def operators_in(route: str, answer: httpx.Response) -> set:
    """Whose records an answer holds."""
    if route == "records":
        return {r["operator_id"] for r in answer.json()["records"]}
    if route == "export":
        return {json.loads(line)["operator_id"] for line in answer.text.splitlines()}
    return {e["operator_id"] for e in answer.json()["entries"]}


async def test_an_operator_compliance_key_sees_only_its_own_operators_records_on_every_route(cw):
    a, b = cw.operator_ids["excluder"], cw.operator_ids["checker"]
    person_a, person_b = {"identity": cw.people["A"]}, {"identity": cw.people["B"]}

    for route, body in (("records", {}), ("export", {}), ("statement", person_a)):
        own = await ask(cw, "compliance", route, body)
        assert own.status_code == 200, (route, own.text)
        assert operators_in(route, own) == {a}, route
    for route, body in (("records", person_b), ("export", person_b), ("statement", person_b)):
        theirs = await ask(cw, "compliance", route, body)
        assert theirs.status_code == 200 and operators_in(route, theirs) <= {a}, (route, theirs.text)
    for route in ("records", "export"):
        named = await ask(cw, "compliance", route, {"operator_id": b})
        assert named.status_code == 403 and named.json()["field"] == "operator_id", route
    named_stats = await ask(cw, "compliance", "statistics", operator_id=b)
    assert named_stats.status_code == 403 and named_stats.json()["field"] == "operator_id"

    own_stats = (await ask(cw, "compliance", "statistics")).json()
    staff_of_a = (await ask(cw, "staff", "statistics", operator_id=a)).json()
    everyone = (await ask(cw, "regulator", "statistics")).json()
    for figures in (own_stats, staff_of_a):
        figures.pop("to")
        figures["exclusions_active"].pop("at")
    assert own_stats == staff_of_a, "an operator's figures are the staff's figures of that operator"
    assert own_stats["exclusions_started"]["total"] >= 1
    assert everyone["exclusions_started"]["total"] >= own_stats["exclusions_started"]["total"] + 1, "B's exclusion is not A's"


async def test_register_staff_and_the_regulator_see_every_operator_and_others_see_nothing(cw):
    a, b = cw.operator_ids["excluder"], cw.operator_ids["checker"]
    for key in ("staff", "regulator"):
        found = await search(cw, key, {"types": ["exclusion.request"], "limit": 1000})
        assert {a, b} <= {r["operator_id"] for r in found.json()["records"]}, key
        statement = await ask(cw, key, "statement", {"identity": cw.people["B"]})
        assert {"request", "activation"} <= {e["step"] for e in statement.json()["entries"]}
    for key in ("excluder", "checker"):  # an operator's own key (role operator) asks no compliance query
        for route in ROUTES:
            assert (await ask(cw, key, route, {"identity": cw.people["A"]} if route == "statement" else None)).status_code == 403


async def test_exports_statements_and_statistics_parse_in_each_format(cw):
    body = {"identity": cw.people["A"]}

    jsonl = await ask(cw, "regulator", "export", body, format="jsonl")
    as_csv = await ask(cw, "regulator", "export", body, format="csv")
    html = await ask(cw, "regulator", "statement", body, format="html")
    stats_csv = await ask(cw, "regulator", "statistics", format="csv")

    lines = [json.loads(line) for line in jsonl.text.splitlines()]
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert jsonl.headers["content-type"].startswith("application/x-ndjson") and lines
    assert as_csv.headers["content-type"].startswith("text/csv") and [r["id"] for r in rows] == [r["id"] for r in lines]
    assert all(json.loads(r["event"])["type"] == r["type"] for r in rows)
    assert html.headers["content-type"].startswith("text/html") and "<table>" in html.text and "Exclusion in force" in html.text
    assert cw.people["A"]["email"] not in jsonl.text + as_csv.text + html.text, "nothing personal comes back"
    figures = list(csv.reader(io.StringIO(stats_csv.text)))
    assert figures[0] == ["section", "dimension", "key", "value"] and ["exclusions_started", "jurisdiction", "UK"] in [
        f[:3] for f in figures
    ]


async def test_pages_follow_the_cursor(cw):
    first = (await search(cw, "regulator", {"limit": 2})).json()
    second = (await search(cw, "regulator", {"limit": 2, "cursor": first["next_cursor"]})).json()

    assert len(first["records"]) == 2 and first["next_cursor"] and second["records"]
    assert not {r["id"] for r in first["records"]} & {r["id"] for r in second["records"]}


@pytest.mark.parametrize(
    ("route", "body", "params", "field"),
    [
        ("records", {"cursor": "nonsense"}, {}, "cursor"),
        ("records", {"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, {}, "from"),
        ("records", {"from": "yesterday"}, {}, "from"),
        ("records", {"types": ["DROP TABLE"]}, {}, "types[0]"),
        ("records", {"limit": 0}, {}, "limit"),
        ("records", {"identity": {}}, {}, "identity"),
        ("records", {"who": "everyone"}, {}, "who"),
        ("export", {}, {"format": "pdf"}, "format"),
        ("statement", {}, {}, "identity"),
        ("statement", {"identity": {"email": "a@b.c"}}, {"format": "pdf"}, "format"),
        ("statistics", None, {"from": "not a date"}, "from"),
        ("statistics", None, {"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "from"),
    ],
)
async def test_a_malformed_request_is_a_400_naming_the_field(cw, route, body, params, field):
    answer = await ask(cw, "regulator", route, body, **params)

    assert answer.status_code == 400, answer.text
    assert answer.json()["field"] == field, answer.text


async def test_the_query_api_answers_only_the_gateways_token_and_refuses_a_weak_one(cw):
    async with httpx.AsyncClient(base_url=cw.settings.audit_query_base_url) as client:
        no_token = await client.post("/v1/records", json={"scope": "all"})
        wrong = await client.post("/v1/records", json={"scope": "all"}, headers={"Authorization": "Bearer " + "x" * 40})
        unscoped = await client.post("/v1/records", json={}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert no_token.status_code == wrong.status_code == 401
    assert unscoped.status_code == 400 and unscoped.json()["field"] == "scope"
    for weak in ("", "short", "selfex-development-audit-query-token"):
        with pytest.raises(InsecureSettingsError):
            query_app(cw.settings.model_copy(update={"audit_query_token": SecretStr(weak)}))
    cw.app.state.gateway.settings = cw.settings.model_copy(update={"audit_query_port": free_port()})
    try:
        away = await ask(cw, "regulator", "records")
    finally:
        cw.app.state.gateway.settings = cw.settings
    assert away.status_code == 503 and away.headers["Retry-After"]


async def verification(w, key: str) -> httpx.Response:
    return await w.client.get("/v1/compliance/verification", headers=headers(w, key))


async def test_the_audit_chains_verification_status_is_for_staff_and_the_regulator(cw):
    async def verified():
        answer = await verification(cw, "regulator")
        return answer if answer.status_code == 200 and answer.json()["status"] != "never_verified" else None

    answer = await eventually(verified, timeout=60, what="the audit service's first verification (soon after it starts)")
    status = answer.json()
    by_staff = await verification(cw, "staff")

    assert (status["status"], status["stale"], status["every_seconds"]) == ("intact", False, cw.settings.audit_verify_seconds)
    found = status["verification"]
    assert found["intact"] and found["findings"] == [] and found["problems"] == [] and found["started_at"] <= found["ended_at"]
    assert by_staff.status_code == 200 and by_staff.json()["verification"]["id"] == found["id"]
    for key in ("compliance", "excluder", "checker"):  # an operator's keys: the chain is every operator's
        refused = await verification(cw, key)
        assert refused.status_code == 403, (key, refused.text)
    assert "every operator's" in (await verification(cw, "compliance")).json()["error"]


async def test_a_log_never_verified_says_so(cw):
    """A query API over a store the audit service has not verified yet (its first run not come)."""
    port = free_port()
    empty = cw.database.client[f"{cw.settings.mongo_db}_never"]
    cw.app.state.gateway.settings = cw.settings.model_copy(update={"audit_query_port": port})
    try:
        async with serving(query_app(cw.settings, database=empty), port):
            answer = await verification(cw, "regulator")
    finally:
        cw.app.state.gateway.settings = cw.settings
        await cw.database.client.drop_database(empty.name)

    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "status": "never_verified",
        "stale": False,
        "every_seconds": cw.settings.audit_verify_seconds,
        "verification": None,
    }


async def test_the_query_apis_verification_answers_only_the_gateways_token(cw):
    async with httpx.AsyncClient(base_url=cw.settings.audit_query_base_url) as client:
        no_token = await client.get("/v1/verification")
        with_token = await client.get("/v1/verification", headers={"Authorization": f"Bearer {TOKEN}"})
    assert no_token.status_code == 401 and no_token.json()["field"] == "Authorization"
    assert with_token.status_code == 200 and with_token.json()["status"] in ("intact", "never_verified")
