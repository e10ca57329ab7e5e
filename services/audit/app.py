"""The audit service's FastStream app."""

from faststream import FastStream

from services.audit import handlers
from services.audit.repository import INDEXES, MongoAuditLog
from shared.identity import Hasher
from shared.service import Clock, Service
from shared.settings import Settings


def create_app(settings: Settings | None = None, *, clock: Clock | None = None, database=None) -> FastStream:
    settings = settings or Settings()
    service = Service("audit", settings, indexes=INDEXES, database=database)
    if clock is not None:
        service.clock = clock
    log: list[MongoAuditLog] = []

    async def open_log() -> None:
        log[:] = [MongoAuditLog(service.db)]

    handlers.register(service, Hasher.from_settings(settings), log)
    return service.app(on_start=open_log)
