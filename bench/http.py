"""``selfex bench http``: how fast the gateway answers checks, against the machine's limit.

Starts embedded servers on free ports unless SELFEX_KAFKA_BOOTSTRAP and SELFEX_MONGO_URI name real
ones. For each size N (loaded incrementally: the second size adds to the first):

1. N exclusions written in bulk, each service's share into its own database through its own
   repository (registration's exclusions, persons, pointers and claims; the gateway's lookup and
   views; 1 in 20 already expired);
2. the gateway started as its own process (uvicorn, as ``selfex run gateway`` does), its app with a
   constant-answer route added by the bench (``app_with_constant``) on the same middleware stack;
3. at C concurrent keep-alive clients (closed loop): the constant answer (the stack's limit) and the
   GAMSTOP check taking turns for R rounds (the median round's ratio is reported), the ChipOut status
   call (half the people excluded, half unknown; every answer checked), and a bare indexed lookup in
   the store from this process (the store's limit);
4. the GAMSTOP check at a fixed offered rate (open loop): p50 / p99 latency from when each request
   was due.

CPU seconds of the gateway, the store and the load generator are read from /proc during each run,
so the report says what limited what. A benchmark, not a test: it reports and asserts nothing.
"""

import argparse
import asyncio
import hashlib
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import httpx
from fastapi import APIRouter, FastAPI
from fastapi.responses import Response
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from bench import loadgen
from services.gateway import repository as gateway_store
from services.gateway.access import ALL_PERMISSIONS as ALL_SCOPES
from services.gateway.domain import Summary
from services.gateway.operators import add
from services.gateway.views import view_of
from services.registration import repository as registration_store
from services.registration.domain import Exclusion
from shared.events import SCOPE_ALL, Channel, ExclusionState, utcnow
from shared.identity import Hasher, IdentifierKind, Identity
from shared.infra import EmbeddedInfra, free_port
from shared.settings import Settings
from shared.store import create_client, ensure_indexes

BATCH = 5_000
SAMPLE = 2_000  # distinct requests per workload, half of them for people not excluded
EXPIRED_EVERY = 20
HOST = "127.0.0.1"
CHECK_TARGET = 0.70  # the target: a check at 70% of the constant answer or more
CONSTANT_PATH = "/_bench/constant"  # only the bench's app (app_with_constant) has it


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="selfex bench http", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="exclusions loaded, comma-separated (ascending)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent keep-alive clients")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each closed-loop run")
    parser.add_argument("--rate", type=float, default=500.0, help="offered requests/s in the latency run")
    parser.add_argument("--latency-seconds", type=float, default=10.0, help="length of the latency run")
    parser.add_argument("--rounds", type=_positive, default=3, help="closed-loop rounds of the constant and the check, taking turns")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before each closed-loop run is measured")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    sizes = sorted(int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip())
    settings = Settings()
    with tempfile.TemporaryDirectory(prefix="selfex-bench-http-") as workdir, servers(settings, Path(workdir)) as (settings, infra):
        report = _run_loop(run(args, sizes, settings, infra, Path(workdir)))
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError("a whole number of at least 1")
    return int(text)


def _run_loop(coroutine):
    try:
        import uvloop

        return uvloop.run(coroutine)
    except ImportError:
        return asyncio.run(coroutine)


@contextmanager
def servers(settings: Settings, workdir: Path) -> Iterator[tuple[Settings, EmbeddedInfra | None]]:
    if settings.kafka_bootstrap and settings.mongo_uri:
        yield settings, None
        return
    infra = EmbeddedInfra(workdir / "infra", kafka_port=free_port(), mongo_port=free_port())
    with infra:
        yield infra.settings_for(settings), infra


async def run(args, sizes: list[int], settings: Settings, infra: EmbeddedInfra | None, workdir: Path) -> dict:
    tag = uuid.uuid4().hex[:8]
    settings = settings.model_copy(
        update={
            "mongo_db": f"bench_http_{tag}",
            "topic_prefix": f"bench{tag}.",
            "gateway_rate_per_second": 1e9,
            "gateway_rate_burst": 10**9,
            "log_level": "WARNING",
        }
    )
    client = create_client(settings)
    stores = Stores.of(client, settings)
    await stores.indexed()
    report: dict = {
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "store": "nx-27017 (embedded)" if infra else settings.mongo,
        },
        "settings": {
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "seconds": args.seconds,
            "rate": args.rate,
            "latency_seconds": args.latency_seconds,
        },
        "sizes": {},
    }
    try:
        key = (await add(gateway_store.MongoOperators(stores.gateway), f"bench-{tag}", ALL_SCOPES)).key
        hasher = Hasher.from_settings(settings)
        loaded = 0
        for size in sizes:
            progress(f"loading exclusions {loaded:,} to {size:,}")
            started = time.perf_counter()
            await load(stores, hasher, loaded, size)
            load_seconds = time.perf_counter() - started
            loaded = size
            progress(f"loaded {size:,} exclusions in {load_seconds:.0f} s; measuring")
            figures = await measure(args, settings, stores.gateway, hasher, key, size, infra, workdir)
            report["sizes"][str(size)] = {"load_seconds": round(load_seconds, 1), **figures}
    finally:
        try:
            for name in ("registration", "gateway"):
                await client.drop_database(settings.database_for(name))
        finally:
            await client.close()
    return report


