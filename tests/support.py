"""What the integration and end-to-end tests share: polling with a deadline, reading topics."""

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import RecordMetadata

from shared import topics
from shared.broker import DeadLetters
from shared.events import Event, MessageDeadLettered
from shared.infra import free_port
from shared.settings import Settings

# The tests' own secrets: not the public development defaults, so every service the tests start runs
# the way a deployment does (``Settings.require_secrets`` passes without SELFEX_DEVELOPMENT).
TEST_HASH_SECRET = "test-secret-0123456789abcdef"
TEST_ENCRYPTION_KEYS = "t1:dGVzdC1lbmNyeXB0aW9uLWtleS0wMTIzNDU2Nzg5YWI="

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


async def entered_together(stack: AsyncExitStack, contexts: Sequence[AbstractAsyncContextManager[Any]]) -> list[Any]:
    """Enter ``contexts`` at the same time onto ``stack``; what each gave, in order. Most of a
    service's start is waiting (each of its consumers joins its group in turn, about a second each on
    the embedded broker), so services started together start in the time of the slowest. They end as
    if entered in order, the last first. If one fails to start, the others are cancelled and ended
    (the failure is raised in an ExceptionGroup)."""
    own = [AsyncExitStack() for _ in contexts]
    for each in own:
        stack.push_async_callback(each.aclose)
    async with asyncio.TaskGroup() as group:
        entering = [group.create_task(each.enter_async_context(context)) for each, context in zip(own, contexts, strict=True)]
    return [task.result() for task in entering]


class TopicReader:
    """Reads a topic from the beginning by assigning every partition: no group join to wait for."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.settings = settings
        self.topic = settings.topic(topic)
        self.consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka, enable_auto_commit=False)
        self.records: list[Any] = []

    async def __aenter__(self) -> "TopicReader":
        await self.consumer.start()
        partitions = await eventually(lambda: _async(self.consumer.partitions_for_topic(self.topic)), what=f"topic {self.topic} to exist")
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

    async def read_to_end(self) -> list[dict]:
        """Every message the topic holds now (up to its end offsets as they stand at the call)."""
        partitions = list(self.consumer.assignment())
        ends = await self.consumer.end_offsets(partitions)

        async def caught_up():
            await self._drain()
            for partition, end in ends.items():
                if await self.consumer.position(partition) < end:
                    return None
            return True

        await eventually(caught_up, what=f"reading {self.topic} to its end")
        return self.messages()

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
        """Publish on the event's topic: an account event, decision or enforcement on its operator's own."""
        await self.producer.send_and_wait(
            self.settings.topic(topics.route(event.topic, event.operator_id)), event.model_dump_json().encode(), key=event.key()
        )

    async def raw(
        self, topic: str, value: bytes, key: bytes | None = None, headers: list[tuple[str, bytes]] | None = None
    ) -> RecordMetadata:
        return await self.producer.send_and_wait(self.settings.topic(topic), value, key=key, headers=headers)


def dead_letter_original(settings: Settings, message: dict) -> bytes:
    """The original bytes a dead letter (as read from the topic) holds sealed."""
    return DeadLetters(settings, consumer="test").open_original(MessageDeadLettered.model_validate(message))


async def committed_offset(settings: Settings, group: str, topic: str, partition: int) -> int | None:
    """Where ``group`` has committed on one partition (None: nothing yet), asked without joining the group."""
    reader = AIOKafkaConsumer(bootstrap_servers=settings.kafka, group_id=group, enable_auto_commit=False)
    await reader.start()
    try:
        return await reader.committed(TopicPartition(settings.topic(topic), partition))
    finally:
        await reader.stop()


class TcpProxy:
    """A TCP proxy on a free port to ``target``: a test cuts it to take a server away for real, and may resume it."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit("//", 1)[-1].split("/", 1)[0].split("?", 1)[0].rsplit(":", 1)
        self.target = (host, int(port))
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> "TcpProxy":
        await self.resume()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.cut()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        self._writers += [writer, upstream_writer]

        async def copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                sink.close()

        await asyncio.gather(copy(reader, upstream_writer), copy(upstream_reader, writer))

    async def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    async def resume(self) -> None:
        """Accept connections again, on the same port."""
        if self._server is None:
            self._server = await asyncio.start_server(self._pipe, "127.0.0.1", self.port, reuse_address=True)
