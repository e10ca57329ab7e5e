"""The self-service portal over real HTTP, with the verification service on the real broker and store.

The portal runs in the whole gateway app, which answers from its own views fed by the lifecycle and
verification topics. Registration is played by a stand-in that announces what it announces for a
portal request (ExclusionRequested, caused by the request) and writes nothing the gateway could read.
"""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import pytest_asyncio

from services.gateway import portal
from services.gateway.app import create_app as gateway_app
from services.gateway.repository import MongoIdentityDocuments
from shared import topics
from shared.events import (
    SCOPE_ALL,
    DocumentReviewedPayload,
    ExclusionLiftRequested,
    ExclusionRequested,
    ExclusionSnapshot,
    ExclusionState,
    RequestExclusion,
    ReviewDocument,
    derived_id,
)
from shared.identity import Hasher
from shared.infra import free_port
from shared.policies import load_policies
from tests.gateway.conftest import serving
from tests.support import TopicReader, eventually
from tests.verification.conftest import raw_bytes

pytestmark = pytest.mark.integration

EMAIL = "anna.svensson@example.se"
PERSONNUMMER = "199001011234"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(256)) * 4
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"


async def stand_in_registration(running, hasher: Hasher, policies, stop: asyncio.Event) -> None:
    """For each portal request: its ExclusionRequested (nothing stored where the gateway could read it)."""
    async with TopicReader(running.settings, topics.EXCLUSION_COMMANDS) as commands:
        handled: set[str] = set()
        while not stop.is_set():
            await commands._drain()
            for message in commands.messages():
                if message["id"] in handled or message["type"] != "exclusion.request":
                    continue
                handled.add(message["id"])
                command = RequestExclusion.model_validate(message)
                identifiers = sorted(hasher.identifiers(command.payload.identity).values())
                exclusion_id, person_id = derived_id(command.id, "exclusion"), f"person-{identifiers[0][-12:]}"
                now = running.clock()
                await running.publisher.event(
                    ExclusionRequested.caused_by(
                        command,
                        source="registration",
                        subject=person_id,
                        payload=ExclusionSnapshot(
                            exclusion_id=exclusion_id,
                            identifiers=identifiers,
                            scope=command.payload.scope,
                            jurisdiction=command.payload.jurisdiction,
                            state=ExclusionState.PENDING_VERIFICATION,
                            starts_at=now,
                            duration=command.payload.duration,
                            channel=command.payload.effective_channel(),
                            verify_by=command.payload.verify_by,
                            document_check=policies[command.payload.jurisdiction].document_check,
                            created_at=now,
                        ),
                    )
                )
            await asyncio.sleep(0.05)


@pytest_asyncio.fixture
async def portal_url(running):
    """The whole gateway app (the portal and the consumers that feed its views) served by uvicorn on a free port."""
    settings = running.settings.model_copy(update={"gateway_feed_max_lag_seconds": 30.0})
    app = gateway_app(settings, database=running.database)
    stop = asyncio.Event()
    registration = asyncio.create_task(stand_in_registration(running, Hasher.from_settings(settings), load_policies(), stop))
    port = free_port()
    try:
        async with serving(app, port):
            yield f"http://127.0.0.1:{port}/v1/portal"
    finally:
        stop.set()
        await registration


@pytest_asyncio.fixture
async def http(portal_url):
    async with httpx.AsyncClient(base_url=portal_url, timeout=30.0) as client:
        yield client


def exclusion_request(**changes) -> dict:
    body = {"national_id": PERSONNUMMER, "email": EMAIL, "duration": "+30d", "jurisdiction": "SE", "verify_by": "email", "locale": "sv"}
    return {k: v for k, v in (body | changes).items() if v is not None}


async def requested(http, running, **changes) -> str:
    answer = await http.post("/exclusions", json=exclusion_request(**changes))
    assert answer.status_code == 202, answer.text
    exclusion_id = answer.json()["exclusion_id"]
    await shown_when(http, exclusion_id, lambda body: body["verification"] is not None, what="the verification to show")
    return exclusion_id


