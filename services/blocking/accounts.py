"""The accounts blocking has seen, remembered without a database round trip per account event.

An in-memory set says which (identifier, operator, account) triples are already stored; new ones
wait in a buffer and are written in one bulk upsert per batch of account events, while that
batch's decisions are being published. Only personal
identifiers are kept: enforcement reaches the person's accounts, not everyone who shared a device.
"""

from collections.abc import Callable, Iterable

import structlog

from services.blocking.domain import is_personal
from services.blocking.repository import MongoSeenAccounts

log = structlog.get_logger(__name__)

Triple = tuple[str, str, str]
# Past this many remembered triples the memory starts again: re-storing one is harmless.
MAX_REMEMBERED = 1_000_000


class SeenAccounts:
    def __init__(self, store: Callable[[], MongoSeenAccounts], max_remembered: int = MAX_REMEMBERED) -> None:
        self._store = store  # a factory: the database opens in the app's lifespan
        self._stored: set[int] = set()  # hash() of triples known to be stored
        self._pending: dict[int, Triple] = {}
        self._in_flight: dict[int, Triple] = {}
        self._max = max_remembered

    def note(self, operator_id: str, account_id: str, identifiers: Iterable[str]) -> None:
        """Remember that this account used these identifiers; cheap when it is nothing new."""
        for identifier in identifiers:
            if not is_personal(identifier):
                continue
            triple = (identifier, operator_id, account_id)
            key = hash(triple)
            if key not in self._stored and key not in self._pending:
                self._pending[key] = triple

    async def flush(self) -> int:
        """Store what is new since the last flush; it counts as stored only once the write succeeded."""
        if not self._pending:
            return 0
        self._in_flight, self._pending = self._pending, {}
        try:
            await self._store().add_many(self._in_flight.values())
        except BaseException:
            self._in_flight.update(self._pending)
            self._pending, self._in_flight = self._in_flight, {}
            raise
        if len(self._stored) + len(self._in_flight) > self._max:
            self._stored.clear()
        self._stored.update(self._in_flight)
        written, self._in_flight = len(self._in_flight), {}
        return written

    async def flush_or_keep(self) -> None:
        """Store what is new; if the store fails, keep it for the next batch's write.

        Decisions do not wait on this: with the store down they still go out (the view is in
        memory), and the accounts seen meanwhile are stored once it is back.
        """
        try:
            await self.flush()
        except Exception as error:  # noqa: BLE001 — any failure: the same triples are tried again
            log.warning("seen_accounts_kept_for_later", pending=len(self._pending), error=type(error).__name__)

    async def accounts_for(self, identifiers: Iterable[str]) -> set[tuple[str, str]]:
        """Every (operator, account) seen with one of these identifiers, stored or not yet."""
        wanted = {h for h in identifiers if is_personal(h)}
        unstored = self._unstored(wanted)  # before the query: a flush may land while it runs
        return await self._store().accounts_for(wanted) | unstored | self._unstored(wanted)

    def _unstored(self, wanted: set[str]) -> set[tuple[str, str]]:
        return {
            (operator_id, account_id)
            for buffer in (self._pending, self._in_flight)
            for identifier, operator_id, account_id in buffer.values()
            if identifier in wanted
        }
