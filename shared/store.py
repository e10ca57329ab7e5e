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


async def open_database(settings: Settings, indexes: Indexes = {}) -> tuple[AsyncMongoClient, AsyncDatabase]:
    """Connect, and create the indexes the service declares (creating an existing one is a no-op)."""
    client = create_client(settings)
    database = client[settings.mongo_db]
    await ensure_indexes(database, indexes)
    return client, database


async def ensure_indexes(database: AsyncDatabase, indexes: Indexes) -> None:
    for collection, models in indexes.items():
        if models:
            await database[collection].create_indexes(list(models))
    log.info("store_ready", database=database.name, collections=sorted(indexes))
