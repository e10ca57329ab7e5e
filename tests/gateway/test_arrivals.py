"""A write's answer waits for its effect woken by the lifecycle consumer, not by reading the store
again and again; and the consumer's concurrent writes fail as the store failed, never in a group."""

import asyncio
import time
import uuid

import pytest
from pymongo.errors import AutoReconnect

from services.gateway import context
from services.gateway.context import Arrivals, Gateway
from services.gateway.repository import together
from shared.settings import Settings


class Effects:
    """The command effects as the store would hold them, counting the reads."""

    def __init__(self) -> None:
        self.stored: dict[str, dict] = {}
        self.reads = 0

    async def get(self, command_id) -> dict | None:
        self.reads += 1
        return self.stored.get(str(command_id))


class Views:
    def __init__(self) -> None:
        self.stored: dict[str, dict] = {}

    async def get(self, exclusion_id: str) -> dict | None:
        return self.stored.get(exclusion_id)


class Command:
    def __init__(self) -> None:
        self.id = uuid.uuid4()


def a_gateway(effects: Effects, views: Views, publish) -> Gateway:
    fields = dict.fromkeys(("hasher", "policies", "clock", "gatekeeper", "lookup", "checks", "decisions", "feed"))
    return Gateway(settings=Settings(gateway_read_your_write_seconds=5.0), effects=effects, views=views, publish=publish, **fields)


async def test_a_write_is_answered_as_soon_as_the_consumer_notes_its_effect(monkeypatch):
    monkeypatch.setattr(context, "FIRST_POLL_SECONDS", 3.0)  # the store alone would be read again only after 3 s
    monkeypatch.setattr(context, "LAST_POLL_SECONDS", 3.0)
    effects, views = Effects(), Views()

    async def consumer(command) -> None:  # another task writes the view, then the effect, then says so
        await asyncio.sleep(0.05)
        views.stored["x-1"] = {"_id": "x-1", "state": "active"}
        effects.stored[str(command.id)] = {"_id": str(command.id), "exclusion_id": "x-1", "refusal": None}
        the_gateway.arrivals.noted(command.id)

    async def publish(command) -> None:
        asyncio.get_running_loop().create_task(consumer(command))

    the_gateway = a_gateway(effects, views, publish)
    started = time.monotonic()
    written = await the_gateway.published_and_read(Command())

    assert written is not None and written.exclusion == {"_id": "x-1", "state": "active"}
    assert time.monotonic() - started < 1.0, "woken by the consumer, not by the next read of the store"
    assert effects.reads == 2, "read once before the effect was there, once after the wake"


async def test_an_effect_noted_elsewhere_is_still_found_in_the_store(monkeypatch):
    monkeypatch.setattr(context, "FIRST_POLL_SECONDS", 0.01)
    monkeypatch.setattr(context, "LAST_POLL_SECONDS", 0.02)
    effects, views = Effects(), Views()

    async def another_replica(command) -> None:  # writes it, and tells nobody here
        await asyncio.sleep(0.05)
        views.stored["x-2"] = {"_id": "x-2"}
        effects.stored[str(command.id)] = {"_id": str(command.id), "exclusion_id": "x-2", "refusal": None}

    async def publish(command) -> None:
        asyncio.get_running_loop().create_task(another_replica(command))

    written = await a_gateway(effects, views, publish).published_and_read(Command())

    assert written is not None and written.exclusion == {"_id": "x-2"}
    assert effects.reads >= 2


def test_nobody_waiting_is_woken_for_nothing():
    arrivals = Arrivals()
    arrivals.noted(uuid.uuid4())  # no error, nothing kept

    with arrivals.awaited("c-1") as arrived:
        arrivals.noted("c-2")
        assert not arrived.is_set()
        arrivals.noted("c-1")
        assert arrived.is_set()
    assert not arrivals._waiting


async def test_writes_made_together_fail_with_the_stores_own_error_once_all_have_ended():
    ended = []

    async def slow() -> None:
        await asyncio.sleep(0.05)
        ended.append("slow")

    async def failing() -> None:
        raise AutoReconnect("primary stepped down")

    with pytest.raises(AutoReconnect):  # not an ExceptionGroup: the consumer retries a store error
        await together(slow(), failing())
    assert ended == ["slow"], "no write is left running behind the error"
