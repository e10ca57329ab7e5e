"""Checks that arrive together share one store query (services/gateway/coalescing.py).

Pure scheduling logic, so the store is a fake whose queries finish when the test says.
"""

import asyncio

import pytest

from services.gateway.coalescing import CoalescingLookup


class HeldLookup:
    """Each query waits until the test releases it; ``queries`` lists the ids each one asked for."""

    def __init__(self, failing: set[int] = frozenset()) -> None:
        self.queries: list[set[str]] = []
        self.failing = failing
        self._released: list[asyncio.Event] = []

    async def summaries_by_identifier(self, identifiers):
        number = len(self.queries)
        self.queries.append(set(identifiers))
        released = asyncio.Event()
        self._released.append(released)
        await released.wait()
        if number in self.failing:
            raise ConnectionError("the store went away")
        return {identifier: [f"summary of {identifier}"] for identifier in identifiers if not identifier.startswith("unknown")}

    async def started(self, count: int) -> None:
        async with asyncio.timeout(5):
            while len(self.queries) < count:  # noqa: ASYNC110 — the queries are plain calls, no event to wait on
                await asyncio.sleep(0)

    def release(self, number: int) -> None:
        self._released[number].set()


async def _checks(lookup: CoalescingLookup, people: list[list[str]]) -> list[asyncio.Task]:
    tasks = [asyncio.create_task(lookup.summaries(ids)) for ids in people]
    for _ in range(3):  # let each task reach the queue
        await asyncio.sleep(0)
    return tasks


async def test_a_check_alone_goes_at_once_and_gets_only_its_own_summaries():
    store = HeldLookup()
    lookup = CoalescingLookup(store)
    [task] = await _checks(lookup, [["a1", "unknown1"]])
    await store.started(1)
    assert store.queries == [{"a1", "unknown1"}]
    store.release(0)
    assert await task == ["summary of a1"]


async def test_checks_that_arrive_during_a_query_wait_for_the_next_one_and_go_together():
    store = HeldLookup()
    lookup = CoalescingLookup(store)
    first = await _checks(lookup, [["a1"], ["a2"], ["a3"]])
    await store.started(1)
    later = await _checks(lookup, [["b1"], ["c1", "unknown2"], ["d1"]])
    assert store.queries == [{"a1", "a2", "a3"}]  # none of them joined the query already in flight
    store.release(0)
    await store.started(2)
    assert store.queries[1] == {"b1", "c1", "unknown2", "d1"}
    assert not any(task.done() for task in later)
    store.release(1)
    assert [await task for task in first] == [["summary of a1"], ["summary of a2"], ["summary of a3"]]
    assert [await task for task in later] == [["summary of b1"], ["summary of c1"], ["summary of d1"]]


async def test_uneven_groups_even_out_oldest_first():
    store = HeldLookup()
    lookup = CoalescingLookup(store)
    await _checks(lookup, [["p0"]])
    await store.started(1)
    waiting = await _checks(lookup, [[f"p{i}"] for i in range(1, 32)])  # 31 wait for the next query
    store.release(0)
    await store.started(2)
    # after a query of 1, with 31 waiting: half of the 32, the oldest first
    assert store.queries[1] == {f"p{i}" for i in range(1, 17)}
    store.release(1)
    await store.started(3)
    assert store.queries[2] == {f"p{i}" for i in range(17, 32)}
    store.release(2)
    assert [await task for task in waiting] == [[f"summary of p{i}"] for i in range(1, 32)]


async def test_a_query_never_takes_more_than_max_ids_but_always_takes_one_check():
    store = HeldLookup()
    lookup = CoalescingLookup(store, max_ids=4)
    await _checks(lookup, [["x"]])
    await store.started(1)
    await _checks(lookup, [["a1", "a2", "a3"], ["b1", "b2"], ["c1", "c2", "c3", "c4", "c5"]])
    store.release(0)
    await store.started(2)
    assert store.queries[1] == {"a1", "a2", "a3"}
    store.release(1)
    await store.started(3)
    assert store.queries[2] == {"b1", "b2"}
    store.release(2)
    await store.started(4)
    assert store.queries[3] == {"c1", "c2", "c3", "c4", "c5"}  # over the limit alone: it still goes


async def test_a_failed_query_fails_its_own_checks_and_the_next_query_still_runs():
    store = HeldLookup(failing={1})
    lookup = CoalescingLookup(store)
    [first] = await _checks(lookup, [["a1"]])
    await store.started(1)
    doomed = await _checks(lookup, [["b1"], ["c1"]])
    store.release(0)
    await store.started(2)
    survivor = await _checks(lookup, [["d1"]])
    store.release(1)
    for task in doomed:
        with pytest.raises(ConnectionError):
            await task
    await store.started(3)
    store.release(2)
    assert await first == ["summary of a1"]
    assert await survivor[0] == ["summary of d1"]


async def test_no_identifiers_need_no_query():
    store = HeldLookup()
    assert await CoalescingLookup(store).summaries([]) == []
    assert store.queries == []
