"""The gateway's lookup across a hash key rotation, on the real store: a check asks for every form
of an identifier until `selfex rehash` has moved each to the newest, merged with what that holds."""

import uuid
from datetime import UTC, datetime

import pytest

from services.gateway.domain import Summary
from services.gateway.repository import MongoLookup, MongoViews
from shared.events import SCOPE_ALL, ExclusionState
from shared.identity import Hasher, IdentifierKind

pytestmark = pytest.mark.integration

OLD = Hasher(b"o" * 32, "k1")
ROTATING = Hasher(b"o" * 32, "k1", [("k2", b"n" * 32)])
AT = datetime(2026, 1, 1, tzinfo=UTC)


def summary(version: int = 1, exclusion_id: str | None = None) -> Summary:
    return Summary(
        exclusion_id=exclusion_id or str(uuid.uuid4()),
        person_id="p-1",
        state=ExclusionState.ACTIVE,
        scope=SCOPE_ALL,
        jurisdiction="GB",
        starts_at=AT,
        ends_at=None,
        minimum_until=None,
        lift_effective_at=None,
        version=version,
    )


async def test_a_check_finds_an_exclusion_stored_under_the_old_key_before_and_after_rehash(database):
    lookup = MongoLookup(database)
    before = summary()
    await lookup.record([OLD.hash(IdentifierKind.EMAIL, "anna@example.com")], before)  # stored before the rotation
    after = summary()
    await lookup.record([ROTATING.hash(IdentifierKind.EMAIL, "anna@example.com")], after)  # learnt after it
    forms = ROTATING.forms(IdentifierKind.EMAIL, "anna@example.com")

    def found(by_identifier) -> set[str]:
        return {s.exclusion_id for summaries in by_identifier.values() for s in summaries}

    assert found(await lookup.summaries_by_identifier(forms)) == {before.exclusion_id, after.exclusion_id}
    assert found(await lookup.summaries_by_identifier(forms[-1:])) == {after.exclusion_id}, "the newest form alone misses one"

    assert await lookup.rehash(ROTATING) == 1
    assert found(await lookup.summaries_by_identifier(forms[-1:])) == {before.exclusion_id, after.exclusion_id}
    assert await database["exclusion_lookup"].count_documents({}) == 1
    assert await lookup.rehash(ROTATING) == 0


async def test_a_view_keeps_its_identifiers_in_the_newest_form_after_rehash(database):
    views = MongoViews(database)
    old = OLD.hash(IdentifierKind.NATIONAL_ID, "a" * 64)
    await views.record({"_id": "x-1", "identifiers": [old], "version": 3})

    assert await views.rehash(ROTATING) == 1
    assert (await views.get("x-1"))["identifiers"] == [ROTATING.canonical(old)]
