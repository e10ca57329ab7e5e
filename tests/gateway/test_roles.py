"""Who may do what: every route of the gateway, walked with a key of each role and of a second
operator, on the real broker and store; and the ownership rule's cases one by one.

The table knows every route (the OpenAPI document's, and those left out of it: the GAMSTOP and
ChipOut aliases, the docs); a route it does not know fails the walk, so a new route cannot skip
the check.
"""

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from services.gateway.access import key_hash, new_key
from services.gateway.operators import rotate
from services.gateway.repository import MongoOperators
from shared.events import utcnow
from tests.gateway.conftest import new_person, new_uid, world
from tests.gateway.test_native import someone

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

OK = "allowed"  # a 2xx
DENIED = "denied"  # 401 or 403 (ChipOut knows only 401, GAMSTOP only 403)
HIDDEN = "hidden"  # 404: another operator's exclusion does not exist for this key
OPEN = "open"  # no key needed: never 401 or 403 (a made-up id may well be 404)

# Who calls: the key's name in the world (None: no key at all).
CALLERS = {
    "nobody": None,
    "operator": "excluder",  # operator A, which made the exclusions the table reads
    "operator-compliance": "compliance",  # A's key for its compliance team
    "other operator": "checker",  # operator B
    "register-staff": "staff",
    "regulator": "regulator",
}


def expect(operator, compliance, other, staff, regulator, nobody: str | int = DENIED) -> dict[str, str | int]:
    return {
        "nobody": nobody,
        "operator": operator,
        "operator-compliance": compliance,
        "other operator": other,
        "register-staff": staff,
        "regulator": regulator,
    }


EVERYONE = expect(OPEN, OPEN, OPEN, OPEN, OPEN, nobody=OPEN)
SCREENING = expect(OK, DENIED, OK, OK, OK)  # checks of people: reads, for operators, staff and the regulator
OWN_EXCLUSION_WRITE = expect(OK, DENIED, HIDDEN, DENIED, DENIED)
STAFF_ONLY = expect(DENIED, DENIED, DENIED, OK, DENIED)
COMPLIANCE_QUERY = expect(DENIED, 503, DENIED, 503, 503)


@dataclass
class Case:
    """The exclusions the walk acts on: ``exclusion`` (A's), ``cancelled`` (A's, for the staff cancellation)."""

    exclusion: dict
    identity: dict
    cancelled: dict


Request = Callable[[Case, str | None], dict[str, Any]]


def keyed(**fields) -> Request:
    """A request with the key in X-API-Key, fields formatted with the case."""

    def build(case: Case, key: str | None) -> dict[str, Any]:
        built: dict[str, Any] = {"headers": {"X-API-Key": key} if key else {}}
        for name, value in fields.items():
            value = value(case) if callable(value) else value
            built[name] = {**built["headers"], **value} if name == "headers" else value
        return built

    return build


def anonymous(**fields) -> Request:
    return lambda case, key: dict(fields)


def chipout_exclude(case: Case, key: str | None) -> dict[str, Any]:
    body = {"uid": new_uid(), "type": ["GAMES"], "games": ["ALL"], "duration": "+30d", "year": "1985", "gender": "F"}
    return {"json": {**({"key": key} if key else {}), **body}}


def chipout_status(case: Case, key: str | None) -> dict[str, Any]:
    return {"params": {**({"key": key} if key else {}), "uid": new_uid()}}


def fresh(body: dict | None = None) -> Callable[[Case], dict]:
    return lambda case: {"identity": someone(), **(body or {})}


EXCLUSION = "/v1/exclusions/{exclusion_id}"

