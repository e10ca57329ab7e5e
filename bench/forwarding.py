"""``selfex bench forwarder``: exclusions forwarded per second from operator platform A to register B,
and the end-to-end latency from A's ``201`` to B's GAMSTOP ``Y``, with the bare HTTP round-trip to
B measured in the same run.

(``bench/forwarder.py`` is something else: the decisions bench's bare aiokafka forwarder.)

Starts embedded servers on free ports unless SELFEX_KAFKA_BOOTSTRAP and SELFEX_MONGO_URI name real
ones. Two deployments, each as deployed (``selfex run registration`` and ``selfex run gateway``, a
process each, their own topic prefix and databases), and A's forwarder (``selfex run forwarder``)
with B as its register over the native API. Then, in one run:

- the bare HTTP round-trip: ``GET /healthz`` on B's gateway (one store ping) and ``POST /v1/exclusions``
  straight at B (what one delivery costs the register), ``--probes`` times each, p50/p99; and the
  rate of bare POSTs to B at the forwarder's concurrency, the ceiling for forwarding;
- throughput: ``--exclusions`` made at A while its forwarder is not running, then the forwarder
  started: exclusions delivered per second, from its first delivery to its last;
- latency: ``--timed`` exclusions made at A at ``--rate`` per second with the forwarder running, each
  timed from A's ``201`` until B's GAMSTOP batch check answers ``Y`` (polled every ``--poll`` s).

A benchmark, not a test: it reports what it measures and asserts nothing.
"""

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from bench.decisions import child, servers, service_environment
from services.gateway.access import Role
from services.gateway.operators import add
from services.gateway.repository import INDEXES as GATEWAY_INDEXES
from services.gateway.repository import MongoOperators
from shared.broker import ensure_topics
from shared.infra import free_port
from shared.settings import Settings
from shared.store import create_client, ensure_indexes

READY_SECONDS = 120.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="selfex bench forwarder", description=__doc__.split("\n\n")[0])
    parser.add_argument("--exclusions", type=int, default=500, help="the backlog made at A, then forwarded to B (throughput)")
    parser.add_argument("--timed", type=int, default=100, help="exclusions made at A at --rate, each timed from 201 to B's Y")
    parser.add_argument("--rate", type=float, default=2.0, help="exclusions/s offered at A while they are timed")
    parser.add_argument("--concurrency", type=int, default=8, help="requests to A in flight at once")
    parser.add_argument("--probes", type=int, default=200, help="bare HTTP round-trips to B, of each kind")
    parser.add_argument("--poll", type=float, default=0.05, help="seconds between B's batch checks")
    parser.add_argument("--forwarder-concurrency", type=int, default=8, help="deliveries A's forwarder attempts at once")
    args = parser.parse_args(argv)
    settings = Settings()
    with tempfile.TemporaryDirectory(prefix="selfex-bench-") as workdir, servers(settings, Path(workdir)) as (settings, kind):
        return asyncio.run(run(args, settings, kind, Path(workdir)))


def deployment(settings: Settings, name: str, tag: str) -> Settings:
    return settings.model_copy(
        update={
            "topic_prefix": f"bench{tag}{name}.",
            "mongo_db": f"bench_{tag}_{name}",
            "deployment_name": name,
            "gateway_port": free_port(),
            "registration_timer_seconds": 5.0,
            "gateway_rate_per_second": 100_000.0,
            "gateway_rate_burst": 100_000,
        }
    )


async def key(settings: Settings, name: str) -> str:
    client = create_client(settings)
    try:
        database = client[settings.database_for("gateway")]
        await ensure_indexes(database, GATEWAY_INDEXES)
        return (await add(MongoOperators(database), name, {Role.OPERATOR})).key
    finally:
        await client.close()