async def shown_when(http, exclusion_id: str, holds, *, what: str) -> dict:
    """The portal's view of the exclusion once ``holds`` (its views are fed from the topics)."""

    async def probe():
        answer = await http.get(f"/exclusions/{exclusion_id}")
        return answer.json() if answer.status_code == 200 and holds(answer.json()) else None

    return await eventually(probe, what=what)


async def test_a_person_asks_for_an_exclusion_and_confirms_it_with_the_emailed_code(http, running):
    answer = await http.post("/exclusions", json=exclusion_request())
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert (body["state"], body["verification"]) == ("pending_verification", "code")
    exclusion_id = body["exclusion_id"]
    code = await running.code(uuid.UUID(exclusion_id))
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"

    refused = await http.post(f"/exclusions/{exclusion_id}/code", json={"code": wrong})
    confirmed = await http.post(f"/exclusions/{exclusion_id}/code", json={"code": code})
    again = await http.post(f"/exclusions/{exclusion_id}/code", json={"code": code})
    shown = await http.get(f"/exclusions/{exclusion_id}")

    assert refused.status_code == 400
    assert refused.json() | {"exclusion_id": None} == {
        "status": "wrong_code",
        "reason": "wrong code: 4 attempts left",
        "error": "wrong code: 4 attempts left",
        "attempts_left": 4,
        "exclusion_id": None,
    }
    assert confirmed.status_code == 200 and confirmed.json()["status"] == "verified"
    assert again.status_code == 409 and "already used" in again.json()["error"]
    assert shown.status_code == 200
    assert shown.json()["verification"]["state"] == "verified" and shown.json()["state"] == "pending_verification"
    [verified] = await running.results_for(uuid.UUID(exclusion_id), count=1, type="exclusion.verified")
    assert verified["payload"]["method"] == "code"

    # Only the entry point carries the person's contact; no topic carries the code in clear.
    for topic in topics.ALL:
        raw = await raw_bytes(running.settings, topic)
        assert code.encode() not in raw and wrong.encode() not in raw, f"a code in clear on {topic}"
        if topic != topics.EXCLUSION_COMMANDS:
            assert EMAIL.encode() not in raw and PERSONNUMMER.encode() not in raw, f"raw identity on {topic}"


async def test_a_late_code_is_gone_and_the_request_fails_on_the_timer(http, running):
    exclusion_id = await requested(http, running)
    code = await running.code(uuid.UUID(exclusion_id))
    running.clock.advance(minutes=15, seconds=1)

    late = await http.post(f"/exclusions/{exclusion_id}/code", json={"code": code})

    assert late.status_code == 410 and "expired" in late.json()["error"]
    assert (await http.get(f"/exclusions/{exclusion_id}")).json()["verification"]["state"] == "awaiting_code"
    await running.app.timers.tick(running.clock())
    [failed] = await running.results_for(uuid.UUID(exclusion_id), count=1, type="verification.failed")
    assert failed["payload"]["reason"] == "expired"
    await shown_when(http, exclusion_id, lambda body: body["verification"]["state"] == "failed", what="the failure to show")


async def test_three_new_codes_at_most_by_sms(http, running):
    exclusion_id = await requested(http, running, mobile="+46701234567", verify_by="sms")

    answers = [await http.post(f"/exclusions/{exclusion_id}/code/resend") for _ in range(4)]

    assert [a.status_code for a in answers] == [202, 202, 202, 429]
    assert [a.json().get("resends_left") for a in answers[:3]] == [2, 1, 0]
    assert "at most 3" in answers[3].json()["error"]
    codes = await running.sent_codes(uuid.UUID(exclusion_id), count=4)
    assert (await http.post(f"/exclusions/{exclusion_id}/code", json={"code": codes[-1]})).status_code == 200