# (method, path) -> (the request, what each caller gets)
TABLE: dict[tuple[str, str], tuple[Request, dict[str, str | int]]] = {
    # GAMSTOP-compatible (the alias is out of the OpenAPI document)
    ("POST", "/"): (keyed(data=lambda c: new_person()), SCREENING),
    ("POST", "/gamstop/v2"): (keyed(data=lambda c: new_person()), SCREENING),
    ("POST", "/gamstop/v2/batch"): (keyed(json=lambda c: [new_person()]), SCREENING),
    # ChipOut-compatible, both host prefixes: a missing key is ChipOut's 400
    ("POST", "/api/v1.3/exclude-customers"): (chipout_exclude, expect(OK, DENIED, OK, DENIED, DENIED, nobody=400)),
    ("POST", "/v1.3/exclude-customers"): (chipout_exclude, expect(OK, DENIED, OK, DENIED, DENIED, nobody=400)),
    ("GET", "/v1.3/customer-status"): (chipout_status, expect(OK, DENIED, OK, OK, OK, nobody=400)),
    ("GET", "/api/v1.3/customer-status"): (chipout_status, expect(OK, DENIED, OK, OK, OK, nobody=400)),
    # native
    ("POST", "/v1/exclusions"): (keyed(json=fresh({"duration": "+6m", "jurisdiction": "UK"})), expect(OK, DENIED, OK, DENIED, DENIED)),
    ("GET", EXCLUSION): (keyed(path=lambda c: c.exclusion["exclusion_id"]), expect(OK, OK, HIDDEN, OK, OK)),
    ("POST", EXCLUSION + "/extend"): (
        keyed(path=lambda c: c.exclusion["exclusion_id"], json=lambda c: {"identity": c.identity, "duration": "+12m"}),
        OWN_EXCLUSION_WRITE,
    ),
    ("POST", EXCLUSION + "/lift"): (
        keyed(path=lambda c: c.exclusion["exclusion_id"], json=lambda c: {"identity": c.identity}),
        OWN_EXCLUSION_WRITE,
    ),
    ("POST", EXCLUSION + "/cancel"): (
        keyed(path=lambda c: c.cancelled["exclusion_id"], json={"reason": "made in error (route table)"}),
        STAFF_ONLY,
    ),
    ("POST", "/v1/lifts/{lift_id}/code"): (anonymous(json={"code": "123456"}), EVERYONE),
    ("POST", "/v1/persons/status"): (keyed(json=fresh()), SCREENING),
    ("POST", "/v1/persons/history"): (keyed(json=fresh()), SCREENING),
    ("POST", "/v1/checks"): (keyed(json=fresh()), SCREENING),
    ("POST", "/v1/checks/batch"): (keyed(json=lambda c: {"persons": [{"ref": "1", "identity": someone()}]}), SCREENING),
    # A's decisions, named: A's keys, staff and the regulator read them; B's key may not.
    ("GET", "/v1/decisions"): (keyed(params=lambda c: {"operator_id": c.exclusion["_operator"]}), expect(OK, OK, DENIED, OK, OK)),
    # the register's change feed: operator platforms sync it (keyed hashes of everyone), nobody else
    ("GET", "/v1/register/changes"): (keyed(params={"limit": 1}), expect(OK, DENIED, OK, DENIED, DENIED)),
    # an exclusion a deployment forwarded here ended there: operator keys (the forwarding one); a person
    # nobody forwarded is not found
    ("POST", "/v1/register/ended"): (
        keyed(
            headers=lambda c: {"X-Selfex-Origin": "platform-x"},
            json=lambda c: {"identity": someone(), "ended_as": "lifted", "ended_at": "2030-01-01T00:00:00+00:00"},
        ),
        expect(HIDDEN, DENIED, HIDDEN, DENIED, DENIED),
    ),
    ("POST", "/v1/verifications/{exclusion_id}/documents/{document_id}/review"): (
        keyed(path=lambda c: c.exclusion["exclusion_id"], json={"approved": False, "note": "route table"}),
        STAFF_ONLY,
    ),
    # compliance queries (the audit's query API is not running in this world: an admitted key gets its 503)
    **{
        (method, "/v1/compliance" + path): (keyed(json=body) if method == "POST" else keyed(), COMPLIANCE_QUERY)
        for method, path, body in [
            ("POST", "/records", {}),
            ("POST", "/records/export", {}),
            ("POST", "/statement", {"identity": {"email": "someone@example.com"}}),
            ("GET", "/statistics", None),
        ]
    },
    # the audit chain's verification status is every operator's: staff and the regulator only
    ("GET", "/v1/compliance/verification"): (keyed(), expect(DENIED, DENIED, DENIED, 503, 503)),
    # the person's portal: no key
    **{
        (method, "/v1/portal" + path): (anonymous(json={}), EVERYONE)
        for method, path in [
            ("POST", "/exclusions"),
            ("POST", "/exclusions/{exclusion_id}/code"),
            ("POST", "/exclusions/{exclusion_id}/code/resend"),
            ("POST", "/exclusions/{exclusion_id}/documents"),
            ("GET", "/exclusions/{exclusion_id}"),
            ("POST", "/exclusions/{exclusion_id}/lift"),
            ("POST", "/lifts/{lift_id}/code"),
            ("POST", "/lifts/{lift_id}/code/resend"),
            ("GET", "/lifts/{lift_id}"),
        ]
    },
    # the excluded customer's notice link (services/gateway/web/notice_links.py): a screening read
    ("POST", "/v1/notices"): (keyed(json=lambda c: {"identity": c.identity}), SCREENING),
    # the pages for people (services/gateway/web): no key; the console's own sign-in takes a staff key
    # into its session (tests/web), so without one each page sends the browser to sign in, never a 401
    **{
        (method, path): (anonymous(), EVERYONE)
        for method, path in [
            ("GET", "/"),
            *(("GET", "/portal" + p) for p in ["", "/request", "/code", "/done", "/status", "/lift", "/document", "/notice"]),
            *(
                ("POST", "/portal" + p)
                for p in ["/panic", "/request", "/code", "/code/resend", "/status/extend", "/status/lift", "/lift", "/document"]
            ),
            *(
                ("GET", "/console" + p)
                for p in ["", "/login", "/audit", "/statement", "/statistics", "/statistics.csv", "/dead-letters", "/reviews", "/chain"]
            ),
            *(("GET", "/console" + p) for p in ["/reviews/{document_id}", "/documents/{document_id}"]),
            *(("POST", "/console" + p) for p in ["/login", "/logout", "/audit", "/audit/export", "/statement", "/reviews/{document_id}"]),
        ]
    },
    # operations and documentation
    **{
        ("GET", path): (anonymous(), EVERYONE)
        for path in ["/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"]
    },
}


