"""``selfex bench forwarder``: exclusions forwarded per second from operator platform A to register B,
and the end-to-end latency from A's ``201`` to B's GAMSTOP ``Y``, with the bare HTTP round-trip to
B measured in the same run.

(``bench/forwarder.py`` is something else: the decisions bench's bare aiokafka forwarder.)

Starts embedded servers on free ports unless SELFEX_KAFKA_BOOTSTRAP and SELFEX_MONGO_URI name real
ones. Two deployments, each as deployed (``selfex run registration`` and ``selfex run gateway``, a
process each, their own topic prefix and databases), and A's forwarder (``selfex run forwarder``)
with B as its register over the native API. Then, in one run:

- the bare HTTP round-trip: ``GET /healthz`` on B's gateway (one store ping) and ``POST /v1/exclusions``
  straight at B (what one delivery costs the register), each ``--probes`` times, p50/p99;
- ``--exclusions`` exclusions made at A (``--concurrency`` at a time); each timed from A's ``201``
  until B's GAMSTOP batch check answers ``Y`` for it (polled every ``--poll`` seconds): p50/p99/max;
  and forwarded per second: the exclusions over the time from the first ``201`` to the last ``Y``.

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
    parser.add_argument("--exclusions", type=int, default=500, help="exclusions made at A and forwarded to B")
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
        env = service_environment(forwarder) | {"SELFEX_FORWARDER_REGISTER_KEY": a_at_b}
        stack.enter_context(child([*selfex, "forwarder"], env, workdir / "A-forwarder.log"))
        await ready(a_url)
        await ready(b_url)
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=args.concurrency + 4)) as http:
            health = await round_trips(http, args.probes, lambda n: http.get(f"{b_url}/healthz"))
            direct = await round_trips(
                http,
                args.probes,
                lambda n: http.post(
                    f"{b_url}/v1/exclusions",
                    headers={"X-API-Key": a_at_b},
                    json={"identity": person(n, f"direct{tag}"), "duration": "+6m", "jurisdiction": "UK"},
                ),
            )
            print(f"bare HTTP round-trip to B, GET /healthz: {quantiles(health)}", flush=True)
            print(f"bare HTTP round-trip to B, POST /v1/exclusions (one delivery's own cost): {quantiles(direct)}", flush=True)
            result = await forward(args, http, a_url, b_url, excluder, checker, tag)
    print(
        f"forwarded: {args.exclusions:,} exclusions in {result['seconds']:.2f} s = {result['rate']:,.1f} exclusions/s "
        f"(first 201 at A to the last Y at B)",
        flush=True,
    )
    print(f"end to end, A's 201 to B's Y: {quantiles(result['latencies'])}", flush=True)
    recorded, attempts = await deliveries(a)
    print(f"  of which in A's forwarder, recorded to delivered (B's 201 included): {quantiles(recorded)}; attempts {attempts}", flush=True)
    if result["accepted"]:
        print(
            f"  ({result['accepted']} of A's answers were 202 (not read back within its bound): those are timed from the 202)", flush=True
        )
    return 0


async def deliveries(settings: Settings) -> tuple[list[float], str]:
    """From A's forwarder's own records: each delivery's time from recorded (pending) to delivered, and its attempts."""
    client = create_client(settings)
    try:
        found = await client[settings.database_for("forwarder")]["deliveries"].find({"status": "delivered"}).to_list(None)
    finally:
        await client.close()
    spans = [(d["delivered_at"] - d["created_at"]).total_seconds() for d in found]
    counts = statistics.mean(d["attempts"] for d in found) if found else 0.0
    return spans, f"{counts:.2f} on average over {len(found)} deliveries"


async def forward(args, http: httpx.AsyncClient, a_url: str, b_url: str, excluder: str, checker: str, tag: str) -> dict[str, Any]:
    people = [person(n, tag) for n in range(args.exclusions)]
    created: dict[int, float] = {}
    seen_at: dict[int, float] = {}
    slots = asyncio.Semaphore(args.concurrency)
    accepted: list[int] = []

    async def make(n: int) -> None:
        async with slots:
            for _ in range(5):  # a connection the server closed under us: the same request again, safely (its Idempotency-Key)
                try:
                    answer = await http.post(
                        f"{a_url}/v1/exclusions",
                        headers={"X-API-Key": excluder, "Idempotency-Key": f"bench-{tag}-{n}"},
                        json={"identity": people[n], "duration": "+6m", "jurisdiction": "UK"},
                    )
                    break
                except httpx.TransportError:
                    continue
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
    await asyncio.gather(*(make(n) for n in range(len(people))))
    await asyncio.wait_for(watcher, READY_SECONDS)
    first = min(created.values())
    last = max(seen_at.values())
    return {
        "seconds": last - first,
        "rate": len(people) / (last - first),
        "latencies": [seen_at[n] - created[n] for n in range(len(people))],
        "accepted": len(accepted),
    }
