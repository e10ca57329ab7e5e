"""No raw personal data in the audit's collections: known values fed through the entry points (an
operator-attested and a portal exclusion request with a third party and a support person, a lift
request, an account event, a record that breaks its contract, one that is not JSON, an unknown
event type), with registration turning them into lifecycle events and notification requests, and
audit writing checkpoints; then every document of every audit collection is scanned for them."""

import json
import uuid

import pytest
from pydantic import SecretStr

from services.audit.app import create_app as create_audit
from services.audit.repository import LOG
from services.registration.app import create_app as create_registration
from shared import topics
from shared.broker import ensure_operator_topics
from shared.events import (
    AccountEventKind,
    AccountEventOccurred,
    AccountEventPayload,
    ExclusionRequestedPayload,
    LiftRequestedPayload,
    RequestExclusion,
    RequestLift,
    SupportPerson,
    ThirdPartyApplication,
)
from shared.identity import Identity
from shared.store import create_client
from tests.audit.test_verify import SIGNING_KEY
from tests.support import Publisher, eventually

pytestmark = pytest.mark.integration

EMAIL, FIRST, LAST, MOBILE, DOB, NATIONAL_ID = (
    "Ingrid.Bergqvist@Example.se",
    "Ingrid",
    "Bergqvist",
    "+46 70 555 12 34",
    "1987-06-15",
    "198706151234",
)
APPLICANT, SUPPORT_NAME, SUPPORT_EMAIL = "Magnus Bergqvist", "Sofia Lindgren", "sofia.lindgren@example.se"
# Each value, and the forms it is normalised to before hashing: none may appear.
FORBIDDEN = {
    EMAIL,
    EMAIL.lower(),
    FIRST,
    LAST,
    f"{FIRST} {LAST}",
    MOBILE,
    MOBILE.replace(" ", ""),
    "705551234",
    DOB,
    DOB.replace("-", ""),
    NATIONAL_ID,
    "19870615-1234",
    APPLICANT,
    SUPPORT_NAME,
    SUPPORT_EMAIL,
}
IDENTITY = Identity(
    national_id=NATIONAL_ID, first_name=FIRST, last_name=LAST, date_of_birth=DOB, postcode="114 55", email=EMAIL, mobile=MOBILE
)


def entry_messages() -> list[tuple[str, bytes]]:
    attested = RequestExclusion(
        source="gateway", payload=ExclusionRequestedPayload(identity=IDENTITY, duration="+30d", attested=True, jurisdiction="SE")
    )
    third_party = RequestExclusion(
        source="gateway",
        payload=ExclusionRequestedPayload(
            identity=IDENTITY,
            duration="+12m",
            jurisdiction="SE",
            third_party=ThirdPartyApplication(applicant="family", applicant_name=APPLICANT, reason="worried family"),
            support_persons=[SupportPerson(name=SUPPORT_NAME, email=SUPPORT_EMAIL)],
        ),
    )
    lift = RequestLift(source="gateway", payload=LiftRequestedPayload(identity=IDENTITY))
    account = AccountEventOccurred(
        source="op-1",
        operator_id="op-1",
        payload=AccountEventPayload(operator_event_id="e-1", account_id="acc-1", kind=AccountEventKind.LOGIN, identity=IDENTITY),
    )
    broken = {**json.loads(account.model_dump_json()), "id": str(uuid.uuid4())}
    broken["payload"]["kind"] = "not-a-kind"  # breaks the contract: dead-lettered, and the dead letter audited
    unknown = {
        "id": str(uuid.uuid4()),
        "type": "partner.customer_imported",
        "source": "partner",
        "payload": {"email": EMAIL, "mobile": MOBILE, "dob": DOB},
    }
    not_json = f"name={FIRST} {LAST};email={EMAIL};id={NATIONAL_ID}".encode()
    return [
        (topics.EXCLUSION_COMMANDS, attested.model_dump_json().encode()),
        (topics.EXCLUSION_COMMANDS, third_party.model_dump_json().encode()),
        (topics.EXCLUSION_COMMANDS, lift.model_dump_json().encode()),
        (topics.of_operator("op-1", topics.ACCOUNT_EVENTS), account.model_dump_json().encode()),
        (topics.of_operator("op-1", topics.ACCOUNT_EVENTS), json.dumps(broken).encode()),
        (topics.GATEWAY_REQUESTS, json.dumps(unknown).encode()),
        (topics.GATEWAY_REQUESTS, not_json),
    ]


async def test_no_raw_personal_data_reaches_any_audit_collection(settings, database):
    settings = settings.model_copy(
        update={
            "audit_signing_key": SecretStr(SIGNING_KEY),
            "audit_checkpoint_seconds": 0.2,
            "registration_timer_seconds": 0.0,
            "consumer_retry_round_seconds": 5.0,
        }
    )
    await ensure_operator_topics(settings, "op-1")
    client = create_client(settings)
    registration = client[f"{settings.mongo_db}_registration"]
    try:
        async with (
            create_audit(settings, database=database),
            create_registration(settings, database=registration),
            Publisher(settings) as publish,
        ):
            for topic, value in entry_messages():
                await publish.raw(topic, value, key=b"k")

            async def everything_audited():
                types = set(await database[LOG].distinct("type"))
                checkpoints = await database["audit_checkpoints"].count_documents({})
                wanted = {
                    "exclusion.request",
                    "exclusion.lift_request",
                    "account.event",
                    "partner.customer_imported",
                    "message.dead_lettered",
                    "exclusion.activated",
                }
                # Dead-lettered and audited: by audit, the broken account event and the non-JSON record;
                # by registration, the unproven lift (and a request its policy refuses, if it does).
                dead_letters = await database[LOG].count_documents({"type": "message.dead_lettered"})
                return wanted <= types and checkpoints > 0 and dead_letters >= 3

            await eventually(
                everything_audited, timeout=60, what="the entry messages, their dead letters and lifecycle events audited, and a checkpoint"
            )
    finally:
        await client.drop_database(registration.name)
        await client.close()

    scanned = 0
    for name in await database.list_collection_names():
        if not name.startswith("audit"):
            continue
        async for document in database[name].find({}):
            text = json.dumps(document, default=str).lower()
            body = json.loads(document["body"]) if "body" in document else None
            text += json.dumps(body, ensure_ascii=False).lower() if body else ""  # the body's strings unescaped too
            for forbidden in FORBIDDEN:
                assert forbidden.lower() not in text, f"{forbidden!r} found in {name} {document['_id']}"
            scanned += 1
    assert scanned >= 10