async def ready(url: str) -> None:
    deadline = time.monotonic() + READY_SECONDS
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() < deadline:
            try:
                if (await http.get(f"{url}/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} was not ready within {READY_SECONDS:.0f} s")


def person(n: int, tag: str) -> dict[str, str]:
    return {
        "first_name": "Bench",
        "last_name": f"Person{tag}{n}",
        "date_of_birth": "1980-01-01",
        "postcode": "GU1 1AA",
        "email": f"bench.{tag}.{n}@example.com",
    }


def gamstop_record(someone: dict[str, str]) -> dict[str, str]:
    return {
        "firstName": someone["first_name"],
        "lastName": someone["last_name"],
        "dateOfBirth": someone["date_of_birth"],
        "email": someone["email"],
        "postcode": someone["postcode"],
    }


def quantiles(samples: list[float]) -> str:
    if not samples:
        return "none"
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {statistics.median(ordered) * 1000:,.1f} ms, p99 {p99 * 1000:,.1f} ms, max {ordered[-1] * 1000:,.1f} ms (n={len(ordered)})"


async def round_trips(http: httpx.AsyncClient, count: int, request) -> list[float]:
    timings = []
    for n in range(count):
        started = time.perf_counter()
        answer = await request(n)
        timings.append(time.perf_counter() - started)
        if answer.status_code >= 300:
            raise RuntimeError(f"bare round-trip answered {answer.status_code}: {answer.text[:200]}")
    return timings


async def run(args, settings: Settings, kind: str, workdir: Path) -> int:
    tag = uuid.uuid4().hex[:6]
    a, b = deployment(settings, "A", tag), deployment(settings, "B", tag)
    print(
        f"selfex bench forwarder: {os.cpu_count()} CPUs, Python {platform.python_version()}, servers: {kind}, "
        f"{args.exclusions:,} exclusions made at A ({args.concurrency} at a time), forwarded to B over the native API "
        f"(forwarder concurrency {args.forwarder_concurrency})",
        flush=True,
    )
    for one in (a, b):
        await ensure_topics(one)
    excluder, a_at_b, checker = await key(a, "bench-excluder"), await key(b, "bench-platform-a"), await key(b, "bench-checker")
    a_url, b_url = f"http://127.0.0.1:{a.gateway_port}", f"http://127.0.0.1:{b.gateway_port}"
    forwarder = a.model_copy(
        update={"forwarder_register": "B", "forwarder_register_url": b_url, "forwarder_concurrency": args.forwarder_concurrency}
    )
    selfex = [str(Path(sys.executable).parent / "selfex"), "run"]
    with ExitStack() as stack:
        for name, one in (("A", a), ("B", b)):
            env = service_environment(one)
            for service in ("registration", "gateway"):
                stack.enter_context(child([*selfex, service], env, workdir / f"{name}-{service}.log"))
        await ready(a_url)
        await ready(b_url)
        limits = httpx.Limits(max_connections=max(args.concurrency, args.forwarder_concurrency) + 4)
        async with httpx.AsyncClient(timeout=30, limits=limits) as http:
            health = await round_trips(http, args.probes, lambda n: http.get(f"{b_url}/healthz"))

            def direct(n: int, kind: str = "direct"):
                return http.post(
                    f"{b_url}/v1/exclusions",
                    headers={"X-API-Key": a_at_b},
                    json={"identity": person(n, f"{kind}{tag}"), "duration": "+6m", "jurisdiction": "UK"},
                )

            posts = await round_trips(http, args.probes, direct)
            bare_rate = await concurrent_rate(args.probes, args.forwarder_concurrency, lambda n: direct(n, "rate"))
            print(f"bare HTTP round-trip to B, GET /healthz: {quantiles(health)}", flush=True)
            print(
                f"bare HTTP round-trip to B, POST /v1/exclusions (what one delivery costs B), one at a time: {quantiles(posts)}", flush=True
            )
            print(
                f"bare POST /v1/exclusions to B, {args.forwarder_concurrency} at a time (the forwarder's concurrency): "
                f"{bare_rate:,.1f} exclusions/s",
                flush=True,
            )
            # Throughput: a backlog made at A while its forwarder is not running, then drained.
            backlog = [person(n, f"backlog{tag}") for n in range(args.exclusions)]
            await make_all(http, a_url, excluder, backlog, args.concurrency, f"backlog{tag}")
            env = service_environment(forwarder) | {"SELFEX_FORWARDER_REGISTER_KEY": a_at_b}
            stack.enter_context(child([*selfex, "forwarder"], env, workdir / "A-forwarder.log"))
            drained = await drain(a, args.exclusions)
            print(
                f"forwarded: a backlog of {args.exclusions:,} exclusions delivered to B at {drained:,.1f} exclusions/s "
                f"(first to last delivery; = {drained / bare_rate:.0%} of the bare POST rate)",
                flush=True,
            )
            # Latency: exclusions made at A at a steady pace, each timed from A's 201 to B's Y.
            result = await forward(args, http, a_url, b_url, excluder, checker, tag)
    print(
        f"end to end at {args.rate:g} exclusions/s offered, A's 201 to B's GAMSTOP Y: {quantiles(result['latencies'])} "
        f"(B polled every {args.poll:g} s)",
        flush=True,
    )
    if result["accepted"]:
        print(
            f"  ({result['accepted']} of A's answers were 202 (not read back within its bound): those are timed from the 202)", flush=True
        )
    return 0


async def concurrent_rate(count: int, concurrency: int, request) -> float:
    slots = asyncio.Semaphore(concurrency)

    async def one(n: int) -> None:
        async with slots:
            answer = await request(n)
            if answer.status_code >= 300:
                raise RuntimeError(f"bare POST answered {answer.status_code}: {answer.text[:200]}")

    started = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(count)))
    return count / (time.perf_counter() - started)


