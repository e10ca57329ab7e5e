"""What every consuming service shares: its broker, its subscribers' defaults, its store and topics."""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from faststream import AckPolicy, FastStream
from faststream.kafka import KafkaBroker
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from shared.broker import DeadLetters, create_broker, ensure_topics, publish
from shared.events import Event, utcnow
from shared.health import HealthServer, Readiness
from shared.logging import configure_logging
from shared.settings import Settings
from shared.store import Indexes, ensure_indexes, open_database

Clock = Callable[[], datetime]


@dataclass
class Service:
    """One service's wiring: settings, broker, store and clock, built by its ``create_app``."""

    name: str
    settings: Settings
    indexes: Indexes = field(default_factory=dict)
    clock: Clock = utcnow
    database: AsyncDatabase | None = None
    broker: KafkaBroker = field(init=False)
    readiness: Readiness = field(default_factory=Readiness)
    dead_letters: DeadLetters = field(init=False)

    def __post_init__(self) -> None:
        configure_logging(self.settings.log_level, self.settings.log_format, service=self.name)
        self.dead_letters = DeadLetters(self.settings, consumer=self.name, readiness=self.readiness)
        self.broker = create_broker(self.settings, service=self.name, dead_letters=self.dead_letters)
        self.log = structlog.get_logger(self.name)

    def subscriber(self, *topics: str, pattern: str | None = None, **options: Any):
        """A subscriber with its own consumer group; offsets commit only after the handler's effect.

        A new group starts from the earliest offset: nothing published before a service first
        started is missed (nor an operator's first events, sent before its topic was seen).
        ``pattern`` (a regex over whole topic names, e.g. every operator's topics) instead of topics
        needs its ``group_id`` named.
        """
        if pattern is None:
            options.setdefault("group_id", f"{self.settings.topic_prefix}{self.name}.{topics[0]}")
        elif topics or "group_id" not in options:
            raise ValueError("a pattern subscriber takes no topic names and needs its group_id")
        options.setdefault("auto_offset_reset", "earliest")
        options.setdefault("ack_policy", AckPolicy.NACK_ON_ERROR)
        options.setdefault("session_timeout_ms", self.settings.kafka_session_timeout_ms)
        options.setdefault("heartbeat_interval_ms", max(100, self.settings.kafka_session_timeout_ms // 4))
        if pattern is not None:
            return self.broker.subscriber(pattern=pattern, **options)
        return self.broker.subscriber(*(self.settings.topic(t) for t in topics), **options)

    async def publish(self, event: Event) -> None:
        await publish(self.broker, self.settings, event)

    @property
    def db(self) -> AsyncDatabase:
        assert self.database is not None, "the store opens in the app's lifespan"
        return self.database

    def app(self, *, on_start: Callable[[], Any] | None = None) -> FastStream:
        """The FastStream app: topics exist and the store is open before the first message.

        Start-up and shut-down are hooks, so ``async with app:`` in a test does what ``app.run()`` does.
        """
        opened: list[AsyncMongoClient] = []
        health = HealthServer(self.readiness, self.settings.health_host, self.settings.health_port)

        async def start() -> None:
            self.settings.require_secrets(self.name)
            self.readiness.not_ready("service", "starting")
            await health.start()
            await ensure_topics(self.settings)
            if self.database is None:
                client, self.database = await open_database(self.settings, self.name, self.indexes)
                opened.append(client)
            else:
                await ensure_indexes(self.database, self.indexes)
            if on_start is not None:
                await on_start()
            self.readiness.ready("service")
            self.log.info("service_starting", topic_prefix=self.settings.topic_prefix)

        async def stop() -> None:
            self.readiness.not_ready("service", "stopping")
            await health.stop()
            for client in opened:
                await client.close()
                self.database = None
            opened.clear()

        async def stopping() -> None:  # first of the shut-down hooks: nothing waits on a retry from here on
            self.dead_letters.stop_retrying()

        return FastStream(
            self.broker, on_startup=[start], on_shutdown=[stopping], after_shutdown=[stop], logger=logging.getLogger("selfex.faststream")
        )


class Background:
    """One background task of a service: ``start`` runs ``_run`` once, ``stop`` cancels it and waits."""

    name = "background"
    _task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        raise NotImplementedError


class Ticker(Background):
    """A background loop calling ``tick()`` every ``interval`` seconds; 0 leaves the ticking to the caller.

    A failing round is logged and the next one retries: timers must outlive a store hiccup.
    """

    def __init__(self, name: str, tick: Callable[[], Awaitable[Any]], interval: float) -> None:
        self.name = name
        self._tick = tick
        self.interval = interval
        self._task: asyncio.Task | None = None
        self.log = structlog.get_logger(name)

    def start(self) -> None:
        if self.interval > 0:
            super().start()

    async def _run(self) -> None:
        while True:
            try:
                await self._tick()
            except Exception:
                self.log.exception("timer_round_failed")
            await asyncio.sleep(self.interval)
