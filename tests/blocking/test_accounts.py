"""The accounts blocking has seen: each (identifier, operator, account) is written once, in batches."""

import pytest

from services.blocking.accounts import SeenAccounts

ANNA, ANNAS_DEVICE = "email:aaa", "device:ddd"


class FakeStore:
    def __init__(self) -> None:
        self.writes: list[list[tuple[str, str, str]]] = []
        self.rows: set[tuple[str, str, str]] = set()
        self.fail = False

    async def add_many(self, triples) -> None:
        if self.fail:
            raise ConnectionError("store down")
        batch = list(triples)
        self.writes.append(batch)
        self.rows.update(batch)

    async def accounts_for(self, identifiers) -> set[tuple[str, str]]:
        return {(operator, account) for identifier, operator, account in self.rows if identifier in identifiers}


async def test_new_accounts_are_written_together_and_only_once():
    store = FakeStore()
    seen = SeenAccounts(lambda: store)

    seen.note("op-1", "acc-1", [ANNA, ANNAS_DEVICE])
    seen.note("op-2", "acc-9", [ANNA])
    seen.note("op-1", "acc-1", [ANNA])
    assert await seen.flush() == 2
    seen.note("op-1", "acc-1", [ANNA])
    assert await seen.flush() == 0

    assert store.writes == [[(ANNA, "op-1", "acc-1"), (ANNA, "op-2", "acc-9")]], "personal identifiers only, in one write"


async def test_a_failed_write_is_tried_again_and_unwritten_accounts_are_still_found():
    store = FakeStore()
    seen = SeenAccounts(lambda: store)
    seen.note("op-1", "acc-1", [ANNA])
    store.fail = True

    with pytest.raises(ConnectionError):
        await seen.flush()
    assert await seen.accounts_for([ANNA]) == {("op-1", "acc-1")}, "found while waiting to be written"

    store.fail = False
    assert await seen.flush() == 1
    assert await seen.accounts_for([ANNA, ANNAS_DEVICE]) == {("op-1", "acc-1")}


async def test_past_its_limit_the_memory_starts_again_and_writes_again():
    store = FakeStore()
    seen = SeenAccounts(lambda: store, max_remembered=1)
    seen.note("op-1", "acc-1", [ANNA])
    await seen.flush()
    seen.note("op-1", "acc-2", [ANNA])
    await seen.flush()
    seen.note("op-1", "acc-1", [ANNA])

    assert await seen.flush() == 1


async def test_with_the_store_down_decisions_do_not_wait_and_the_accounts_are_stored_later():
    store = FakeStore()
    seen = SeenAccounts(lambda: store)
    seen.note("op-1", "acc-1", [ANNA])
    store.fail = True

    await seen.flush_or_keep()  # does not raise
    store.fail = False
    seen.note("op-1", "acc-2", [ANNA])
    await seen.flush_or_keep()

    assert store.rows == {(ANNA, "op-1", "acc-1"), (ANNA, "op-1", "acc-2")}