def routes_of(app) -> set[tuple[str, str]]:
    """Every (method, path) the app serves: its OpenAPI document's, and the routes left out of it."""
    served = {(method.upper(), path) for path, methods in app.openapi()["paths"].items() for method in methods}
    for route in app.routes:
        served |= {(method, route.path) for method in getattr(route, "methods", None) or () if method != "HEAD"}
    return served


def concrete(path: str, given: str | None) -> str:
    """The path with its parameters filled: the given exclusion id first, made-up ids for the rest."""
    filled = path
    if given and "{exclusion_id}" in filled:
        filled = filled.replace("{exclusion_id}", given)
    filled = filled.replace("{document_id}", "doc-route-table")
    while "{" in filled:
        start, end = filled.index("{"), filled.index("}")
        filled = filled[:start] + str(uuid.uuid4()) + filled[end + 1 :]
    return filled


def holds(expected: str | int, status: int) -> bool:
    if isinstance(expected, int):
        return status == expected
    return {
        OK: 200 <= status < 300,
        DENIED: status in (401, 403),
        HIDDEN: status == 404,
        OPEN: status not in (401, 403) and status < 500,
    }[expected]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gw(servers):
    # A lift relayed with no verification service running waits out the bound: keep it short.
    async with world(servers, gateway_read_your_write_seconds=5.0) as the_world:
        yield the_world


async def excluded(gw, identity: dict, key: str = "excluder") -> dict:
    answer = await gw.client.post(
        "/v1/exclusions", json={"identity": identity, "duration": "+6m", "jurisdiction": "UK"}, headers={"X-API-Key": gw.keys[key]}
    )
    assert answer.status_code == 201, answer.text
    return answer.json()