def progress(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


# --- the people and their exclusions -------------------------------------------------------------


def person(i: int) -> Identity:
    return Identity(
        uid=hashlib.sha256(f"{i:012d}".encode()).hexdigest(),
        first_name=f"Bench{i}",
        last_name=f"Person{i}",
        date_of_birth=date(1950 + i % 50, 1 + i % 12, 1 + i % 28),
        postcode=f"BN{10 + i % 90} {i % 9}AA",
        email=f"bench{i}@example.com",
    )


def expired(i: int) -> bool:
    return i % EXPIRED_EVERY == 0


@dataclass(frozen=True)
class Stores:
    """The databases the loader writes, each through its own service's repository."""

    registration: AsyncDatabase
    gateway: AsyncDatabase

    @classmethod
    def of(cls, client: AsyncMongoClient, settings: Settings) -> "Stores":
        return cls(client[settings.database_for("registration")], client[settings.database_for("gateway")])

    async def indexed(self) -> None:
        await ensure_indexes(self.registration, registration_store.INDEXES)
        await ensure_indexes(self.gateway, gateway_store.INDEXES)


async def load(stores: Stores, hasher: Hasher, start: int, stop: int) -> None:
    """Exclusions ``start``..``stop``-1, each service's share in its own database through its own
    repository: registration's exclusions, persons, pointers and claims (so it matches the loaded
    people and refuses a second running exclusion for them), the gateway's lookup and views (as its
    lifecycle consumer would have made them from each exclusion's snapshot).

    Each person is looked up by national id (ChipOut) and by name + birth date + postcode (GAMSTOP).
    """
    now = utcnow()
    exclusions = registration_store.MongoExclusions(stores.registration)
    lookup, views = gateway_store.MongoLookup(stores.gateway), gateway_store.MongoViews(stores.gateway)
    pending: list[asyncio.Task] = []
    for first in range(start, stop, BATCH):
        # A thread builds this batch while the store inserts the last one.
        batch = await asyncio.to_thread(_batch, hasher, first, min(stop, first + BATCH), now)
        await asyncio.gather(*pending)
        if first and first % 100_000 == 0:
            progress(f"  {first:,} loaded")
        pending = [
            asyncio.create_task(exclusions.insert_loaded(batch.exclusions, at=now)),
            asyncio.create_task(lookup.insert_many(batch.lookup)),
            asyncio.create_task(views.insert_many(batch.views)),
        ]
    await asyncio.gather(*pending)


@dataclass
class Batch:
    exclusions: list[Exclusion]
    lookup: dict[str, list[Summary]]
    views: list[dict]


def _batch(hasher: Hasher, first: int, stop: int, now: datetime) -> Batch:
    batch = Batch([], {}, [])
    for i in range(first, stop):
        exclusion = _exclusion(i, hasher, now)
        snapshot = exclusion.snapshot()
        batch.exclusions.append(exclusion)
        batch.views.append(view_of(snapshot, exclusion.person_id))
        for identifier in exclusion.identifiers:
            batch.lookup[identifier] = [Summary.from_snapshot(snapshot, exclusion.person_id)]
    return batch


def _exclusion(i: int, hasher: Hasher, now: datetime) -> Exclusion:
    identity = person(i)
    hashes = hasher.identifiers(identity)
    identifiers = sorted((hashes[IdentifierKind.NATIONAL_ID], hashes[IdentifierKind.NAME_DOB_POSTCODE]))
    request_id = uuid.UUID(int=i + 1)
    starts = now - timedelta(days=400 if expired(i) else 10)
    ends = starts + timedelta(days=365)
    return Exclusion(
        id=uuid.uuid5(uuid.NAMESPACE_URL, f"bench-exclusion-{i}"),
        person_id=f"bench-person-{i}",
        identifiers=identifiers,
        scope=SCOPE_ALL,
        jurisdiction="SE",
        duration="+12m",
        channel=Channel.OPERATOR,
        state=ExclusionState.EXPIRED if expired(i) else ExclusionState.ACTIVE,
        created_at=starts,
        starts_at=starts,
        ends_at=ends,
        ended_at=ends if expired(i) else None,
        request_id=request_id,
        request_ids=[str(request_id)],
        requested_by="bench",
        causes=[str(request_id)],
        next_transition_at=None if expired(i) else ends,
    )


# --- the runs ------------------------------------------------------------------------------------


def workloads(key: str, size: int, host: str) -> dict[str, list[loadgen.Request]]:
    chosen = random.Random(size)
    known = [chosen.randrange(size) for _ in range(SAMPLE // 2)]
    people = [(i, "P" if expired(i) else "Y") for i in known] + [(size + k, "N") for k in range(SAMPLE // 2)]
    chosen.shuffle(people)
    gamstop, status, constant = [], [], []
    for i, answer in people:
        identity = person(i)
        form = urlencode(
            {
                "firstName": identity.first_name,
                "lastName": identity.last_name,
                "dateOfBirth": str(identity.date_of_birth),
                "email": identity.email,
                "postcode": identity.postcode,
            }
        ).encode()
        form_headers = {"X-API-Key": key, "Content-Type": "application/x-www-form-urlencoded"}
        gamstop.append(loadgen.Request(loadgen.http_request("POST", "/", host, headers=form_headers, body=form), _answered(answer)))
        constant.append(loadgen.Request(loadgen.http_request("POST", CONSTANT_PATH, host, headers=form_headers, body=form), _status(200)))
        query = urlencode({"key": key, "uid": identity.uid})
        status.append(
            loadgen.Request(loadgen.http_request("GET", f"/v1.3/customer-status?{query}", host), _status(200 if answer == "Y" else 204))
        )
    return {"constant": constant, "gamstop": gamstop, "chipout_status": status}


def _answered(answer: str) -> loadgen.Check:
    expected = answer.encode()
    return lambda status, headers, body: status == 200 and headers.get(b"x-exclusion") == expected


def _status(code: int) -> loadgen.Check:
    return lambda status, headers, body: status == code


async def measure(args, settings: Settings, database, hasher: Hasher, key: str, size: int, infra, workdir: Path) -> dict:
    port = free_port()
    requests = workloads(key, size, f"{HOST}:{port}")
    figures: dict = {}
    with gateway_process(settings, port, workdir / f"gateway-{size}.log") as gateway:
        await _healthy(port, gateway)
        processes = {"gateway": gateway.pid, "client": os.getpid()}
        if infra is not None:
            processes |= {"store": infra.processes["mongo"].pid, "broker": infra.processes["kafka"].pid}

        async def closed_loop(name: str) -> dict:
            progress(f"  {name} at {args.concurrency} clients")
            before = _cpu(processes)
            result = await loadgen.closed_loop(
                HOST, port, requests[name], connections=args.concurrency, seconds=args.seconds, warmup=args.warmup
            )
            return result.as_json() | {"cpu_percent": _cpu_percent(before, _cpu(processes), args.seconds + args.warmup)}

        # The machine is shared: the constant and the check take turns, and the round whose ratio is
        # the median is the one reported (all the rounds' ratios are kept).
        rounds = []
        for _ in range(args.rounds):
            constant, check = await closed_loop("constant"), await closed_loop("gamstop")
            rounds.append((check["per_second"] / constant["per_second"] if constant["per_second"] else 0.0, constant, check))
        ratio, figures["constant"], figures["gamstop"] = sorted(rounds, key=lambda r: r[0])[(len(rounds) - 1) // 2]
        figures["check_over_constant"] = round(ratio, 3)
        figures["rounds"] = [round(r, 3) for r, _, _ in rounds]
        figures["chipout_status"] = await closed_loop("chipout_status")
        before = _cpu(processes)
        figures["store_lookup"] = (await store_lookups(database, hasher, size, args.concurrency, args.seconds)).as_json()
        figures["store_lookup"]["cpu_percent"] = _cpu_percent(before, _cpu(processes), args.seconds)
        for name in ("constant", "gamstop"):  # the constant's tail is the machine's own noise floor
            progress(f"  {name} at {args.rate:g} req/s")
            latency = await loadgen.open_loop(
                HOST, port, requests[name], rate=args.rate, seconds=args.latency_seconds, connections=args.concurrency
            )
            figures[f"{name}_at_rate"] = latency.as_json() | {"offered_per_second": args.rate}
    return figures


async def store_lookups(database, hasher: Hasher, size: int, concurrency: int, seconds: float) -> loadgen.Result:
    """The store's limit for the check's own query: one ``_id`` lookup in the gateway's lookup."""
    chosen = random.Random(size + 1)
    ids = [hasher.hash(IdentifierKind.NATIONAL_ID, str(person(chosen.randrange(size * 2)).uid)) for _ in range(SAMPLE)]
    lookup = database["exclusion_lookup"]
    result = loadgen.Result()
    stop_at = time.perf_counter() + seconds

    async def client(index: int) -> None:
        position = index * 7919
        while time.perf_counter() < stop_at:
            sent = time.perf_counter()
            await lookup.find_one({"_id": ids[position % len(ids)]})
            result.latencies.append(time.perf_counter() - sent)
            result.requests += 1
            position += 1

    await asyncio.gather(*(client(i) for i in range(concurrency)))
    result.seconds = seconds
    return result


@contextmanager
def gateway_process(settings: Settings, port: int, log_path: Path) -> Iterator[subprocess.Popen]:
    env = {
        **os.environ,
        **settings.environment(),
        "SELFEX_GATEWAY_PORT": str(port),
        "SELFEX_LOG_LEVEL": "WARNING",
        "SELFEX_LOG_FORMAT": "json",
    }
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "bench.http"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _healthy(port: int, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the gateway exited with {process.returncode}")
            try:
                if (await client.get(f"http://{HOST}:{port}/readyz", timeout=1.0)).status_code == 200:  # ready: checks are answered
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the gateway did not become ready")


def _cpu(processes: dict[str, int]) -> dict[str, float]:
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for name, pid in processes.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[name] = (int(fields[11]) + int(fields[12])) / ticks
        except (OSError, IndexError, ValueError):
            out[name] = float("nan")
    return out


def _cpu_percent(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, int]:
    return {name: round(100 * (after[name] - before[name]) / seconds) for name in before}


def print_report(report: dict) -> None:
    machine = report["machine"]
    print(f"\nselfex bench http — {machine['cores']} cores, Python {machine['python']}, store {machine['store']}")
    s = report["settings"]
    print(
        f"closed loop: {s['concurrency']} keep-alive clients, {s['seconds']:g} s a run, {s['rounds']} rounds of the constant and the check; latency run: {s['rate']:g} req/s offered for {s['latency_seconds']:g} s"
    )
    for size, figures in report["sizes"].items():
        print(f"\n{int(size):,} exclusions (loaded in {figures['load_seconds']} s)")
        print(f"  {'':34} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'wrong':>6}   cpu % (gateway/store/client/broker)")
        for name, label in (
            ("constant", "constant answer, same stack"),
            ("gamstop", "GAMSTOP check"),
            ("chipout_status", "ChipOut status"),
            ("store_lookup", "store: one indexed lookup"),
        ):
            f = figures[name]
            cpu = "/".join(str(f["cpu_percent"].get(k, "-")) for k in ("gateway", "store", "client", "broker"))
            print(f"  {label:34} {f['per_second']:8,.0f} {f['p50_ms']:8.2f} {f['p99_ms']:8.2f} {f['wrong_answers']:6}   {cpu}")
        for name, label in (("constant_at_rate", "constant answer"), ("gamstop_at_rate", "GAMSTOP check")):
            rate = figures[name]
            label = f"{label} at {rate['offered_per_second']:g} req/s"
            print(f"  {label:34} {rate['per_second']:8,.0f} {rate['p50_ms']:8.2f} {rate['p99_ms']:8.2f} {rate['wrong_answers']:6}")
        ratio = figures["check_over_constant"]
        print(
            f"  check / constant = {ratio:.1%}, the median of {len(figures['rounds'])} rounds"
            f" ({' / '.join(f'{r:.1%}' for r in figures['rounds'])}; target ≥ {CHECK_TARGET:.0%}): {'met' if ratio >= CHECK_TARGET else 'NOT met'};"
            f" p99 at {rate['offered_per_second']:g} req/s = {rate['p99_ms']:.2f} ms (target ≤ 10 ms): {'met' if rate['p99_ms'] <= 10 else 'NOT met'}"
        )


def app_with_constant(settings: Settings | None = None) -> FastAPI:
    """The production gateway app plus ``POST /_bench/constant``, the machine's limit for a check.

    The route answers as a GAMSTOP check does with nothing to look up, on the same app, middleware and
    server; it is placed right after the checks, so routing reaches it as it reaches them. Only the
    bench's app has it: the production gateway carries no bench route.
    """
    from services.gateway import gamstop
    from services.gateway.app import create_app

    app = create_app(settings)
    constant = APIRouter()

    @constant.post(CONSTANT_PATH, include_in_schema=False)
    async def answer() -> Response:
        return Response(status_code=200, headers={"X-Exclusion": "N"})

    checks = {id(route) for route in gamstop.router.routes}
    routes = app.router.routes
    after_checks = max(i for i, route in enumerate(routes) if id(route) in checks) + 1
    routes[after_checks:after_checks] = constant.routes
    return app


def serve() -> None:
    """The bench's gateway: ``selfex run gateway`` plus the constant-answer route."""
    import uvicorn

    settings = Settings()
    uvicorn.run(app_with_constant(settings), host=HOST, port=settings.gateway_port, log_config=None, access_log=False)


if __name__ == "__main__":
    serve()
