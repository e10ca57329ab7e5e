"""Audit on the real broker and store: an event type it does not know may carry anything, so only its
envelope and a digest of its payload are kept, never the payload as it came."""

import hashlib
import json
import uuid

import pytest

from services.audit.app import create_app
from shared import topics
from shared.broker import ensure_operator_topics
from tests.support import Publisher, eventually

pytestmark = pytest.mark.integration

RAW = {
    "name": "Astrid Lindqvist",
    "email": "astrid.lindqvist@example.se",
    "mobile": "+46701234567",
    "date_of_birth": "1990-04-01",
    "personnummer": "199004011234",
}


async def test_an_unknown_event_type_is_audited_as_its_envelope_and_a_digest_of_its_payload(settings, database):
    event_id = str(uuid.uuid4())
    unknown = {"id": event_id, "type": "partner.customer_imported", "version": 1, "source": "partner", "payload": RAW}
    await ensure_operator_topics(settings, "op-1")  # audit reads every operator's topics too
    async with create_app(settings, database=database), Publisher(settings) as publish:
        await publish.raw(topics.of_operator("op-1", topics.ACCOUNT_EVENTS), json.dumps(unknown).encode(), key=b"k")
        entry = await eventually(lambda: database["audit_log"].find_one({"_id": event_id}), what="the unknown event audited")

    stored = json.dumps(entry, default=str)
    for value in RAW.values():
        assert value not in stored, f"{value!r} reached the audit log"
    event = json.loads(entry["body"])["event"]
    assert (entry["type"], event["type"], event["source"]) == ("partner.customer_imported", "partner.customer_imported", "partner")
    canonical = json.dumps(RAW, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert event["payload"] == {"withheld": "unknown event type", "sha256": hashlib.sha256(canonical).hexdigest(), "size": len(canonical)}
