"""Inbound: the register's exclusions, imported so that blocking and the gateway here honour them.

From the register's change feed (``GET /v1/register/changes?since=CURSOR``, page after page, on a
schedule) and from a register's Kafka topic. Each change becomes an ``exclusion.import`` command
to registration, which registers it like any other (through the lifecycle topic, so blocking and
the gateway learn of it the normal way) and keeps its origin, so it is never forwarded back. A change
that began here (its origin is this deployment) is skipped: it went out, it does not come back.
"""

import asyncio
import contextlib
import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import structlog
from aiokafka import AIOKafkaConsumer

from services.forwarder.domain import person_key
from services.forwarder.repository import Deliveries
from shared.broker import DeadLetters, describe
from shared.events import Event, RegisterChange
from shared.identity import Hasher, IdentifierKind
from shared.service import Background, Clock
from shared.settings import Settings

log = structlog.get_logger("forwarder.sync")
KEY_CHECK_VALUE = "key-check@selfex.invalid"  # the register hashes it too: equal hashes, the same key


class HashKeyMismatchError(RuntimeError):
    """The register hashes identities with another key: its hashes would match nobody here."""


class SyncFailedError(RuntimeError):
    """The register's change feed answered something other than a page."""


class Importer:
    """Turns a register's change into the import command for registration (or nothing, for our own)."""

    def __init__(self, settings: Settings, publish: Callable[[Event], Awaitable[None]]) -> None:
        self.settings = settings
        self.publish = publish

    async def take(self, change: RegisterChange, register: str) -> bool:
        """Import ``change``, read from ``register``; False for one that began here."""
        if change.origin == self.settings.deployment_name:
            return False  # made here, forwarded there: never imported back
        await self.publish(change.imported(register, person_key(change.identifiers)))
        return True


class ChangeFeedSync:
    """Reads the change feed from the stored cursor to its end, each page imported before the cursor moves."""

    def __init__(
        self,
        settings: Settings,
        deliveries: Deliveries,
        importer: Importer,
        hasher: Hasher,
        clock: Clock,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.deliveries = deliveries
        self.importer = importer
        self.clock = clock
        self.key_check = hasher.hash(IdentifierKind.EMAIL, KEY_CHECK_VALUE)
        self._transport = transport
        self.source = settings.forwarder_sync_url.rstrip("/")

    async def run_once(self) -> int:
        """One sync: every page from the cursor to the end. How many changes were imported."""
        imported = 0
        async with httpx.AsyncClient(
            base_url=self.source, timeout=self.settings.forwarder_timeout_seconds, transport=self._transport
        ) as http:
            cursor = await self.deliveries.cursor(self.source)
            while True:
                page = await self._page(http, cursor)
                for item in page["changes"]:
                    try:
                        change = RegisterChange.model_validate(item)
                    except ValueError as exc:  # one change the register got wrong must not stall the feed
                        log.warning("register_change_refused", source=self.source, error=describe(exc, 300))
                        continue
                    if await self.importer.take(change, page.get("register") or self.source):
                        imported += 1
                cursor = page["next"]
                await self.deliveries.save_cursor(self.source, cursor)
                if not page.get("more"):
                    break
        await self.deliveries.synced(self.source, self.clock(), imported)
        log.info("register_synced", source=self.source, imported=imported)
        return imported

    async def _page(self, http: httpx.AsyncClient, cursor: str) -> dict[str, Any]:
        response = await http.get(
            "/v1/register/changes",
            params={"since": cursor, "limit": self.settings.forwarder_sync_page},
            headers={"X-API-Key": self.settings.forwarder_sync_key.get_secret_value()},
        )
        if response.status_code != 200:
            raise SyncFailedError(f"the register's change feed answered HTTP {response.status_code}")
        page = response.json()
        if page.get("hash_key_check") != self.key_check:
            raise HashKeyMismatchError(
                "the register hashes identities with another key than this deployment (SELFEX_HASH_SECRET): "
                "its exclusions would match nobody here, so none is imported"
            )
        return page


class KafkaSync(Background):
    """Reads a register's topic (on its own cluster) in a consumer group of this deployment; an offset
    is committed only once its change is imported. A record that is no change is dead-lettered here."""

    name = "forwarder.kafka_sync"

    def __init__(self, settings: Settings, importer: Importer, dead_letters: DeadLetters, deliveries: Deliveries, clock: Clock) -> None:
        self.settings = settings
        self.importer = importer
        self.dead_letters = dead_letters
        self.deliveries = deliveries
        self.clock = clock
        self.consumer: AIOKafkaConsumer | None = None

    async def _run(self) -> None:
        settings = self.settings
        while True:
            consumer = AIOKafkaConsumer(
                settings.forwarder_sync_kafka_topic,
                bootstrap_servers=settings.forwarder_sync_kafka_bootstrap,
                group_id=f"{settings.topic_prefix}forwarder.sync",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=settings.kafka_session_timeout_ms,
                heartbeat_interval_ms=max(100, settings.kafka_session_timeout_ms // 4),
            )
            try:
                await consumer.start()
                self.consumer = consumer
                while True:
                    batches = await consumer.getmany(timeout_ms=500, max_records=500)
                    for records in batches.values():
                        for record in records:
                            await self.dead_letters.retrying(functools.partial(self._import, record), (record,))
                    if batches:
                        await consumer.commit()
                        await self.deliveries.synced(f"kafka:{settings.forwarder_sync_kafka_topic}", self.clock(), 0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 — the register's cluster or our own away: a fresh consumer, from the committed offsets
                log.warning("register_topic_sync_failed", error=type(exc).__name__, detail=str(exc)[:200])
                await asyncio.sleep(1.0)
            finally:
                self.consumer = None
                with contextlib.suppress(Exception):
                    await consumer.stop()

    async def _import(self, record: Any) -> None:
        try:
            change = RegisterChange.model_validate(json.loads(record.value or b""))
        except ValueError as exc:
            await self.dead_letters.park_record(record, exc)
            return
        await self.importer.take(change, self.settings.forwarder_register or self.settings.forwarder_sync_kafka_topic)