def key_of(gw, name: str) -> dict:
    return {"X-API-Key": gw.keys[name]}


async def test_every_route_checks_who_calls_it_and_knows_no_route_it_was_not_told_of(gw):
    unknown = routes_of(gw.app) - set(TABLE)
    stale = set(TABLE) - routes_of(gw.app)
    assert not unknown, f"routes the role table does not know (add each, with what every role gets): {sorted(unknown)}"
    assert not stale, f"routes in the table the app no longer serves: {sorted(stale)}"

    identity = someone()
    case = Case(await excluded(gw, identity), identity, await excluded(gw, someone()))
    case.exclusion["_operator"] = gw.operator_ids["excluder"]
    failures = []
    for (method, path), (request, expected) in TABLE.items():
        for caller, key_name in CALLERS.items():
            built = request(case, gw.keys[key_name] if key_name else None)
            url = concrete(path, built.pop("path", None))
            answer = await gw.client.request(method, url, **built)
            if not holds(expected[caller], answer.status_code):
                failures.append(f"{method} {path} as {caller}: {answer.status_code}, expected {expected[caller]} ({answer.text[:120]})")
    assert not failures, "\n".join(failures)


async def test_another_operator_cannot_read_an_exclusion_until_it_has_checked_the_person(gw):
    identity = someone()
    view = await excluded(gw, identity)
    path = f"/v1/exclusions/{view['exclusion_id']}"

    by_maker = await gw.client.get(path, headers=key_of(gw, "excluder"))
    by_other = await gw.client.get(path, headers=key_of(gw, "checker"))
    extend_by_other = await gw.client.post(path + "/extend", json={"identity": identity, "duration": "+12m"}, headers=key_of(gw, "checker"))
    lift_by_other = await gw.client.post(path + "/lift", json={"identity": identity}, headers=key_of(gw, "checker"))
    checked = await gw.client.post("/v1/persons/status", json={"identity": identity}, headers=key_of(gw, "checker"))
    after_checking = await gw.client.get(path, headers=key_of(gw, "checker"))

    assert by_maker.status_code == 200 and by_maker.json()["exclusion_id"] == view["exclusion_id"]
    assert by_other.status_code == 404 and by_other.json()["field"] == "exclusion_id"
    assert extend_by_other.status_code == lift_by_other.status_code == 404
    assert [e["exclusion_id"] for e in checked.json()["in_force"]] == [view["exclusion_id"]]
    assert after_checking.status_code == 200, "a check that matched the exclusion made it the checker's to read"


async def test_an_operators_compliance_key_reads_its_operators_exclusions_and_decisions_only(gw):
    view = await excluded(gw, someone())

    own = await gw.client.get(f"/v1/exclusions/{view['exclusion_id']}", headers=key_of(gw, "compliance"))
    decisions = await gw.client.get("/v1/decisions", headers=key_of(gw, "compliance"))
    others = await gw.client.get("/v1/decisions", params={"operator_id": gw.operator_ids["checker"]}, headers=key_of(gw, "compliance"))
    theirs = await excluded(gw, someone(), key="checker")
    not_its_own = await gw.client.get(f"/v1/exclusions/{theirs['exclusion_id']}", headers=key_of(gw, "compliance"))

    assert own.status_code == 200 and decisions.status_code == 200
    assert others.status_code == 403
    assert not_its_own.status_code == 404


async def test_only_register_staff_review_a_document(gw):
    view = await excluded(gw, someone())
    path = f"/v1/verifications/{view['exclusion_id']}/documents/doc-1/review"

    answers = {
        name: await gw.client.post(path, json={"approved": True}, headers=key_of(gw, name))
        for name in ("checker", "excluder", "compliance", "regulator", "staff")
    }

    assert {name: a.status_code for name, a in answers.items()} == {
        "checker": 403,
        "excluder": 403,
        "compliance": 403,
        "regulator": 403,
        "staff": 202,
    }


