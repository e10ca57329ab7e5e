"""The gateway's FastAPI app."""

from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pymongo.errors import PyMongoError

from shared.logging import configure_logging
from shared.settings import Settings
from shared.store import create_client

log = structlog.get_logger("gateway")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_format, service="gateway")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.mongo = create_client(settings)
        app.state.db = app.state.mongo[settings.mongo_db]
        log.info("gateway_started", host=settings.gateway_host, port=settings.gateway_port)
        try:
            yield
        finally:
            await app.state.mongo.close()

    app = FastAPI(title="Selfex", version="0.1.0", lifespan=lifespan)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> JSONResponse:
        """200 when the gateway can reach its store, 503 when it cannot."""
        try:
            await app.state.db.command("ping")
        except PyMongoError as exc:
            return JSONResponse({"status": "unavailable", "store": type(exc).__name__}, status_code=503)
        return JSONResponse({"status": "ok"})

    return app