async def test_a_document_is_uploaded_sealed_and_the_review_decides(http, running):
    exclusion_id = await requested(http, running, jurisdiction="DE", duration="+3m", verify_by=None)
    assert (await http.get(f"/exclusions/{exclusion_id}")).json()["verification"]["method"] == "document"

    # The declared type is ignored: the bytes say PDF.
    uploaded = await http.post(f"/exclusions/{exclusion_id}/documents", files={"file": ("id.png", PDF, "image/png")})

    assert uploaded.status_code == 202, uploaded.text
    document_id = uploaded.json()["document_id"]
    stored = await MongoIdentityDocuments(running.database).get(document_id)
    assert stored["content_type"] == "application/pdf" and stored["size"] == len(PDF)
    assert b"%PDF" not in stored["sealed"].encode()
    assert running.sealer.open(stored["sealed"], f"document:{document_id}") == PDF
    assert (await http.get(f"/exclusions/{exclusion_id}")).json()["verification"]["state"] == "awaiting_review"
    second = await http.post(f"/exclusions/{exclusion_id}/documents", files={"file": ("id.png", PNG, "image/png")})
    assert second.status_code == 409

    # The compliance reviewer's decision arrives as the gateway's review endpoint publishes it.
    review = DocumentReviewedPayload(exclusion_id=uuid.UUID(exclusion_id), document_id=document_id, approved=True, reviewer="staff-1")
    await running.send(ReviewDocument(source="gateway", payload=review))

    await shown_when(http, exclusion_id, lambda body: body["verification"]["state"] == "verified", what="the verification to show")
    [verified] = await running.results_for(uuid.UUID(exclusion_id), count=1, type="exclusion.verified")
    assert verified["payload"]["method"] == "document"


async def test_an_upload_is_judged_by_its_bytes_and_its_size(http, running):
    exclusion_id = await requested(http, running, jurisdiction="DE", duration="+3m", verify_by=None)
    url = f"/exclusions/{exclusion_id}/documents"

    disguised = await http.post(url, files={"file": ("id.png", b"MZ\x90\x00 not an image at all", "image/png")})
    too_large = await http.post(url, files={"file": ("id.png", PNG + bytes(10 * 1024 * 1024), "image/png")})
    no_file = await http.post(url, data={"note": "x"})
    empty = await http.post(url, files={"file": ("id.png", b"", "image/png")})
    on_a_code_request = await http.post(
        f"/exclusions/{await requested(http, running)}/documents", files={"file": ("id.png", PNG, "image/png")}
    )

    assert (disguised.status_code, disguised.json()["field"]) == (400, "file")
    assert "PDF, JPEG or PNG" in disguised.json()["error"]
    assert too_large.status_code == 413
    assert (no_file.status_code, empty.status_code) == (400, 400)
    assert on_a_code_request.status_code == 409
    assert await running.database["identity_documents"].count_documents({}) == 0
    assert (await http.get(f"/exclusions/{exclusion_id}")).json()["verification"]["state"] == "awaiting_document"


MALFORMED = [
    (exclusion_request(duration=None), "duration"),
    (exclusion_request(duration="+13x"), "duration"),
    (exclusion_request(duration="+0d"), "duration"),
    (exclusion_request(jurisdiction="UK", duration="+30d"), "duration"),
    (exclusion_request(jurisdiction="XX"), "jurisdiction"),
    (exclusion_request(national_id=None, email=None, verify_by=None, first_name="Anna"), "identity"),
    (exclusion_request(verify_by="sms"), "verify_by"),
    (exclusion_request(email=None, verify_by=None), "verify_by"),
    (exclusion_request(verify_by="pigeon"), "verify_by"),
    (exclusion_request(email="not-an-address"), "email"),
    (exclusion_request(mobile="12"), "mobile"),
    (exclusion_request(mobile="+46 not a number"), "mobile"),
    (exclusion_request(national_id="1990"), "national_id"),
    (exclusion_request(scope={"types": ["BINGO"]}), "scope.types.0"),
    (exclusion_request(jurisdiction="DE", duration="+3m", scope={"types": ["ADS"]}), "scope"),
    (exclusion_request(date_of_birth="31/01/1990"), "date_of_birth"),
    (exclusion_request(duration=30), "duration"),
    (exclusion_request(nickname="annie"), "nickname"),
    (exclusion_request(locale="x" * 40), "locale"),
    ([1, 2], "body"),
]


