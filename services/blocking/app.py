"""The blocking service's FastStream app."""

from faststream import FastStream

from shared.identity import Hasher
from shared.service import Clock, Service
from shared.settings import Settings

from services.blocking import handlers
from services.blocking.domain import ExclusionView
from services.blocking.repository import INDEXES, MongoActiveExclusions


def create_app(settings: Settings | None = None, *, clock: Clock | None = None, database=None) -> FastStream:
    settings = settings or Settings()
    service = Service("blocking", settings, indexes=INDEXES, database=database)
    if clock is not None:
        service.clock = clock
    view = ExclusionView()

    async def load_view() -> None:
        async for exclusion in MongoActiveExclusions(service.db).in_force(service.clock()):
            view.add(exclusion)
        service.log.info("view_loaded", exclusions=len(view))

    handlers.register(service, Hasher.from_settings(settings), view)
    return service.app(on_start=load_view)
