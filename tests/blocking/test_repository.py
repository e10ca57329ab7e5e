"""Blocking's collections on the real store: every query shape its repositories use."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.blocking.domain import Known
from services.blocking.repository import INDEXES, MongoExclusionProjection, MongoSeenAccounts
from shared.events import SCOPE_ALL, ExclusionSnapshot, ExclusionState, ExclusionType, Game, Scope
from shared.store import ensure_indexes

pytestmark = pytest.mark.integration

NOW = datetime(2025, 1, 31, 12, 0, 0, 123000, tzinfo=UTC)  # whole milliseconds: BSON keeps no finer
SLOTS = Scope(types=frozenset({ExclusionType.GAMES}), games=frozenset({Game.SLOTS}))


def snapshot(state=ExclusionState.ACTIVE, version=1, ends_at=NOW + timedelta(days=1), scope=SCOPE_ALL, exclusion_id=None):
    return ExclusionSnapshot(
        exclusion_id=exclusion_id or uuid.uuid4(),
        identifiers=["email:a", "national_id:x"],
        scope=scope,
        jurisdiction="SE",
        state=state,
        starts_at=NOW - timedelta(days=1),
        ends_at=ends_at,
        version=version,
    )


async def test_the_projection_keeps_each_exclusions_newest_snapshot_and_lists_those_that_exclude(database):
    await ensure_indexes(database, INDEXES)
    projection = MongoExclusionProjection(database)
    running, ended, lifted = snapshot(scope=SLOTS), snapshot(ends_at=NOW - timedelta(seconds=1)), snapshot()
    open_ended = snapshot(ends_at=None)
    await projection.save_many([running, ended, lifted, open_ended])
    await projection.save_many([lifted.model_copy(update={"state": ExclusionState.LIFTED, "version": 2})])

    loaded = {e.exclusion_id: e async for e in projection.excluding(NOW)}

    assert set(loaded) == {running.exclusion_id, open_ended.exclusion_id}
    assert loaded[running.exclusion_id].scope == SLOTS
    assert (loaded[running.exclusion_id].starts_at, loaded[running.exclusion_id].ends_at) == (running.starts_at, running.ends_at)
    assert sorted(loaded[running.exclusion_id].identifiers) == ["email:a", "national_id:x"]
    assert loaded[open_ended.exclusion_id].ends_at is None
    assert await projection.known([lifted.exclusion_id, running.exclusion_id, uuid.uuid4()]) == {
        lifted.exclusion_id: Known(2, False),
        running.exclusion_id: Known(1, True),
    }
    assert await projection.known([]) == {}


async def test_seen_accounts_are_stored_once_and_found_by_any_of_their_identifiers(database):
    await ensure_indexes(database, INDEXES)
    accounts = MongoSeenAccounts(database)
    triples = [("email:a", "op-1", "acc-1"), ("national_id:x", "op-1", "acc-1"), ("email:a", "op-2", "acc-7"), ("email:b", "op-1", "acc-2")]

    await accounts.add_many(triples)
    await accounts.add_many(triples[:2])

    assert await database["blocking_accounts"].count_documents({}) == 4
    assert await accounts.accounts_for(["email:a", "national_id:x"]) == {("op-1", "acc-1"), ("op-2", "acc-7")}
    assert await accounts.accounts_for(["email:nobody"]) == set()
    assert await accounts.accounts_for([]) == set()
