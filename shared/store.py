"""The MongoDB factory: one async client per process, and the indexes each service declares."""

from collections.abc import Mapping, Sequence

import structlog
from pymongo import AsyncMongoClient, IndexModel
from pymongo.asynchronous.database import AsyncDatabase

from shared.settings import Settings

log = structlog.get_logger(__name__)

Indexes = Mapping[str, Sequence[IndexModel]]


def create_client(settings: Settings) -> AsyncMongoClient:
    return AsyncMongoClient(
        settings.mongo,
        tz_aware=True,
        serverSelectionTimeoutMS=10_000,
        appname="selfex",
    )


async def open_database(settings: Settings, service: str, indexes: Indexes | None = None) -> tuple[AsyncMongoClient, AsyncDatabase]:
    """Connect to ``service``'s own database (``Settings.database_for``), and create the indexes it
    declares (creating an existing one is a no-op)."""
    client = create_client(settings)
    database = client[settings.database_for(service)]
    await ensure_indexes(database, indexes or {})
    return client, database


async def ensure_indexes(database: AsyncDatabase, indexes: Indexes) -> None:
    for collection, models in indexes.items():
        if models:
            await database[collection].create_indexes(list(models))
    log.info("store_ready", database=database.name, collections=sorted(indexes))
