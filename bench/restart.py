"""``python -m bench.restart``: how long a restarted blocking instance takes to be ready.

For each size N: N active exclusions written to blocking's projection (as ``selfex bench decisions``
does); one ``selfex run blocking`` started (a cold start: no view snapshot yet) and timed until its
``GET /readyz`` answers 200; then, once it has stored a snapshot of its view (which it does soon
after a start that found none), stopped, and another started and timed the same way (the restart). Ready means the view loaded, caught up with the
lifecycle topic and the instance in its account-events group.

Starts embedded servers on free ports unless SELFEX_KAFKA_BOOTSTRAP and SELFEX_MONGO_URI name real
ones. A benchmark, not a test: it reports what it measures and asserts nothing.
"""

import argparse
import asyncio
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from bench.decisions import child, logged_seconds, servers, service_environment
from bench.workload import Workload, insert_exclusion_documents
from services.blocking.repository import EXCLUSIONS, INDEXES, SNAPSHOT_CHUNKS, SNAPSHOTS
from shared.broker import ensure_topics
from shared.identity import Hasher
from shared.infra import free_port
from shared.settings import Settings
from shared.store import open_database

READY_TIMEOUT_SECONDS = 900


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.restart", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="active exclusions to load, comma-separated")
    parser.add_argument("--logs", default="", help="keep the instances' logs in this folder")
    parser.add_argument("--database", default="", help="reuse this database (loaded once, kept) instead of a new one per size")
    args = parser.parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    with tempfile.TemporaryDirectory(prefix="selfex-restart-") as workdir, servers(Settings(), Path(workdir)) as (settings, kind):
        print(f"blocking restart: servers {kind}", flush=True)
        for size in sizes:
            logs = Path(args.logs or workdir)
            logs.mkdir(parents=True, exist_ok=True)
            result = asyncio.run(restart_size(settings, size, logs, args.database))
            print(
                f"{size:,} active exclusions: stored in {result['store_s']:.1f} s; cold start ready in {result['cold_s']:.1f} s "
                f"(view loaded in {result['cold_load_s']:.1f} s); snapshot stored {result['snapshot_s']:.1f} s after that; "
                f"restart ready in {result['restart_s']:.1f} s (view loaded in {result['restart_load_s']:.1f} s)",
                flush=True,
            )
    return 0


async def restart_size(settings: Settings, size: int, workdir: Path, database_name: str) -> dict:
    tag = uuid.uuid4().hex[:6]
    name = f"{database_name}_{size}" if database_name else f"restart_{tag}_{size}"
    settings = settings.model_copy(
        update={"topic_prefix": f"restart{tag}.", "mongo_databases": {"blocking": name}, "health_port": free_port()}
    )
    await ensure_topics(settings)
    client, database = await open_database(settings, "blocking", INDEXES)
    try:
        started = time.perf_counter()
        if await database[EXCLUSIONS].estimated_document_count() != size:
            await database[EXCLUSIONS].drop()
            workload = Workload(hasher=Hasher.from_settings(settings), exclusions=size)
            for chunk in workload.exclusion_documents(10_000):
                await insert_exclusion_documents(database, chunk)
        store_s = time.perf_counter() - started
        for collection in (SNAPSHOTS, SNAPSHOT_CHUNKS):  # the cold start finds no snapshot
            await database[collection].delete_many({})
        environment = {**service_environment(settings), "SELFEX_HEALTH_PORT": str(settings.health_port)}

        async def snapshot_written() -> float:
            waited = time.perf_counter()
            while await database[SNAPSHOTS].count_documents({}) == 0:
                await asyncio.sleep(0.5)
                if time.perf_counter() - waited > READY_TIMEOUT_SECONDS:
                    raise TimeoutError("no snapshot written")
            return time.perf_counter() - waited

        cold_s, cold_log, snapshot_s = await time_to_ready(
            environment, workdir / f"cold-{tag}-{size}.log", settings.health_port, snapshot_written
        )
        restart_s, restart_log, _ = await time_to_ready(environment, workdir / f"restart-{tag}-{size}.log", settings.health_port)
    finally:
        if not database_name:
            await client.drop_database(name)
        await client.close()
    return {
        "store_s": store_s,
        "cold_s": cold_s,
        "cold_load_s": logged_seconds(cold_log, "view_loaded"),
        "snapshot_s": snapshot_s,
        "restart_s": restart_s,
        "restart_load_s": logged_seconds(restart_log, "view_loaded"),
    }


async def time_to_ready(environment: dict[str, str], log_path: Path, port: int, then=None) -> tuple[float, Path, object]:
    """Start one instance, time it until /readyz answers 200, await ``then()`` if given, stop it."""
    started = time.perf_counter()
    with child([sys.executable, "-m", "selfex.cli", "run", "blocking"], environment, log_path) as process:
        while not await asyncio.to_thread(ready, port):
            if process.poll() is not None:
                raise RuntimeError(f"blocking exited with {process.returncode}: {(await asyncio.to_thread(log_path.read_text))[-2000:]}")
            if time.perf_counter() - started > READY_TIMEOUT_SECONDS:
                raise TimeoutError("blocking not ready")
            await asyncio.sleep(0.1)
        ready_s = time.perf_counter() - started
        return ready_s, log_path, (await then() if then is not None else None)


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
            return answer.status == 200
    except (urllib.error.URLError, OSError):
        return False


if __name__ == "__main__":
    sys.exit(main())
