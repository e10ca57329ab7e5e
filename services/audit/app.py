"""The audit service's FastStream app."""

import os
import socket

from faststream import FastStream

from services.audit import handlers
from services.audit.checkpoints import Signer
from services.audit.repository import INDEXES, MongoAuditLog
from shared.identity import Hasher
from shared.service import Clock, Service, Ticker
from shared.settings import Settings


def create_app(settings: Settings | None = None, *, clock: Clock | None = None, database=None) -> FastStream:
    settings = settings or Settings()
    service = Service("audit", settings, indexes=INDEXES, database=database)
    if clock is not None:
        service.clock = clock
    log: list[MongoAuditLog] = []
    signer = Signer.from_settings(settings)  # refuses an insecure key before anything starts
    writer = f"{socket.gethostname()}:{os.getpid()}"

    async def checkpoint() -> None:
        """Write the heads of the chains this instance appends to, signed."""
        if signer is not None and log and (tails := log[0].tails()):
            await log[0].save_checkpoint(signer.checkpoint(tails, service.clock(), writer))

    ticker = Ticker("audit.checkpoints", checkpoint, settings.audit_checkpoint_seconds if signer else 0)

    async def open_log() -> None:
        log[:] = [MongoAuditLog(service.db)]
        if signer is None:
            service.log.warning("audit_checkpoints_off", reason="SELFEX_AUDIT_SIGNING_KEY is not set")
        ticker.start()

    handlers.register(service, Hasher.from_settings(settings), log)
    app = service.app(on_start=open_log)

    @app.on_shutdown
    async def stop_ticker() -> None:
        await ticker.stop()
        try:
            await checkpoint()  # the heads as this instance leaves them
        except Exception:  # noqa: BLE001 — the store may be gone already; the next instance writes one
            service.log.warning("audit_checkpoint_failed_on_stop")

    return app
