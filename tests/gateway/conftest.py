"""The gateway over real HTTP: uvicorn on a free port, the real broker and store, registration running.

A world (gateway + registration, optionally audit) is started once per test module and shared by its
tests, which keeps the suite fast; each test makes people of its own, so tests do not see each other.
"""

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import pytest_asyncio
import uvicorn
from pymongo import AsyncMongoClient

from services.gateway.access import Role
from services.gateway.app import create_app
from services.gateway.operators import add, add_staff
from services.gateway.repository import INDEXES, MongoOperators
from shared.infra import free_port
from shared.settings import Settings
from shared.store import create_client, ensure_indexes
from tests.support import TEST_ENCRYPTION_KEYS, TEST_HASH_SECRET, entered_together, eventually


def settings_for(servers, **overrides) -> Settings:
    """Settings of one world: the session's servers, a topic prefix and database of its own."""
    tag = uuid.uuid4().hex[:10]
    values = dict(
        kafka_bootstrap=servers.kafka_bootstrap,
        mongo_uri=servers.mongo_uri,
        mongo_db=f"g_{tag}",
        topic_prefix=f"g{tag}.",
        topic_partitions=3,
        kafka_idempotence=servers.idempotence,
        kafka_session_timeout_ms=servers.session_timeout_ms,
        kafka_leave_group_on_stop=servers.kind != "embedded",
        hash_secret=TEST_HASH_SECRET,
        encryption_keys=TEST_ENCRYPTION_KEYS,
        encryption_key_id="t1",
        log_format="console",
        log_level="WARNING",
        gateway_rate_per_second=10_000.0,
        gateway_rate_burst=10_000,
        gateway_key_cache_seconds=0.0,
        gateway_read_your_write_seconds=20.0,
        registration_timer_seconds=0.0,
        # A shared CI machine can stall a feed for seconds; the tests of the bound set a short one.
        gateway_feed_max_lag_seconds=30.0,
        blocking_view_max_lag_seconds=30.0,
    )
    values.update(overrides)
    return Settings(**values)


@dataclass
class World:
    settings: Settings
    database: object
    base_url: str
    client: httpx.AsyncClient
    keys: dict[str, str] = field(default_factory=dict)
    operator_ids: dict[str, str] = field(default_factory=dict)
    app: object = None  # the gateway's FastAPI app (its state holds the feed and the gateway)

    async def operator(self, name: str, roles, *, of: str | None = None) -> str:
        """A new operator whose key carries these roles (or the scope names keys had before roles);
        ``of``: another key of that operator of this world instead. Returns the key. Names are made
        unique to the world: nx-27017 keeps one set of collections for every database name."""
        owner = f"{of}-{self.settings.mongo_db}" if of else None
        issued = await add(MongoOperators(self.database), f"{name}-{self.settings.mongo_db}", roles, of=owner)
        self.keys[name] = issued.key
        self.operator_ids[name] = issued.operator.operator_id
        return issued.key

    async def staff(self, name: str, role: Role) -> str:
        """A register staff or regulator key; returns it."""
        issued = await add_staff(MongoOperators(self.database), f"{name}-{self.settings.mongo_db}", role)
        self.keys[name] = issued.key
        self.operator_ids[name] = issued.operator.id
        return issued.key


@asynccontextmanager
async def serving(app, port: int) -> AsyncIterator[None]:
    """uvicorn serving ``app`` on 127.0.0.1:``port`` until the block ends."""
    # An idle keep-alive connection is kept for a minute, not uvicorn's 5 s: httpx keeps one as long,
    # and a request sent on one the server is closing at that moment fails with a ReadError.
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on", timeout_keep_alive=60)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())

    async def started():
        if task.done():
            task.result()  # raises what stopped it
            raise AssertionError("uvicorn stopped before it started")
        return server.started

    try:
        await eventually(started, timeout=60, what="the gateway to start")
        yield
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


class Clock:
    """Time that moves only when the test says so (shared by the gateway and registration)."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@asynccontextmanager
async def world(
    servers,
    *,
    registration: bool = True,
    audit: bool = False,
    clock: Clock | None = None,
    gateway_mongo_uri: str | None = None,
    ready: bool = True,
    **overrides,
) -> AsyncIterator[World]:
    """The gateway (and registration, and audit if asked) on the real servers, one database.

    ``gateway_mongo_uri``: the gateway alone reaches the store there (e.g. through a proxy the test
    cuts), giving up on a server after a second. ``ready``: yield once ``/readyz`` answers 200 (the
    gateway answers checks only once its feed has caught up with the lifecycle topic).
    """
    settings = settings_for(servers, **overrides)
    client = create_client(settings)
    database = client[settings.mongo_db]
    gateway_client = AsyncMongoClient(gateway_mongo_uri, tz_aware=True, serverSelectionTimeoutMS=1000) if gateway_mongo_uri else None
    gateway_database = gateway_client[settings.mongo_db] if gateway_client else database
    port = free_port()
    try:
        async with AsyncExitStack() as stack:
            await ensure_indexes(database, INDEXES)
            services = []
            if registration:
                from services.registration.app import create_app as registration_app

                services.append(registration_app(settings, database=database, clock=clock))
            if audit:
                from services.audit.app import create_app as audit_app

                services.append(audit_app(settings, database=database))
            app = create_app(settings, database=gateway_database, clock=clock)
            await entered_together(stack, [*services, serving(app, port)])
            http = await stack.enter_async_context(httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60))
            the_world = World(settings, database, f"http://127.0.0.1:{port}", http, app=app)
            await the_world.operator("checker", {Role.OPERATOR})
            await the_world.operator("excluder", {Role.OPERATOR})
            await the_world.operator("compliance", {Role.OPERATOR_COMPLIANCE}, of="excluder")
            await the_world.staff("staff", Role.REGISTER_STAFF)
            await the_world.staff("regulator", Role.REGULATOR)
            if ready:

                async def is_ready():
                    return (await http.get("/readyz")).status_code == 200

                await eventually(is_ready, timeout=60, what="the gateway to be ready")
            yield the_world
    finally:
        if gateway_client is not None:
            await gateway_client.close()
        await client.drop_database(settings.mongo_db)
        await client.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gw(servers) -> AsyncIterator[World]:
    """One gateway + registration for the whole module."""
    async with world(servers) as the_world:
        yield the_world


def uid_of(personnummer: str) -> str:
    return hashlib.sha256(personnummer.encode()).hexdigest()


def new_uid() -> str:
    """A personnummer nobody else in the run has."""
    return uid_of(f"19{uuid.uuid4().int % 10**10:010d}")


def new_person(**fields) -> dict[str, str]:
    """GAMSTOP form fields of someone new."""
    tag = uuid.uuid4().hex[:8]
    person = {
        "firstName": "Harriet",
        "lastName": f"Smith{tag}",
        "dateOfBirth": "1985-04-12",
        "email": f"harriet.{tag}@example.com",
        "postcode": "GU1 1AA",
    }
    person.update(fields)
    return person