async def make_all(http: httpx.AsyncClient, a_url: str, excluder: str, people: list[dict[str, str]], concurrency: int, tag: str) -> None:
    slots = asyncio.Semaphore(concurrency)

    async def one(n: int) -> None:
        async with slots:
            answer = await create(http, a_url, excluder, people[n], f"{tag}-{n}")
            if answer.status_code not in (201, 202):
                raise RuntimeError(f"A answered {answer.status_code}: {answer.text[:200]}")

    await asyncio.gather(*(one(n) for n in range(len(people))))


async def create(http: httpx.AsyncClient, a_url: str, excluder: str, someone: dict[str, str], key: str) -> httpx.Response:
    """One exclusion at A; a connection the server closed under us is retried, safely (its Idempotency-Key)."""
    for attempt in range(5):
        try:
            return await http.post(
                f"{a_url}/v1/exclusions",
                headers={"X-API-Key": excluder, "Idempotency-Key": key},
                json={"identity": someone, "duration": "+6m", "jurisdiction": "UK"},
            )
        except httpx.TransportError:
            if attempt == 4:
                raise
    raise AssertionError("unreachable")


async def drain(settings: Settings, count: int) -> float:
    """Wait until A's forwarder has delivered ``count``; the rate from its first delivery to its last."""
    client = create_client(settings)
    try:
        deliveries = client[settings.database_for("forwarder")]["deliveries"]
        deadline = time.monotonic() + READY_SECONDS + count
        while await deliveries.count_documents({"status": "delivered"}) < count:
            if time.monotonic() > deadline:
                raise RuntimeError("the backlog was not delivered in time")
            await asyncio.sleep(0.2)
        found = await deliveries.find({"status": "delivered"}, {"delivered_at": 1}).to_list(None)
    finally:
        await client.close()
    moments = sorted(d["delivered_at"] for d in found)
    return (len(moments) - 1) / max((moments[-1] - moments[0]).total_seconds(), 1e-6)


async def forward(args, http: httpx.AsyncClient, a_url: str, b_url: str, excluder: str, checker: str, tag: str) -> dict[str, Any]:
    people = [person(n, f"paced{tag}") for n in range(args.timed)]
    created: dict[int, float] = {}
    seen_at: dict[int, float] = {}
    accepted: list[int] = []

    async def make(n: int) -> None:
        answer = await create(http, a_url, excluder, people[n], f"paced{tag}-{n}")
        if answer.status_code not in (201, 202):
            raise RuntimeError(f"A answered {answer.status_code}: {answer.text[:200]}")
        if answer.status_code == 202:  # accepted, not read back within A's bound: timed from the 202 (later: kinder to us)
            accepted.append(n)
        created[n] = time.perf_counter()

    async def watch() -> None:
        while len(seen_at) < len(people):
            waiting = [n for n in created if n not in seen_at][:1000]
            if waiting:
                try:
                    answer = await http.post(
                        f"{b_url}/gamstop/v2/batch", headers={"X-API-Key": checker}, json=[gamstop_record(people[n]) for n in waiting]
                    )
                except httpx.TransportError:
                    continue
                now = time.perf_counter()
                if answer.status_code == 200:
                    for n, found in zip(waiting, answer.json(), strict=True):
                        if found["exclusion"] == "Y":
                            seen_at[n] = now
            await asyncio.sleep(args.poll)

    watcher = asyncio.create_task(watch())
    makers = []
    for n in range(len(people)):
        makers.append(asyncio.create_task(make(n)))
        await asyncio.sleep(1 / args.rate)  # the offered pace
    await asyncio.gather(*makers)
    await asyncio.wait_for(watcher, READY_SECONDS)
    return {"latencies": [seen_at[n] - created[n] for n in range(len(people))], "accepted": len(accepted)}
