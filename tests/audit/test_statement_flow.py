"""A person's statement covers every step of the end-to-end flow, on the real broker and store with
every service running: a login the operator reports (ALLOW), the person's portal request, the code
mailed and confirmed (verification), the exclusion in force (activation), the operator told to end
the account's sessions (enforcement), the start letter (notification), a later login (BLOCK), an
extension by the operator and the person's lift request with its code (lift), each with its date
and time, in order; the operator's compliance key sees its own part of it only."""

import re
import uuid
from contextlib import AsyncExitStack
from datetime import datetime

import pytest

from services.audit.query import create_app as query_app
from services.blocking.app import create_app as blocking_app
from services.notification.app import create_app as notification_app
from services.verification.app import create_app as verification_app
from shared.broker import ensure_operator_topics
from shared.events import AccountEventKind, AccountEventOccurred, AccountEventPayload
from shared.identity import Identity
from shared.infra import free_port
from tests.gateway.conftest import serving, world
from tests.notification.sinks import SmtpSink, text_of
from tests.support import Publisher, eventually

pytestmark = pytest.mark.integration

TOKEN = "statement-test-token-0123456789abcdefghijkl"
STEPS = ("request", "verification", "activation", "extension", "lift", "decision", "enforcement", "notification")


def login(operator_id: str, identity: Identity) -> AccountEventOccurred:
    return AccountEventOccurred(
        source="operator-test",
        operator_id=operator_id,
        payload=AccountEventPayload(
            operator_event_id=f"evt-{uuid.uuid4().hex[:8]}", account_id="acct-7", kind=AccountEventKind.LOGIN, identity=identity
        ),
    )


async def test_the_statement_of_one_person_covers_every_step_of_the_flow(servers):
    smtp = SmtpSink().start()
    port = free_port()
    national_id, email = f"19{uuid.uuid4().int % 10**10:010d}", f"lova.{uuid.uuid4().hex[:8]}@example.se"
    identity = Identity(national_id=national_id, email=email)
    try:
        async with (
            world(
                servers,
                audit=True,
                audit_query_port=port,
                audit_query_token=TOKEN,
                smtp_port=smtp.port,
                notification_quiet_hours={},
                notification_timer_seconds=0,
                registration_timer_seconds=1.0,
            ) as w,
            AsyncExitStack() as stack,
        ):
            client = w.database.client
            for name, app in (("verification", verification_app), ("blocking", blocking_app), ("notification", notification_app)):
                await stack.enter_async_context(app(w.settings, database=client[f"{w.settings.mongo_db}_{name}"]))
                stack.push_async_callback(client.drop_database, f"{w.settings.mongo_db}_{name}")
            await stack.enter_async_context(serving(query_app(w.settings, database=w.database), port))
            operator = w.operator_ids["excluder"]
            await ensure_operator_topics(w.settings, operator)
            publisher = await stack.enter_async_context(Publisher(w.settings))
            regulator, compliance = {"X-API-Key": w.keys["regulator"]}, {"X-API-Key": w.keys["compliance"]}
            person = {"identity": {"national_id": national_id, "email": email}}

            async def statement(headers=regulator, **params) -> dict:
                answer = await w.client.post("/v1/compliance/statement", json=person, headers=headers, params=params)
                assert answer.status_code == 200, answer.text
                return answer.json() if not params else {"html": answer.text}

            async def audited(step: str, count: int = 1, **details) -> bool:
                entries = (await statement())["entries"]
                return len([e for e in entries if e["step"] == step and details.items() <= e["details"].items()]) >= count

            await publisher.event(login(operator, identity))  # before the exclusion: allowed, and the account is known
            await eventually(lambda: audited("decision", outcome="ALLOW"), timeout=60, what="the first login's ALLOW")

            requested = await w.client.post(
                "/v1/portal/exclusions",
                json={"national_id": national_id, "email": email, "duration": "+30d", "jurisdiction": "SE", "verify_by": "email"},
            )
            assert requested.status_code == 202, requested.text
            exclusion_id = requested.json()["exclusion_id"]
            [mail] = await eventually(lambda: _now(smtp.to(email)), timeout=60, what="the code's mail")
            code = re.search(r"(\d{6})", text_of(mail))
            assert code, text_of(mail)
            confirmed = await w.client.post(f"/v1/portal/exclusions/{exclusion_id}/code", json={"code": code.group(1)})
            assert confirmed.status_code in (200, 202), confirmed.text  # 202: verified, not yet read back within the bound
            await eventually(lambda: audited("enforcement"), timeout=60, what="the operator told to end the sessions")

            await publisher.event(login(operator, identity))  # while excluded: blocked
            await eventually(lambda: audited("decision", outcome="BLOCK"), timeout=60, what="the second login's BLOCK")
            await eventually(lambda: audited("notification", outcome="sent"), timeout=60, what="a letter's delivery")

            operator_key = {"X-API-Key": w.keys["excluder"]}
            checked = await w.client.post("/v1/persons/status", json={"identity": {"email": email}}, headers=operator_key)
            assert checked.status_code == 200, checked.text  # the operator checked the person: it may extend their exclusion
            extended = await w.client.post(
                f"/v1/exclusions/{exclusion_id}/extend", json={"identity": {"email": email}, "duration": "+60d"}, headers=operator_key
            )
            assert extended.status_code in (200, 202), extended.text
            mails_before = len(smtp.to(email))
            lifting = await w.client.post(f"/v1/portal/exclusions/{exclusion_id}/lift", json={"email": email, "verify_by": "email"})
            assert lifting.status_code == 202, lifting.text

            async def lift_code():
                for mail in smtp.to(email)[mails_before:]:
                    if found := re.search(r"Din engångskod är (\d{6})\.", text_of(mail)):
                        return found.group(1)
                return None

            answered = await w.client.post(f"/v1/portal/lifts/{lifting.json()['lift_id']}/code", json={"code": await eventually(lift_code)})
            assert answered.status_code in (200, 202, 409), answered.text  # SE: refused before the end, which is the policy's answer
            await eventually(lambda: audited("extension"), timeout=60, what="the extension")
            await eventually(lambda: audited("lift", 2), timeout=60, what="the lift's request and the policy's answer")

            made = await statement()
            entries = made["entries"]
            steps = [e["step"] for e in entries]
            assert set(STEPS) <= set(steps), steps
            moments = [datetime.fromisoformat(e["occurred_at"]) for e in entries]
            assert moments == sorted(moments), "in the order things happened"
            first = {step: steps.index(step) for step in STEPS}
            assert first["decision"] < first["request"] < first["verification"] < first["activation"] < first["enforcement"]
            assert first["activation"] < first["extension"] < first["lift"]
            assert [e["details"]["outcome"] for e in entries if e["type"] == "decision.made"] == ["ALLOW", "BLOCK"]
            assert made["exclusions"] == [exclusion_id]
            assert all(e["occurred_at"] and e["record"]["hash"] for e in entries)

            html = (await statement(format="html"))["html"]
            assert all(e["what"] in html for e in entries) and national_id not in html and email not in html

            own = (await statement(headers=compliance))["entries"]
            assert own and {e["operator_id"] for e in own} == {operator}
            assert {"decision", "enforcement"} <= {e["step"] for e in own} and "verification" not in {e["step"] for e in own}
    finally:
        smtp.stop()


async def _now(value):
    return value
