"""Verification's repositories on the real store: every query shape they use."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.verification import domain
from services.verification.domain import IssuedCode, State
from services.verification.repository import INDEXES, MongoOutcomes, MongoVerifications
from shared.crypto import Sealer
from shared.store import ensure_indexes
from tests.verification.conftest import code_submitted, requested

pytestmark = pytest.mark.integration

NOW = datetime(2025, 3, 1, 9, 0, 0, 250000, tzinfo=UTC)


def started(subject: str = "person-1", now: datetime = NOW) -> domain.Verification:
    return domain.start(requested(subject=subject), now, IssuedCode(hash="ab" * 32, sealed_params="e1:c2VhbGVk"))


async def test_a_verification_reads_back_as_it_was_written(database):
    verifications = MongoVerifications(database)
    verification = started()

    assert await verifications.add(verification)

    assert await verifications.get(verification.exclusion_id) == verification
    stored = await database["verifications"].find_one({"_id": str(verification.exclusion_id)})
    assert stored["next_check_at"] == NOW + domain.OUTBOX_GRACE and isinstance(stored["code_expires_at"], datetime)


async def test_a_second_verification_for_one_exclusion_is_not_added(database):
    verifications = MongoVerifications(database)
    verification = started()
    await verifications.add(verification)

    assert not await verifications.add(verification.model_copy(update={"state": State.VERIFIED}))
    assert (await verifications.get(verification.exclusion_id)).state is State.AWAITING_CODE


async def test_a_replacement_applies_only_over_the_version_it_was_decided_on(database):
    verifications = MongoVerifications(database)
    verification = started()
    await verifications.add(verification)
    flushed = domain.flushed(verification, NOW + timedelta(seconds=1))

    assert await verifications.replace(flushed, expected_version=verification.version)
    assert not await verifications.replace(domain.flushed(verification, NOW), expected_version=verification.version)

    assert await verifications.get(verification.exclusion_id) == flushed
    stored = await database["verifications"].find_one({"_id": str(verification.exclusion_id)})
    assert stored["next_check_at"] == flushed.code_expires_at, "a replacement keeps datetimes datetimes"


async def test_the_due_are_found_by_their_next_check_in_order(database):
    verifications = MongoVerifications(database)
    early, late = started(now=NOW), started(now=NOW + timedelta(minutes=5))
    for verification in (late, early):
        await verifications.add(domain.flushed(verification, verification.created_at))

    assert await verifications.due(NOW + timedelta(minutes=14)) == []
    assert [v.exclusion_id for v in await verifications.due(NOW + timedelta(minutes=15))] == [early.exclusion_id]
    assert [v.exclusion_id for v in await verifications.due(NOW + timedelta(hours=1))] == [early.exclusion_id, late.exclusion_id]


async def test_a_persons_other_verifications_are_found_by_subject(database):
    verifications = MongoVerifications(database)
    mine, other, someone_elses = started("p-1"), started("p-1"), started("p-2")
    for verification in (mine, other, someone_elses):
        await verifications.add(verification)

    assert [v.exclusion_id for v in await verifications.of_subject("p-1", besides=mine.exclusion_id)] == [other.exclusion_id]


async def test_an_outcome_is_recorded_once_by_its_submission_id(database, settings):
    outcomes = MongoOutcomes(database)
    command = code_submitted(Sealer.from_settings(settings), uuid.uuid4(), "123456")
    decision = domain.submit_code(None, command, NOW, submitted="x", elsewhere=False)

    await outcomes.record(decision.outcome)
    await outcomes.record(decision.outcome.model_copy(update={"reason": "a second write"}))

    assert await outcomes.get(command.id) == decision.outcome
    assert await outcomes.get(uuid.uuid4()) is None
    assert await database["verification_submissions"].count_documents({}) == 1


async def test_the_indexes_are_created_and_creating_them_again_changes_nothing(database):
    await ensure_indexes(database, INDEXES)
    before = {name: await database[name].index_information() for name in INDEXES}
    await ensure_indexes(database, INDEXES)

    assert {name: await database[name].index_information() for name in INDEXES} == before
    keys = {tuple(k for k, _ in info["key"]) for info in before["verifications"].values()}
    assert {("next_check_at",), ("subject",)} <= keys
