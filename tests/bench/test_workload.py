"""What the benches write straight into blocking's store is what blocking reads: documents loaded in
bulk read back through blocking's own repository as the view needs them."""

from datetime import UTC, datetime

import pytest

from bench.workload import SLOTS, Workload, insert_exclusion_documents
from services.blocking.repository import MongoExclusionProjection
from shared.events import SCOPE_ALL
from shared.identity import Hasher

pytestmark = pytest.mark.integration

NOW = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)


async def test_the_workloads_documents_loaded_in_bulk_read_back_as_blockings_view_needs_them(database, settings):
    workload = Workload(hasher=Hasher.from_settings(settings), exclusions=25, now=NOW)
    documents = [d for chunk in workload.exclusion_documents(chunk=10) for d in chunk]

    for chunk in workload.exclusion_documents(chunk=10):
        await insert_exclusion_documents(database, chunk)

    loaded = {str(e.exclusion_id): e async for e in MongoExclusionProjection(database).excluding(NOW)}
    assert sorted(loaded) == sorted(d["_id"] for d in documents)
    assert {e.scope for e in loaded.values()} == {SCOPE_ALL, SLOTS}
    assert all(e.identifiers and e.version == 2 for e in loaded.values())
