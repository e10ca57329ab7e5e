"""The MongoDB factory: one async client per process, and the indexes each service declares."""

from collections.abc import Mapping, Sequence

import structlog
from pymongo import AsyncMongoClient, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from shared.identity import Hasher
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


async def stale_hashes(collection: AsyncCollection, hasher: Hasher, field: str, projection: Sequence[str] = ()) -> list[dict]:
    """The documents whose ``field`` (an identifier hash, or a list of them) holds one not in the
    newest form of ``hasher``'s chain: what ``selfex rehash`` re-keys. A whole scan, once."""
    wanted = {name: 1 for name in (field, *projection)}
    found = []
    async for document in collection.find({}, wanted):
        value = document.get(field)
        if any(isinstance(h, str) and not hasher.is_newest(h) for h in (value if isinstance(value, list) else [value])):
            found.append(document)
    return found
