"""The registration service's FastStream app."""

from faststream import FastStream

from shared.identity import Hasher
from shared.service import Clock, Service
from shared.settings import Settings

from services.registration import handlers
from services.registration.repository import INDEXES


def create_app(settings: Settings | None = None, *, clock: Clock | None = None, database=None) -> FastStream:
    settings = settings or Settings()
    service = Service("registration", settings, indexes=INDEXES, database=database)
    if clock is not None:
        service.clock = clock
    handlers.register(service, Hasher.from_settings(settings))
    return service.app()
