"""What the integration and end-to-end tests share: polling with a deadline, reading topics."""

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.events import Event
from shared.settings import Settings

T = TypeVar("T")


async def eventually(probe: Callable[[], Awaitable[T]], *, timeout: float = 30.0, interval: float = 0.05, what: str = "condition") -> T:
    """Poll ``probe`` until it returns something truthy, or fail when the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:.0f}s")
        await asyncio.sleep(interval)


class TopicReader:
    """Reads a topic from the beginning by assigning every partition: no group join to wait for."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.settings = settings
        self.topic = settings.topic(topic)
        self.consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka, enable_auto_commit=False)
        self.records: list[Any] = []

    async def __aenter__(self) -> "TopicReader":
        await self.consumer.start()
        partitions = await eventually(
            lambda: _async(self.consumer.partitions_for_topic(self.topic)), what=f"topic {self.topic} to exist"
        )
        assigned = [TopicPartition(self.topic, p) for p in partitions]
        self.consumer.assign(assigned)
        await self.consumer.seek_to_beginning(*assigned)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.consumer.stop()

    async def _drain(self) -> None:
        batches = await self.consumer.getmany(timeout_ms=100)
        for records in batches.values():
            self.records.extend(records)

    def messages(self) -> list[dict]:
        out = []
        for record in self.records:
            try:
                out.append(json.loads(record.value))
            except ValueError:
                continue
        return out

    async def wait_for(self, predicate: Callable[[dict], bool], *, count: int = 1, timeout: float = 30.0) -> list[dict]:
        async def probe():
            await self._drain()
            found = [m for m in self.messages() if predicate(m)]
            return found if len(found) >= count else None

        return await eventually(probe, timeout=timeout, what=f"{count} matching message(s) on {self.topic}")


async def _async(value):
    return value


class Publisher:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer = AIOKafkaProducer(bootstrap_servers=settings.kafka)

    async def __aenter__(self) -> "Publisher":
        await self.producer.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.producer.stop()

    async def event(self, event: Event) -> None:
        await self.producer.send_and_wait(
            self.settings.topic(event.topic), event.model_dump_json().encode(), key=event.key()
        )

    async def raw(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        await self.producer.send_and_wait(self.settings.topic(topic), value, key=key)
