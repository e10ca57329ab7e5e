"""The document-review queue, from the gateway's own collections: the verifications waiting for a
review (``verification_views``, fed by verification's events) and the documents people uploaded to
the portal (``identity_documents``, sealed). A decision is a ``ReviewDocument`` command on Kafka, as
the native API's review route sends it; verification decides, and its event updates the view."""

import asyncio
import time
import uuid
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from services.gateway.access import Operator
from services.gateway.repository import MongoIdentityDocuments, MongoVerificationViews
from shared.crypto import Sealer
from shared.events import DocumentReviewedPayload, ReviewDocument

QUEUE_LIMIT = 200
WAIT_SECONDS = 5.0


async def waiting(db: AsyncDatabase) -> list[dict[str, Any]]:
    """Each verification waiting for a review, with the document it waits on, oldest upload first."""
    views = await db["verification_views"].find({"state": "awaiting_review", "lift": False}).to_list(QUEUE_LIMIT)
    ids = [view["_id"] for view in views]
    documents = await db["identity_documents"].find({"exclusion_id": {"$in": ids}}, {"sealed": 0}).to_list(None) if ids else []
    newest: dict[str, dict[str, Any]] = {}
    for document in documents:
        held = newest.get(document["exclusion_id"])
        if held is None or str(document.get("uploaded_at")) > str(held.get("uploaded_at")):
            newest[document["exclusion_id"]] = document
    return sorted(newest.values(), key=lambda d: str(d.get("uploaded_at")))


async def document(db: AsyncDatabase, sealer: Sealer, document_id: str) -> tuple[dict[str, Any], bytes] | None:
    """A document and its bytes, opened with the deployment's key; None if there is no such document."""
    found = await MongoIdentityDocuments(db).get(document_id)
    if found is None:
        return None
    return found, sealer.open(found["sealed"], f"document:{document_id}")


async def decide(publish, db: AsyncDatabase, reviewer: Operator, document: dict[str, Any], *, approved: bool, note: str | None) -> str:
    """Send the review; the verification's state once verification has taken it (or as it was, after the bound)."""
    command = ReviewDocument(
        source="gateway",
        operator_id=reviewer.id,
        payload=DocumentReviewedPayload(
            exclusion_id=uuid.UUID(document["exclusion_id"]),
            document_id=document["_id"],
            approved=approved,
            reviewer=reviewer.name[:200],
            note=note,
        ),
    )
    await publish(command)
    views = MongoVerificationViews(db)
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        view = await views.get(document["exclusion_id"])
        state = str(view.get("state")) if view else "unknown"
        if state != "awaiting_review" or time.monotonic() >= deadline:
            return state
        await asyncio.sleep(0.05)
