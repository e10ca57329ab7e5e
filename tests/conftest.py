"""Infrastructure selection: servers named by the environment, else containers, else embedded.

- ``SELFEX_KAFKA_BOOTSTRAP`` and ``SELFEX_MONGO_URI`` set: those servers are used as they are.
- a Docker engine answers: real Kafka (KRaft) and a MongoDB replica set through testcontainers.
- otherwise: the embedded Tansu broker and nx-27017 store, started for the session.

Every test gets its own topic prefix and database, so tests never read each other's messages.
"""

import asyncio
import gc
import os
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from shared.infra import EMBEDDED_SESSION_TIMEOUT_MS, EmbeddedInfra, free_port
from shared.settings import Settings
from shared.store import create_client
from tests.support import TEST_ENCRYPTION_KEYS, TEST_HASH_SECRET


@dataclass(frozen=True)
class Servers:
    kind: str  # external | containers | embedded
    kafka_bootstrap: str
    mongo_uri: str
    idempotence: bool
    session_timeout_ms: int


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:  # noqa: BLE001 — no engine, no socket, no permission: all mean no Docker
        return False


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    kafka, mongo = os.environ.get("SELFEX_KAFKA_BOOTSTRAP"), os.environ.get("SELFEX_MONGO_URI")
    if kafka and mongo:
        yield Servers("external", kafka, mongo, os.environ.get("SELFEX_KAFKA_IDEMPOTENCE", "true") == "true", 10_000)
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer
        from testcontainers.mongodb import MongoDbContainer

        with KafkaContainer().with_kraft() as kafka_container, MongoDbContainer("mongo:7") as mongo_container:
            yield Servers(
                "containers",
                kafka_container.get_bootstrap_server(),
                mongo_container.get_connection_url(),
                True,
                10_000,
            )
        return
    infra = EmbeddedInfra(tmp_path_factory.mktemp("infra"), kafka_port=free_port(), mongo_port=free_port())
    infra.start()
    try:
        yield Servers("embedded", infra.kafka_bootstrap, infra.mongo_uri, False, EMBEDDED_SESSION_TIMEOUT_MS)
    finally:
        infra.stop()


TASKS_SHOWN_BEFORE_TIMEOUT_SECONDS = 15
# pytest-timeout's signal raises in whatever code runs when it fires: in an asyncio program, often
# another task (a server's request, a consumer's loop), which swallows it while the test waits on.
# A test still running this long after its timeout ends its worker instead, so the run fails (xdist
# reports the crash and goes on with a new worker) rather than hanging until CI's own limit.
ENDED_AFTER_TIMEOUT_SECONDS = 30


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """A test about to hit pytest-timeout first prints every running event loop's tasks and where
    each waits: pytest-timeout shows only the threads' stacks, which for a hang in asyncio (a
    fixture's teardown awaiting a consumer's stop, say) all end in the loop's select."""
    marker = item.get_closest_marker("timeout")
    seconds = float(marker.args[0]) if marker and marker.args else float(item.config.getini("timeout") or 0)
    timers = []
    if seconds > TASKS_SHOWN_BEFORE_TIMEOUT_SECONDS:
        timers.append(threading.Timer(seconds - TASKS_SHOWN_BEFORE_TIMEOUT_SECONDS, _show_tasks_of_running_loops))
    if seconds > 0:
        timers.append(threading.Timer(seconds + ENDED_AFTER_TIMEOUT_SECONDS, _end_this_worker, args=(item.nodeid, seconds)))
    for timer in timers:
        timer.daemon = True
        timer.start()
    try:
        yield
    finally:
        for timer in timers:
            timer.cancel()


def _end_this_worker(nodeid: str, seconds: float) -> None:
    print(
        f"\n--- {nodeid} still runs {ENDED_AFTER_TIMEOUT_SECONDS} s after its {seconds:g} s timeout (pytest-timeout's "
        "signal landed in another asyncio task): ending this test process so the run fails instead of hanging ---",
        file=sys.stderr,
        flush=True,
    )
    os._exit(1)


def _show_tasks_of_running_loops() -> None:
    for loop in [o for o in gc.get_objects() if isinstance(o, asyncio.AbstractEventLoop) and o.is_running()]:
        loop.call_soon_threadsafe(_show_tasks, loop)


def _show_tasks(loop: asyncio.AbstractEventLoop) -> None:
    tasks = asyncio.all_tasks(loop)
    lines = [f"--- about to time out: {len(tasks)} asyncio tasks, each where it waits ---"]
    for task in tasks:
        lines.append(f"{task.get_name()}:")
        awaited: object = task.get_coro()
        while awaited is not None:  # down the chain of awaits (a suspended task's own stack is one frame)
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None) or getattr(awaited, "ag_frame", None)
            if frame is None:
                lines.append(f"    awaiting {awaited!r}"[:300])
                break
            lines.append(f"    {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_qualname}")
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None) or getattr(awaited, "ag_await", None)
    print("\n" + "\n".join(lines), file=sys.stderr, flush=True)


def pytest_report_header(config) -> str:
    return "selfex infrastructure: external if SELFEX_KAFKA_BOOTSTRAP/SELFEX_MONGO_URI, else containers if Docker answers, else embedded"


@pytest.fixture
def settings(servers: Servers) -> Settings:
    """Settings for one test: the session's servers, with a topic prefix and database of its own."""
    tag = uuid.uuid4().hex[:10]
    return Settings(
        kafka_bootstrap=servers.kafka_bootstrap,
        mongo_uri=servers.mongo_uri,
        mongo_db=f"t_{tag}",
        topic_prefix=f"t{tag}.",
        topic_partitions=3,
        kafka_idempotence=servers.idempotence,
        kafka_session_timeout_ms=servers.session_timeout_ms,
        kafka_leave_group_on_stop=servers.kind != "embedded",
        # A shared CI machine can stall a view's feed for seconds; the tests of the bound set a short one.
        blocking_view_max_lag_seconds=30.0,
        gateway_feed_max_lag_seconds=30.0,
        hash_secret=TEST_HASH_SECRET,
        encryption_keys=TEST_ENCRYPTION_KEYS,
        encryption_key_id="t1",
        log_format="console",
    )


@pytest_asyncio.fixture
async def database(settings: Settings):
    client = create_client(settings)
    try:
        yield client[settings.mongo_db]
    finally:
        await client.drop_database(settings.mongo_db)
        await client.close()


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
