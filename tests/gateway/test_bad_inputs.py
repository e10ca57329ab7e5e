"""Bad input, one row per way to get it wrong: each is answered with the right code (and, outside
the GAMSTOP paths, a JSON body naming the field), and nothing reaches registration or the store."""

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from services.audit.query import create_app as audit_query_app
from services.gateway.access import OPERATOR_ROLES
from shared import topics
from shared.infra import free_port
from tests.gateway.conftest import new_person, new_uid, serving, world
from tests.support import TopicReader

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


@dataclass
class Bad:
    name: str
    method: str
    path: str
    request: Callable[[Any], dict]  # the world's keys → httpx keyword arguments
    status: int
    field: str | None = None  # None: a bare status code (GAMSTOP), or no field to name


def chipout(**changes) -> Callable[[Any], dict]:
    """A valid ChipOut exclusion with ``changes`` (``DROP`` removes a field)."""

    def build(w) -> dict:
        body = {
            "key": w.keys["excluder"],
            "uid": new_uid(),
            "type": ["GAMES"],
            "games": ["ALL"],
            "duration": "+30d",
            "year": "1985",
            "gender": "M",
        }
        for name, value in changes.items():
            if value is DROP:
                body.pop(name)
            else:
                body[name] = value
        return {"json": body}

    return build


def native(body_changes: dict | None = None, identity_changes: dict | None = None, key="excluder", **raw) -> Callable[[Any], dict]:
    def build(w) -> dict:
        identity = {"email": f"p.{uuid.uuid4().hex[:8]}@example.com", **(identity_changes or {})}
        body = {"identity": identity, "duration": "+6m", "jurisdiction": "UK", **(body_changes or {})}
        out = {"json": body, "headers": {"X-API-Key": w.keys[key]} if key else {}}
        out.update(raw)
        return out

    return build


def gamstop(**changes) -> Callable[[Any], dict]:
    """A valid GAMSTOP form with ``changes`` (``DROP`` removes a field)."""

    def build(w) -> dict:
        form = new_person()
        for name, value in changes.items():
            if value is DROP:
                form.pop(name)
            else:
                form[name] = value
        return {"data": form, "headers": {"X-API-Key": w.keys["checker"]}}

    return build


def keyed(key="checker", **kwargs) -> Callable[[Any], dict]:
    def build(w) -> dict:
        headers = {"X-API-Key": w.keys[key], **kwargs.pop("headers", {})}
        return {**kwargs, "headers": headers}

    return build


DROP = object()
DEEP = b"[" * 30_000 + b"]" * 30_000  # 60 kB: under the body limit
DEEP_OBJECTS = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
EXCLUDE, STATUS = "/api/v1.3/exclude-customers", "/v1.3/customer-status"
MISSING_ID = str(uuid.uuid4())

