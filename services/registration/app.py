"""The registration service's FastStream app."""

from datetime import timedelta

from faststream import FastStream
from pymongo.asynchronous.database import AsyncDatabase

from services.registration import handlers
from services.registration.outbox import Outbox, Publish
from services.registration.registrar import Registrar
from services.registration.repository import INDEXES, MongoExclusions
from services.registration.timers import Timers
from shared.crypto import Sealer
from shared.identity import Hasher
from shared.policies import Policy, load_policies
from shared.service import Clock, Service
from shared.settings import Settings

RELAY_EVERYTHING = timedelta(days=365 * 100)


class _Deferred:
    """The store opens in the app's lifespan; the repository reaches it through the service."""

    def __init__(self, service: Service) -> None:
        self._service = service

    def __getitem__(self, name: str):
        return self._service.db[name]


def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    database: AsyncDatabase | None = None,
    policies: dict[str, Policy] | None = None,
    publish: Publish | None = None,
) -> FastStream:
    """The app; ``app.timers.tick(now)`` runs one pass of the timer loop (tests move time with it)."""
    settings = settings or Settings()
    service = Service("registration", settings, indexes=INDEXES, database=database)
    if clock is not None:
        service.clock = clock
    policies = policies or load_policies()  # a broken policy file stops the start, naming the file
    exclusions = MongoExclusions(_Deferred(service))  # type: ignore[arg-type]
    outbox = Outbox(exclusions, publish or service.publish)
    registrar = Registrar(
        exclusions, outbox, policies, Hasher.from_settings(settings), Sealer.from_settings(settings), service.clock, service.publish
    )
    timers = Timers(exclusions, outbox, policies, service.clock, settings.registration_timer_seconds)

    async def start() -> None:
        # Publish what a crash left in any outbox before the first message is consumed.
        await service.broker.connect()
        if written := await exclusions.backfill_pointers():
            service.log.info("pointers_backfilled", pointers=written)
        await outbox.relay(service.clock() + RELAY_EVERYTHING)
        timers.start()

    handlers.register(service, registrar)
    app = service.app(on_start=start)
    app.on_shutdown(timers.stop)
    app.timers = timers  # type: ignore[attr-defined]
    app.registrar = registrar  # type: ignore[attr-defined]
    return app
