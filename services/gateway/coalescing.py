"""Checks that arrive together share one store query.

Every check is one ``_id`` lookup; under load most of its cost is the round trip, not the work
(a PyMongo operation costs the gateway about the same CPU whatever it fetches: README,
Performance). So a lookup is sent at once when none is in flight; checks that arrive while one is in
flight wait for it to finish and then go together in the next one.

A check is never answered by a query that started before it arrived: it joins only the next
query. So a write that finished before the check arrived is always seen (read-your-writes holds).

Under load the checks settle into two groups that take turns: one waits for its query while the
gateway works on the other's (answering, and reading the clients' next checks). Left alone the groups
keep the sizes they started with, since whoever waited during a query goes in the next; an uneven
pair (1 and 31 checks of 32 clients) leaves the gateway idle while the big group's query runs. So
after a query of k checks, with W waiting, the next one takes at most half of the k + W (the oldest
first; the rest go in the one after): the groups even out within a turn or two. Alone, a check
never waits: with nothing in flight, everything waiting goes at once.
"""

import asyncio
from collections.abc import Iterable

from services.gateway.domain import Summary
from services.gateway.repository import MongoLookup

MAX_IDS_PER_QUERY = 500


class CoalescingLookup:
    def __init__(self, lookup: MongoLookup, max_ids: int = MAX_IDS_PER_QUERY) -> None:
        self._lookup = lookup
        self._max_ids = max_ids
        self._waiting: list[tuple[list[str], asyncio.Future]] = []
        self._draining = False
        self._task: asyncio.Task | None = None  # held: the loop keeps only a weak reference

    async def summaries(self, identifiers: Iterable[str]) -> list[Summary]:
        """Every exclusion any of these identifiers belongs to, read after this call began."""
        wanted = list(identifiers)
        if not wanted:
            return []
        answer: asyncio.Future = asyncio.get_running_loop().create_future()
        self._waiting.append((wanted, answer))
        if not self._draining:
            self._draining = True
            self._task = asyncio.get_running_loop().create_task(self._drain())
        return await answer

    async def _drain(self) -> None:
        answered = 0  # checks in the query that just came back
        try:
            while self._waiting:
                # Half of the checks in turn (rounded up); all of them when none is in flight.
                batch = self._next_batch((answered + len(self._waiting) + 1) // 2 if answered else len(self._waiting))
                answered = len(batch)
                ids = {identifier for wanted, _ in batch for identifier in wanted}
                try:
                    found = await self._lookup.summaries_by_identifier(ids)
                except Exception as exc:  # noqa: BLE001 — each waiting check gets the failure
                    for _, answer in batch:
                        if not answer.done():
                            answer.set_exception(exc)
                    continue
                for wanted, answer in batch:
                    if not answer.done():
                        answer.set_result([summary for identifier in wanted for summary in found.get(identifier, [])])
        finally:
            self._draining = False

    def _next_batch(self, most: int) -> list[tuple[list[str], asyncio.Future]]:
        """The oldest waiting checks: at most ``most`` of them and ``max_ids`` ids (always one)."""
        taken, count = 0, 0
        for wanted, _ in self._waiting:
            if taken and (taken >= most or count + len(wanted) > self._max_ids):
                break
            taken += 1
            count += len(wanted)
        batch, self._waiting = self._waiting[:taken], self._waiting[taken:]
        return batch