CASES = [
    # ChipOut: exclude
    Bad(
        "chipout body not JSON",
        "POST",
        EXCLUDE,
        lambda w: {"content": b"uid=1", "headers": {"content-type": "application/json"}},
        400,
        "body",
    ),
    Bad("chipout body an array", "POST", EXCLUDE, lambda w: {"json": []}, 400, "body"),
    Bad("chipout key missing", "POST", EXCLUDE, chipout(key=DROP), 400, "key"),
    Bad("chipout key a number", "POST", EXCLUDE, chipout(key=123), 400, "key"),
    Bad("chipout key wrong", "POST", EXCLUDE, chipout(key="sx_wrong"), 401, "key"),
    Bad("chipout uid missing", "POST", EXCLUDE, chipout(uid=DROP), 400, "uid"),
    Bad("chipout uid too short", "POST", EXCLUDE, chipout(uid="abc123"), 400, "uid"),
    Bad("chipout uid not hex", "POST", EXCLUDE, chipout(uid="g" * 64), 400, "uid"),
    Bad("chipout uid too long", "POST", EXCLUDE, chipout(uid="a" * 65), 400, "uid"),
    Bad("chipout uid a number", "POST", EXCLUDE, chipout(uid=12345), 400, "uid"),
    Bad("chipout type missing", "POST", EXCLUDE, chipout(type=DROP), 400, "type"),
    Bad("chipout type empty", "POST", EXCLUDE, chipout(type=[]), 400, "type"),
    Bad("chipout type a string", "POST", EXCLUDE, chipout(type="GAMES"), 400, "type"),
    Bad("chipout type unknown", "POST", EXCLUDE, chipout(type=["CASINO"]), 400, "type"),
    Bad("chipout games missing", "POST", EXCLUDE, chipout(games=DROP), 400, "games"),
    Bad("chipout games unknown", "POST", EXCLUDE, chipout(games=["DICE"]), 400, "games"),
    Bad("chipout games numbers", "POST", EXCLUDE, chipout(games=[1]), 400, "games"),
    Bad("chipout duration missing", "POST", EXCLUDE, chipout(duration=DROP), 400, "duration"),
    Bad("chipout duration no plus", "POST", EXCLUDE, chipout(duration="30d"), 400, "duration"),
    Bad("chipout duration zero", "POST", EXCLUDE, chipout(duration="+0d"), 400, "duration"),
    Bad("chipout duration too long", "POST", EXCLUDE, chipout(duration="+9999999d"), 400, "duration"),
    Bad("chipout duration a number", "POST", EXCLUDE, chipout(duration=30), 400, "duration"),
    Bad("chipout year missing", "POST", EXCLUDE, chipout(year=DROP), 400, "year"),
    Bad("chipout year two digits", "POST", EXCLUDE, chipout(year="85"), 400, "year"),
    Bad("chipout year too early", "POST", EXCLUDE, chipout(year="1850"), 400, "year"),
    Bad("chipout year in the future", "POST", EXCLUDE, chipout(year="2999"), 400, "year"),
    Bad("chipout year a boolean", "POST", EXCLUDE, chipout(year=True), 400, "year"),
    Bad("chipout gender unknown", "POST", EXCLUDE, chipout(gender="X"), 400, "gender"),
    Bad("chipout gender missing", "POST", EXCLUDE, chipout(gender=DROP), 400, "gender"),
    Bad("chipout body too large", "POST", EXCLUDE, chipout(padding="x" * 70_000), 413, "body"),
    # ChipOut: status
    Bad("status key missing", "GET", STATUS, lambda w: {"params": {"uid": new_uid()}}, 400, "key"),
    Bad("status key wrong", "GET", STATUS, lambda w: {"params": {"key": "sx_wrong", "uid": new_uid()}}, 401, "key"),
    Bad("status uid missing", "GET", STATUS, lambda w: {"params": {"key": w.keys["checker"]}}, 400, "uid"),
    Bad("status uid malformed", "GET", STATUS, lambda w: {"params": {"key": w.keys["checker"], "uid": "19850709-1234"}}, 400, "uid"),
    # native: create
    Bad("native no key", "POST", "/v1/exclusions", native(key=None), 401, "X-API-Key"),
    Bad("native wrong key", "POST", "/v1/exclusions", lambda w: {"json": {}, "headers": {"X-API-Key": "sx_wrong"}}, 401, "X-API-Key"),
    Bad("native body not JSON", "POST", "/v1/exclusions", native(content=b"{identity", json=None), 400, "body"),
    Bad(
        "native body plain text",
        "POST",
        "/v1/exclusions",
        lambda w: {"content": b"hello", "headers": {"X-API-Key": w.keys["excluder"], "content-type": "text/plain"}},
        400,
        None,
    ),
    Bad(
        "native identity missing",
        "POST",
        "/v1/exclusions",
        lambda w: {"json": {"duration": "+6m", "jurisdiction": "UK"}, "headers": {"X-API-Key": w.keys["excluder"]}},
        400,
        "identity",
    ),
    Bad("native identity names nobody", "POST", "/v1/exclusions", native(identity_changes={"email": None}), 400, "identity"),
    Bad("native email malformed", "POST", "/v1/exclusions", native(identity_changes={"email": "not-an-email"}), 400, "identity.email"),
    Bad(
        "native birth date not ISO",
        "POST",
        "/v1/exclusions",
        native(identity_changes={"date_of_birth": "31/07/1980"}),
        400,
        "identity.date_of_birth",
    ),
    Bad(
        "native birth date impossible",
        "POST",
        "/v1/exclusions",
        native(identity_changes={"date_of_birth": "1980-02-30"}),
        400,
        "identity.date_of_birth",
    ),
    Bad(
        "native first name over-long",
        "POST",
        "/v1/exclusions",
        native(identity_changes={"first_name": "A" * 201}),
        400,
        "identity.first_name",
    ),
    Bad("native uid a number", "POST", "/v1/exclusions", native(identity_changes={"uid": 42}), 400, "identity.uid"),
    Bad("native identity unknown field", "POST", "/v1/exclusions", native(identity_changes={"shoe_size": "44"}), 400, "identity.shoe_size"),
    Bad("native mobile impossible", "POST", "/v1/exclusions", native(identity_changes={"mobile": "+44 12"}), 400, "identity.mobile"),
    Bad("native duration not allowed", "POST", "/v1/exclusions", native({"duration": "+7d"}), 400, "duration"),
    Bad("native duration a number", "POST", "/v1/exclusions", native({"duration": 7}), 400, "duration"),
    Bad("native jurisdiction unknown", "POST", "/v1/exclusions", native({"jurisdiction": "XX"}), 400, "jurisdiction"),
    Bad("native jurisdiction lower case", "POST", "/v1/exclusions", native({"jurisdiction": "uk"}), 400, "jurisdiction"),
    Bad("native scope type unknown", "POST", "/v1/exclusions", native({"scope": {"types": ["CASINO"]}}), 400, "scope.types[0]"),
    Bad(
        "native scope not offered",
        "POST",
        "/v1/exclusions",
        native({"jurisdiction": "DE", "duration": "+6m", "scope": {"types": ["DM"]}}),
        400,
        "scope.types",
    ),
    Bad("native year a string", "POST", "/v1/exclusions", native({"year_of_birth": "1980"}), 400, "year_of_birth"),
    Bad("native gender unknown", "POST", "/v1/exclusions", native({"gender": "Q"}), 400, "gender"),
    Bad("native unknown field", "POST", "/v1/exclusions", native({"colour": "blue"}), 400, "colour"),
    Bad("native body too large", "POST", "/v1/exclusions", native({"padding": "x" * 70_000}), 413, "body"),
    # native: other routes
    Bad(
        "extend id not a UUID",
        "POST",
        "/v1/exclusions/not-a-uuid/extend",
        lambda w: {"json": {"identity": {"uid": new_uid()}, "duration": "+12m"}, "headers": {"X-API-Key": w.keys["excluder"]}},
        400,
        "exclusion_id",
    ),
    Bad(
        "lift unknown exclusion",
        "POST",
        f"/v1/exclusions/{MISSING_ID}/lift",
        lambda w: {"json": {"identity": {"uid": new_uid()}}, "headers": {"X-API-Key": w.keys["excluder"]}},
        404,
        "exclusion_id",
    ),
    Bad("check identity empty", "POST", "/v1/checks", keyed(json={"identity": {}}), 400, "identity"),
    Bad("batch check empty", "POST", "/v1/checks/batch", keyed(json={"persons": []}), 400, "persons"),
    Bad(
        "batch check bad record",
        "POST",
        "/v1/checks/batch",
        keyed(json={"persons": [{"identity": {"uid": new_uid()}}, {"identity": {"email": "x"}}]}),
        400,
        "persons[1].identity.email",
    ),
    Bad("decisions limit zero", "GET", "/v1/decisions", keyed(params={"limit": 0}), 400, "limit"),
    Bad("decisions limit not a number", "GET", "/v1/decisions", keyed(params={"limit": "many"}), 400, "limit"),
    Bad("decisions before not a time", "GET", "/v1/decisions", keyed(params={"before": "yesterday"}), 400, "before"),
    Bad(
        "review approved not a boolean",
        "POST",
        f"/v1/verifications/{MISSING_ID}/documents/d1/review",
        keyed("staff", json={"approved": "yes"}),
        400,
        "approved",
    ),
    Bad(
        "review note over-long",
        "POST",
        f"/v1/verifications/{MISSING_ID}/documents/d1/review",
        keyed("staff", json={"approved": False, "note": "n" * 2001}),
        400,
        "note",
    ),
    Bad(
        "review document id malformed",
        "POST",
        f"/v1/verifications/{MISSING_ID}/documents/a%20b/review",
        keyed("staff", json={"approved": True}),
        400,
        "document_id",
    ),
    Bad("unknown route", "GET", "/v2/everything", lambda w: {}, 404, None),
    # GAMSTOP: bare status codes
    Bad("gamstop first name missing", "POST", "/", gamstop(firstName=DROP), 400),
    Bad("gamstop first name empty", "POST", "/", gamstop(firstName="  "), 400),
    Bad("gamstop first name over-long", "POST", "/", gamstop(firstName="A" * 201), 400),
    Bad("gamstop date with slashes", "POST", "/", gamstop(dateOfBirth="1985/04/12"), 400),
    Bad("gamstop date short year", "POST", "/", gamstop(dateOfBirth="85-04-12"), 400),
    Bad("gamstop date impossible", "POST", "/", gamstop(dateOfBirth="1985-13-01"), 400),
    Bad("gamstop email without at", "POST", "/", gamstop(email="harriet.example.com"), 400),
    Bad("gamstop postcode symbols", "POST", "/gamstop/v2", gamstop(postcode="!!!"), 400),
    Bad("gamstop mobile impossible", "POST", "/gamstop/v2", gamstop(mobile="12"), 400),
    Bad("gamstop JSON instead of form", "POST", "/", lambda w: {"json": new_person(), "headers": {"X-API-Key": w.keys["checker"]}}, 400),
    Bad("gamstop wrong key", "POST", "/", lambda w: {"data": new_person(), "headers": {"X-API-Key": "sx_wrong"}}, 403),
    Bad("gamstop body too large", "POST", "/", gamstop(padding="x" * 70_000), 413),
    Bad("gamstop batch not an array", "POST", "/gamstop/v2/batch", keyed(json={"firstName": "A"}), 400),
    Bad("gamstop batch of strings", "POST", "/gamstop/v2/batch", keyed(json=["Harriet"]), 400),
    Bad("gamstop batch not JSON", "POST", "/gamstop/v2/batch", keyed(content=b"[{", headers={"content-type": "application/json"}), 400),
    # Found by walking the OpenAPI document with hostile input: each was a 500 (or a wrong 200)
    Bad(
        "chipout JSON nested 30,000 deep",
        "POST",
        EXCLUDE,
        lambda w: {"content": DEEP, "headers": {"content-type": "application/json"}},
        400,
        "body",
    ),
    Bad(
        "chipout JSON objects nested deep",
        "POST",
        EXCLUDE,
        lambda w: {"content": DEEP_OBJECTS, "headers": {"content-type": "application/json"}},
        400,
        "body",
    ),
    Bad(
        "chipout key a lone surrogate",
        "POST",
        EXCLUDE,
        lambda w: {"content": b'{"key": "\\ud800"}', "headers": {"content-type": "application/json"}},
        401,
        "key",
    ),
    Bad(
        "chipout year NaN",
        "POST",
        EXCLUDE,
        lambda w: {"content": b'{"key": "k", "year": NaN}', "headers": {"content-type": "application/json"}},
        400,
        "body",
    ),
    Bad(
        "chipout year a huge number",
        "POST",
        EXCLUDE,
        lambda w: {"content": b'{"year": ' + b"9" * 5000 + b"}", "headers": {"content-type": "application/json"}},
        400,
        "body",
    ),
    Bad(
        "chipout body not UTF-8",
        "POST",
        EXCLUDE,
        lambda w: {"content": b'{"key": "\xff\xfe"}', "headers": {"content-type": "application/json"}},
        400,
        "body",
    ),
    Bad("chipout body empty", "POST", EXCLUDE, lambda w: {"content": b"", "headers": {"content-type": "application/json"}}, 400, "body"),
    Bad(
        "portal JSON nested 30,000 deep",
        "POST",
        "/v1/portal/exclusions",
        lambda w: {"content": DEEP, "headers": {"content-type": "application/json"}},
        400,
        "body",
    ),
    Bad(
        "portal birth date in the future",
        "POST",
        "/v1/portal/exclusions",
        lambda w: {
            "json": {
                "first_name": "A",
                "last_name": "B",
                "date_of_birth": "2999-01-01",
                "postcode": "GU1 1AA",
                "email": "a@example.com",
                "duration": "+6m",
                "jurisdiction": "UK",
            }
        },
        400,
        "date_of_birth",
    ),
    Bad(
        "native JSON nested 30,000 deep",
        "POST",
        "/v1/exclusions",
        keyed("excluder", content=DEEP, headers={"content-type": "application/json"}),
        400,
        "body",
    ),
    Bad(
        "native check JSON nested deep",
        "POST",
        "/v1/checks",
        keyed(content=b'{"identity": ' + DEEP_OBJECTS + b"}", headers={"content-type": "application/json"}),
        400,
        "body",
    ),
    Bad(
        "native birth date before 1900",
        "POST",
        "/v1/exclusions",
        native(identity_changes={"date_of_birth": "1899-12-31"}),
        400,
        "identity.date_of_birth",
    ),
    Bad(
        "native birth date in the future",
        "POST",
        "/v1/checks",
        keyed(json={"identity": {"first_name": "A", "last_name": "B", "postcode": "GU1 1AA", "date_of_birth": "2999-01-01"}}),
        400,
        "identity.date_of_birth",
    ),
    Bad(
        "decisions before off the calendar in UTC",
        "GET",
        "/v1/decisions",
        keyed(params={"before": "0001-01-01T00:01:04+03:43"}),
        400,
        "before",
    ),
    Bad(
        "decisions before past year 9999 in UTC",
        "GET",
        "/v1/decisions",
        keyed(params={"before": "9999-12-31T23:59:59-14:00"}),
        400,
        "before",
    ),
    Bad("decisions before year 1", "GET", "/v1/decisions", keyed(params={"before": "0001-01-01T00:00:00Z"}), 400, "before"),
    Bad("decisions limit huge", "GET", "/v1/decisions", keyed(params={"limit": "9" * 40}), 400, "limit"),
    Bad("gamstop batch mobile null", "POST", "/gamstop/v2/batch", keyed(json=[{**new_person(), "mobile": None}]), 400),
    Bad(
        "gamstop batch nested 30,000 deep",
        "POST",
        "/gamstop/v2/batch",
        keyed(content=DEEP, headers={"content-type": "application/json"}),
        400,
    ),
    Bad(
        "gamstop batch NaN",
        "POST",
        "/gamstop/v2/batch",
        keyed(content=b'[{"firstName": NaN}]', headers={"content-type": "application/json"}),
        400,
    ),
    Bad(
        "gamstop form not UTF-8",
        "POST",
        "/",
        keyed(content=b"firstName=%ff%fe&lastName=\xff", headers={"content-type": "application/x-www-form-urlencoded"}),
        400,
    ),
    Bad("gamstop body empty", "POST", "/", keyed(content=b"", headers={"content-type": "application/x-www-form-urlencoded"}), 400),
    Bad("gamstop multipart without boundary", "POST", "/", keyed(content=b"abc", headers={"content-type": "multipart/form-data"}), 400),
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def guarded(servers):
    """The world, and a reader of registration's command topic: nothing may arrive on it."""
    async with world(servers) as the_world, TopicReader(the_world.settings, topics.EXCLUSION_COMMANDS) as commands:
        yield the_world, commands


async def test_the_table_has_at_least_40_rows():
    assert len(CASES) >= 40
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_bad_input_is_refused_with_the_right_code_and_nothing_is_stored(guarded, case: Bad):
    the_world, commands = guarded
    request = case.request(the_world)
    if request.get("json") is None:
        request.pop("json", None)
    if request.get("headers") is None:
        request.pop("headers", None)

    answer = await the_world.client.request(case.method, case.path, **request)

    assert answer.status_code == case.status, answer.text[:300]
    assert "x-request-id" in answer.headers and "date" in answer.headers
    if case.path in {"/", "/gamstop/v2", "/gamstop/v2/batch"}:
        assert answer.content == b""
    else:
        problem = answer.json()
        assert problem["error"]
        if case.field:
            assert problem["field"] == case.field, problem
    await commands._drain()
    assert commands.messages() == []
    assert await the_world.database["exclusions"].count_documents({}) == 0


# --- every documented route, hostile input ------------------------------------------------------

HOSTILE_BODIES = {
    "nested 30,000 deep": (DEEP, "application/json"),
    "objects nested deep": (DEEP_OBJECTS, "application/json"),
    "deep inside an array": (b"[" + b"[" * 5_000 + b"]" * 5_000 + b"]", "application/json"),
    "huge integers": (b'{"key": ' + b"9" * 5_000 + b', "year": 1' + b"0" * 400 + b', "limit": -1}', "application/json"),
    "NaN and Infinity": (b'{"key": NaN, "year": Infinity, "approved": -Infinity}', "application/json"),
    "a float past the range": (b'{"year": 1e999, "approved": 1e-999}', "application/json"),
    "not UTF-8": (b'\xff\xfe{"a": "\xc3\x28"}', "application/json"),
    "a form not UTF-8": (b"firstName=\xff\xfe&lastName=%ff%fe", "application/x-www-form-urlencoded"),
    "an empty JSON body": (b"", "application/json"),
    "an empty body, no type": (b"", None),
    "plain text": (b"hello", "text/plain"),
    "JSON sent as a form": (b'{"a": 1}', "application/x-www-form-urlencoded"),
    "multipart cut short": (b'--x\r\nContent-Disposition: form-data; name="a"\r\n\r\n', "multipart/form-data; boundary=x"),
    "multipart without a boundary": (b"abc", "multipart/form-data"),
    "duplicate keys": (b'{"key": "a", "key": 1, "identity": {}, "identity": []}', "application/json"),
    "null": (b"null", "application/json"),
    "a bare string": (b'"x"', "application/json"),
    "nulls": (b"[null, null]", "application/json"),
    "lone surrogates": (b'{"key": "\\ud800", "first_name": "\\udfff", "email": "\\ud800@x.y", "uid": "\\ud800"}', "application/json"),
    "NUL characters": (b'{"key": "a\\u0000b", "email": "a\\u0000@b.c"}', "application/json"),
}
HOSTILE_QUERIES = [
    "before=0001-01-01T00:01:04%2B03:43",
    "before=9999-12-31T23:59:59-14:00",
    "before=NaN",
    "before=99999999999999999999",
    "limit=99999999999999999999999999",
    "limit=NaN",
    "limit=1e999",
    "key=%ff%fe&uid=%ff",
    "uid=" + "a" * 5_000,
]


AUDIT_QUERY_TOKEN = "hostile-input-test-token-0123456789abcdef"


async def test_every_documented_route_answers_hostile_input_with_a_4xx_never_a_500(servers):
    """Walks the OpenAPI document: each route, each method, every hostile body and query above (the
    compliance routes' through to the audit's query API, which runs here too)."""
    port = free_port()
    async with (
        world(servers, audit_query_port=port, audit_query_token=AUDIT_QUERY_TOKEN) as the_world,
        serving(audit_query_app(the_world.settings, database=the_world.database), port),
    ):
        key = await the_world.operator("everything", OPERATOR_ROLES)
        document = (await the_world.client.get("/openapi.json")).json()
        failures = []
        for path, methods in document["paths"].items():
            concrete = re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)
            for method in methods:
                for name, (body, content_type) in HOSTILE_BODIES.items():
                    headers = {"X-API-Key": key, **({"content-type": content_type} if content_type else {})}
                    answer = await the_world.client.request(method.upper(), concrete, content=body, headers=headers, params={"key": key})
                    if answer.status_code >= 500 or (method != "get" and answer.status_code < 400):  # a GET ignores its body
                        failures.append(f"{method.upper()} {path} with {name}: {answer.status_code} {answer.text[:80]}")
                for query in HOSTILE_QUERIES:
                    answer = await the_world.client.request(method.upper(), f"{concrete}?{query}", headers={"X-API-Key": key})
                    if answer.status_code >= 500:
                        failures.append(f"{method.upper()} {path}?{query[:40]}: {answer.status_code} {answer.text[:80]}")
    assert not failures, "\n".join(failures)


