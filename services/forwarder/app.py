"""The forwarder's FastStream app: lifecycle events in, deliveries to the register out; the register's
exclusions in (its change feed on a schedule, its topic), as import commands to registration."""

from typing import Any

import httpx
from faststream import FastStream
from pymongo.asynchronous.database import AsyncDatabase

from services.forwarder import handlers
from services.forwarder.adapters import Adapter, adapter_for
from services.forwarder.dispatcher import Dispatcher
from services.forwarder.repository import INDEXES, Deliveries
from services.forwarder.status import StatusReports
from services.forwarder.sync import ChangeFeedSync, Importer, KafkaSync
from shared.crypto import Sealer
from shared.identity import Hasher
from shared.service import Clock, Service, Ticker
from shared.settings import Settings


class MissingRegisterSettingError(RuntimeError):
    """A register is named without what it takes to reach it."""


class _Deferred:
    """The store opens in the app's lifespan; the repository reaches it through the service."""

    def __init__(self, service: Service) -> None:
        self._service = service

    def __getitem__(self, name: str) -> Any:
        return self._service.db[name]


def check_register_settings(settings: Settings) -> None:
    """No register key, URL or topic has a default: a register named without them stops the start."""
    if settings.forwarder_register:
        if settings.forwarder_adapter == "kafka":
            missing = [n for n in ("forwarder_kafka_bootstrap", "forwarder_kafka_topic") if not getattr(settings, n)]
            if settings.forwarder_kafka_security_protocol.startswith("SASL") and not settings.forwarder_kafka_password.get_secret_value():
                missing.append("forwarder_kafka_password")
        else:
            missing = [n for n in ("forwarder_register_url",) if not getattr(settings, n)]
            if not settings.forwarder_register_key.get_secret_value():
                missing.append("forwarder_register_key")
        if missing:
            raise MissingRegisterSettingError(
                f"the forwarder will not start: register {settings.forwarder_register!r} is named but "
                + ", ".join(f"SELFEX_{n.upper()}" for n in missing)
                + " is not set"
            )
    if settings.forwarder_sync_url and not settings.forwarder_sync_key.get_secret_value():
        raise MissingRegisterSettingError(
            "the forwarder will not start: SELFEX_FORWARDER_SYNC_URL is set but SELFEX_FORWARDER_SYNC_KEY is not"
        )


def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    database: AsyncDatabase | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    adapter: Adapter | None = None,
) -> FastStream:
    """The app; ``app.sync.run_once()`` syncs once and ``app.status.report()`` publishes the status once (tests drive them)."""
    settings = settings or Settings()
    service = Service("forwarder", settings, indexes=INDEXES, database=database)
    if clock is not None:
        service.clock = clock
    deliveries = Deliveries(_Deferred(service))  # type: ignore[arg-type]
    sealer = Sealer.from_settings(settings)
    adapter = adapter or adapter_for(settings, sealer, transport)
    dispatcher = Dispatcher(settings, deliveries, adapter, service.clock, service.publish)
    importer = Importer(settings, service.publish)
    sync = (
        ChangeFeedSync(settings, deliveries, importer, Hasher.from_settings(settings), service.clock, transport)
        if settings.forwarder_sync_url
        else None
    )
    sync_ticker = Ticker("forwarder.sync", sync.run_once, settings.forwarder_sync_seconds) if sync else None
    kafka_sync = (
        KafkaSync(settings, importer, service.dead_letters, deliveries, service.clock)
        if settings.forwarder_sync_kafka_bootstrap and settings.forwarder_sync_kafka_topic
        else None
    )
    status = StatusReports(settings, deliveries, service.clock, service.publish)
    status_ticker = Ticker("forwarder.status", status.report, settings.forwarder_status_seconds)

    async def start() -> None:
        check_register_settings(settings)
        await service.broker.connect()
        if settings.forwarder_register:
            await adapter.start()
            dispatcher.start()
            service.log.info("forwarding", register=settings.forwarder_register, adapter=settings.forwarder_adapter)
        else:
            service.log.warning("forwarder_idle", reason="no register configured (SELFEX_FORWARDER_REGISTER): nothing is forwarded")
        if sync_ticker is not None:
            sync_ticker.start()
            service.log.info("syncing_change_feed", every_seconds=settings.forwarder_sync_seconds)
        if kafka_sync is not None:
            kafka_sync.start()
            service.log.info("syncing_register_topic", topic=settings.forwarder_sync_kafka_topic)
        if not settings.forwarder_sync_url and kafka_sync is None:
            service.log.info("sync_idle", reason="no change feed or register topic configured: nothing is imported")
        if status.wanted:
            status_ticker.start()

    async def stop() -> None:
        await status_ticker.stop()
        if sync_ticker is not None:
            await sync_ticker.stop()
        if kafka_sync is not None:
            await kafka_sync.stop()
        await dispatcher.stop()
        if settings.forwarder_register:
            await adapter.stop()
        await status.last()  # what is left pending as it stops

    handlers.register(service, deliveries, dispatcher)
    app = service.app(on_start=start)
    app.on_shutdown(stop)
    app.dispatcher = dispatcher  # type: ignore[attr-defined]
    app.sync = sync  # type: ignore[attr-defined]
    app.status = status  # type: ignore[attr-defined]
    app.deliveries = deliveries  # type: ignore[attr-defined]
    return app
