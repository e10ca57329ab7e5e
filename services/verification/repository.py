"""Verifications and submission outcomes in MongoDB: the only code that knows these collections'
shapes (uploaded documents are the gateway's).

verifications            _id = exclusion id, or a lift verification's id (``Verification.key``); the Verification model, plus ``next_check_at`` (indexed:
                         the timer's work list). Written whole, conditional on ``version``.
verification_submissions _id = the submission's event id; the SubmissionOutcome model (what the portal reads).
"""

import uuid
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.verification.domain import SubmissionOutcome, Verification, next_check_at

SUBMISSIONS_RETENTION_SECONDS = 30 * 24 * 3600

INDEXES = {
    "verifications": [IndexModel([("next_check_at", ASCENDING)]), IndexModel([("subject", ASCENDING)])],
    "verification_submissions": [IndexModel([("recorded", ASCENDING)], expireAfterSeconds=SUBMISSIONS_RETENTION_SECONDS)],
}
_DATETIMES = ("created_at", "updated_at", "code_expires_at")


class MongoVerifications:
    def __init__(self, database: AsyncDatabase) -> None:
        self._collection = database["verifications"]

    async def get(self, key: uuid.UUID | str) -> Verification | None:
        """By ``Verification.key``: the exclusion's id, or a lift verification's id."""
        document = await self._collection.find_one({"_id": str(key)})
        return _verification(document) if document else None

    async def add(self, verification: Verification) -> bool:
        """Store a new verification; False if this exclusion has one already."""
        try:
            await self._collection.insert_one(_document(verification))
        except DuplicateKeyError:
            return False
        return True

    async def replace(self, verification: Verification, *, expected_version: int) -> bool:
        """Write the new state if nobody else changed it since ``expected_version``."""
        # Whole-document replacement: a datetime $set on an existing document is mangled by the
        # embedded store (see tests/store/test_conformance.py), a replacement is not.
        result = await self._collection.replace_one({"_id": str(verification.key), "version": expected_version}, _document(verification))
        return result.matched_count == 1

    async def of_subject(self, subject: str, *, besides: uuid.UUID) -> list[Verification]:
        """The person's other verifications, to recognise a code that belongs to one of them."""
        cursor = self._collection.find({"subject": subject}).limit(50)
        return [_verification(d) async for d in cursor if d["_id"] != str(besides)]

    async def due(self, now: datetime, *, limit: int = 200) -> list[Verification]:
        cursor = self._collection.find({"next_check_at": {"$lte": now}}).sort("next_check_at", ASCENDING).limit(limit)
        return [_verification(d) async for d in cursor]


class MongoOutcomes:
    """What became of each submission, by its event id."""

    def __init__(self, database: AsyncDatabase) -> None:
        self._collection = database["verification_submissions"]

    async def get(self, submission_id: uuid.UUID | str) -> SubmissionOutcome | None:
        document = await self._collection.find_one({"_id": str(submission_id)})
        return SubmissionOutcome.model_validate(document) if document else None

    async def record(self, outcome: SubmissionOutcome) -> None:
        document = {"_id": str(outcome.submission_id), **outcome.model_dump(mode="json"), "recorded": outcome.recorded_at}
        try:
            await self._collection.insert_one(document)
        except DuplicateKeyError:
            pass  # recorded before this redelivery


def _document(verification: Verification) -> dict[str, Any]:
    document = verification.model_dump(mode="json")
    document["_id"] = str(verification.key)
    for name in _DATETIMES:
        document[name] = getattr(verification, name)
    document["next_check_at"] = next_check_at(verification)
    return document


def _verification(document: dict[str, Any]) -> Verification:
    # An exclusion's verification written before lifts had verifications kept its exclusion id only as ``_id``.
    return Verification.model_validate({**document, "exclusion_id": document.get("exclusion_id") or document["_id"]})