async def test_the_gamstop_documents_say_what_the_answers_are(servers):
    """POST / answers with headers and no body, as GAMSTOP's does: its 200 documents no content; the
    batch's mobile is a string, and the 503 that replaces a guess is documented."""
    async with world(servers) as the_world:
        document = (await the_world.client.get("/openapi.json")).json()
        answer = await the_world.client.post("/", data=new_person(), headers={"X-API-Key": the_world.keys["checker"]})
    check = document["paths"]["/"]["post"]["responses"]
    assert "content" not in check["200"] and set(check["200"]["headers"]) >= {"X-Exclusion", "X-Unique-Id", "Date"}
    assert answer.status_code == 200 and answer.content == b"" and "content-type" not in answer.headers
    assert "503" in check and "Retry-After" in check["503"]["headers"]
    batch = document["paths"]["/gamstop/v2/batch"]["post"]
    assert batch["requestBody"]["content"]["application/json"]["schema"]["items"]["properties"]["mobile"] == {
        "type": "string",
        "example": "07700 900123",
    }
    assert "503" in batch["responses"]
    status = document["paths"]["/v1.3/customer-status"]["get"]["responses"]
    assert "500" in status and "never a 204" in status["500"]["description"]
    assert "503" in document["paths"]["/v1/checks"]["post"]["responses"]
    assert "/readyz" in document["paths"]