async def test_a_malformed_request_is_a_400_naming_the_field_and_nothing_is_published(http, running):
    answers = [(await http.post("/exclusions", json=body), field) for body, field in MALFORMED]
    not_json = await http.post("/exclusions", content=b"{nope", headers={"content-type": "application/json"})

    for answer, field in answers:
        assert (answer.status_code, answer.json().get("field")) == (400, field), answer.text
        assert answer.json()["error"]
    assert (not_json.status_code, not_json.json()["field"]) == (400, "body")
    assert b"exclusion.request" not in await raw_bytes(running.settings, topics.EXCLUSION_COMMANDS)


async def test_codes_are_checked_for_form_and_exclusions_for_existence(http, running):
    exclusion_id = await requested(http, running)

    assert (await http.post(f"/exclusions/{exclusion_id}/code", json={"code": "12ab56"})).json()["field"] == "code"
    assert (await http.post(f"/exclusions/{exclusion_id}/code", json={})).status_code == 400
    assert (await http.post("/exclusions/not-a-uuid/code", json={"code": "123456"})).json()["field"] == "exclusion_id"
    assert (await http.post(f"/exclusions/{uuid.uuid4()}/code", json={"code": "123456"})).status_code == 404
    assert (await http.post(f"/exclusions/{uuid.uuid4()}/code/resend")).status_code == 404
    assert (await http.get(f"/exclusions/{uuid.uuid4()}")).status_code == 404
    assert (await http.get(f"/exclusions/{exclusion_id}")).json()["verification"]["attempts_left"] == 5


async def test_the_person_sees_a_delayed_lift_with_its_date_and_nothing_personal(http, running):
    exclusion_id, starts = str(uuid.uuid4()), datetime(2025, 1, 31, 12, tzinfo=UTC)
    await running.publisher.event(
        ExclusionLiftRequested(
            source="registration",
            subject="person-9",
            payload=ExclusionSnapshot(
                exclusion_id=uuid.UUID(exclusion_id),
                identifiers=["email:00ff"],
                scope=SCOPE_ALL,
                jurisdiction="DE",
                duration="+3m",
                state=ExclusionState.LIFT_REQUESTED,
                starts_at=starts,
                ends_at=None,
                minimum_until=starts + timedelta(days=90),
                lift_effective_at=starts + timedelta(days=97),
                version=4,
            ),
        )
    )
    await shown_when(http, exclusion_id, lambda body: True, what="the exclusion to show")

    shown = await http.get(f"/exclusions/{exclusion_id}")

    assert shown.status_code == 200
    assert shown.json() == {
        "exclusion_id": exclusion_id,
        "state": "lift_requested",
        "jurisdiction": "DE",
        "duration": "+3m",
        "starts_on": "2025-01-31",
        "ends_on": None,
        "minimum_until": "2025-05-01",
        "lift_effective_at": "2025-05-08T12:00:00+00:00",
        "verification": None,
    }
    assert "person-9" not in shown.text and "00ff" not in shown.text


async def test_a_request_still_in_flight_after_the_bound_answers_processing(http, running, monkeypatch):
    monkeypatch.setattr(portal, "READ_YOUR_WRITE_SECONDS", 0.0)

    answer = await http.post("/exclusions", json=exclusion_request(national_id=None, email="late@example.se"))

    assert answer.status_code == 202 and answer.json()["status"] == "processing"
    request_id = answer.json()["request_id"]
    await shown_when(
        http,
        str(derived_id(uuid.UUID(request_id), "exclusion")),
        lambda body: body["state"] == "pending_verification",
        what="the exclusion",
    )