async def test_only_register_staff_cancel_an_exclusion(gw):
    view = await excluded(gw, someone())
    path = f"/v1/exclusions/{view['exclusion_id']}/cancel"
    body = {"reason": "registered for the wrong person"}

    by_other = await gw.client.post(path, json=body, headers=key_of(gw, "checker"))
    by_maker = await gw.client.post(path, json=body, headers=key_of(gw, "excluder"))
    by_regulator = await gw.client.post(path, json=body, headers=key_of(gw, "regulator"))
    by_staff = await gw.client.post(path, json=body, headers=key_of(gw, "staff"))

    assert by_other.status_code == by_maker.status_code == by_regulator.status_code == 403
    assert by_staff.status_code == 200 and by_staff.json()["state"] == "cancelled"


async def test_the_regulator_reads_everything_and_writes_nothing(gw):
    identity = someone()
    view = await excluded(gw, identity)
    path = f"/v1/exclusions/{view['exclusion_id']}"
    regulator = key_of(gw, "regulator")

    read = await gw.client.get(path, headers=regulator)
    decisions = await gw.client.get("/v1/decisions", params={"operator_id": gw.operator_ids["excluder"]}, headers=regulator)
    unnamed = await gw.client.get("/v1/decisions", headers=regulator)
    writes = [
        await gw.client.post("/v1/exclusions", json={"identity": someone(), "duration": "+6m", "jurisdiction": "UK"}, headers=regulator),
        await gw.client.post(path + "/extend", json={"identity": identity, "duration": "+12m"}, headers=regulator),
        await gw.client.post(path + "/lift", json={"identity": identity}, headers=regulator),
        await gw.client.post(path + "/cancel", json={"reason": "no"}, headers=regulator),
    ]
    chipout = await gw.client.post(
        "/api/v1.3/exclude-customers",
        json={
            "key": gw.keys["regulator"],
            "uid": new_uid(),
            "type": ["GAMES"],
            "games": ["ALL"],
            "duration": "+30d",
            "year": "1985",
            "gender": "F",
        },
    )

    assert read.status_code == 200 and read.json()["exclusion_id"] == view["exclusion_id"]
    assert decisions.status_code == 200 and unnamed.status_code == 400
    assert [w.status_code for w in writes] == [403, 403, 403, 403]
    assert chipout.status_code == 401, "ChipOut knows no 403: a key that may not exclude is a wrong key there"


async def test_a_key_stored_with_scopes_before_roles_still_works_as_an_operator(gw):
    key = new_key()
    # As a key was stored before roles: scopes, no roles (nothing rewrites it; it reads as the operator role).
    await gw.database["operators"].insert_one(
        {
            "_id": f"op-{uuid.uuid4().hex[:12]}",
            "name": f"old-{gw.settings.mongo_db}",
            "scopes": ["check", "exclude"],
            "key_hash": key_hash(key),
            "key_prefix": key[:8],
            "created_at": utcnow(),
            "rotated_at": None,
            "revoked_at": None,
        }
    )
    old = {"X-API-Key": key}

    checked = await gw.client.post("/", data=new_person(), headers=old)
    created = await gw.client.post("/v1/exclusions", json={"identity": someone(), "duration": "+6m", "jurisdiction": "UK"}, headers=old)
    reviewed = await gw.client.post(f"/v1/verifications/{uuid.uuid4()}/documents/d/review", json={"approved": True}, headers=old)

    assert checked.status_code == 200 and created.status_code == 201
    assert (await gw.client.get(created.headers["Location"], headers=old)).status_code == 200
    assert reviewed.status_code == 403
    rotated = await rotate(MongoOperators(gw.database), f"old-{gw.settings.mongo_db}")
    stored = await gw.database["operators"].find_one({"name": f"old-{gw.settings.mongo_db}"})
    assert stored["roles"] == ["operator"] and "scopes" not in stored, "a rotation stores the roles the scopes read as"
    assert (await gw.client.post("/", data=new_person(), headers={"X-API-Key": rotated.key})).status_code == 200
