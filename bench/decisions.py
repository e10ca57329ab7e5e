"""``selfex bench decisions``: how fast blocking answers, through the real broker, against the
machine's limit.

Starts embedded servers on free ports unless SELFEX_KAFKA_BOOTSTRAP and SELFEX_MONGO_URI name real
ones. Then, in one run:

for each size N: N active exclusions written to blocking's projection; blocking started as it is
deployed, ``--instances`` processes of ``selfex run blocking`` sharing the account events (each
loads the whole view from the projection), reading the bench operator's own account-events topic
and answering on its own decisions topic, and, beside them on topics of their own, the machine's
limit: a bare aiokafka forwarder (``bench.forwarder``; ``--forwarders`` processes of it
sharing one group) that passes each record on with no logic. Account events are driven through
the broker into each and the answers read back:
sustained throughput in rounds taking turns (the machine is shared, so the ratio is taken round by
round), the events produced in record batches so that the bench outruns what it measures;
p50/p95/p99 end-to-end latency at a fixed offered rate; the service's memory; the view's lookup
cost timed in-process.

A benchmark, not a test: it reports what it measures and asserts nothing.
"""

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from bench import measure
from bench.measure import Output
from bench.workload import OPERATOR, Workload, insert_exclusion_documents
from services.blocking.repository import INDEXES, active_exclusion
from services.blocking.view import ExclusionView, Scopes
from shared import topics
from shared.broker import ensure_operator_topics, ensure_topics
from shared.identity import Hasher
from shared.infra import EmbeddedInfra, free_port
from shared.settings import Settings
from shared.store import open_database

# The bench operator's own topics: blocking reads the first (by pattern) and answers on the second; the
# forwarder has the same two under a prefix of its own.
OPERATOR_EVENTS, OPERATOR_DECISIONS = topics.of_operator(OPERATOR, topics.ACCOUNT_EVENTS), topics.of_operator(OPERATOR, topics.DECISIONS)
READY_TIMEOUT_SECONDS = 900  # a million exclusions take a while to load on the embedded store
LOOKUP_PROBES = 20_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="selfex bench decisions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,1000000", help="active exclusions to load, comma-separated")
    parser.add_argument("--events", type=int, default=50_000, help="account events in each throughput run")
    parser.add_argument("--rate", type=float, default=1000.0, help="offered events/s in the latency runs")
    parser.add_argument("--latency-seconds", type=float, default=10.0, help="length of each latency run")
    parser.add_argument("--accounts", type=int, default=10_000, help="operator accounts the events come from")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds (blocking, then the forwarder)")
    parser.add_argument(
        "--instances", type=int, default=2, help="blocking instances sharing the work, as deployed (deploy/blocking.yaml runs 2)"
    )
    parser.add_argument("--partitions", type=int, default=6, help="partitions per topic (a multiple of the instances spreads evenly)")
    parser.add_argument(
        "--forwarders",
        type=int,
        default=1,
        help="bare forwarder processes sharing the limit's work (as many as --instances compares like with like; README, Performance)",
    )
    args = parser.parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    settings = Settings().model_copy(update={"topic_partitions": args.partitions})
    with tempfile.TemporaryDirectory(prefix="selfex-bench-") as workdir, servers(settings, Path(workdir)) as (settings, kind):
        return asyncio.run(run(args, sizes, settings, kind, Path(workdir)))


@contextmanager
def servers(settings: Settings, workdir: Path) -> Iterator[tuple[Settings, str]]:
    if settings.kafka_bootstrap and settings.mongo_uri:
        yield settings, f"external (Kafka {settings.kafka_bootstrap})"
        return
    infra = EmbeddedInfra(workdir / "infra", kafka_port=free_port(), mongo_port=free_port(), mongo_in_memory=True)
    with infra:
        yield infra.settings_for(settings), "embedded (Tansu broker, nx-27017 store in memory)"


async def run(args, sizes: list[int], settings: Settings, kind: str, workdir: Path) -> int:
    tag = uuid.uuid4().hex[:6]
    print(
        f"selfex bench decisions: {os.cpu_count()} CPUs, Python {platform.python_version()}, servers: {kind}, "
        f"{settings.topic_partitions} partitions per topic, {args.instances} blocking instance(s), "
        f"{args.forwarders} bare forwarder(s)",
        flush=True,
    )
    print(
        f"throughput: {args.rounds} rounds of {args.events:,} account events sent as fast as they can be, blocking and "
        f"the bare forwarder (aiokafka, no logic) taking turns; latency: {args.rate:,.0f} events/s offered for "
        f"{args.latency_seconds:g} s to each",
        flush=True,
    )
    results = {}
    for n, size in enumerate(sizes):
        run_settings = settings.model_copy(update={"topic_prefix": f"bench{tag}.{n}.", "mongo_db": f"bench_{tag}_{n}"})
        r = results[size] = await bench_size(args, run_settings, size, workdir)
        print(
            f"\n{size:,} active exclusions: stored in {r['store_s']:.1f} s; service ready in {r['ready_s']:.1f} s "
            f"(view loaded in {r['view_load_s']:.1f} s); service memory RSS {r['rss_mb']:,.0f} MB, all instances "
            f"(peak {r['peak_mb']:,.0f} MB)",
            flush=True,
        )
        print(
            f"  sustained decisions/s: {r['throughput']:,.0f} = {r['ratio']:.0%} of the bare forwarder's {r['limit']:,.0f} msg/s "
            f"(medians; per round {', '.join(f'{x:.0%}' for x in r['ratios'])})",
            flush=True,
        )
        print(
            f"  end-to-end latency at {args.rate:,.0f} events/s: blocking {_latency(r['latency'])}; "
            f"bare forwarder {_latency(r['limit_latency'])}",
            flush=True,
        )
        print(f"  lookup in-process: decide {r['decide_us']:.2f} µs/event, view match {r['match_us']:.3f} µs/event", flush=True)
    if len(sizes) > 1:
        small, large = results[min(sizes)], results[max(sizes)]
        print(
            f"\nlookup cost ratio {max(sizes):,} vs {min(sizes):,} exclusions: decide "
            f"{large['decide_us'] / small['decide_us']:.2f}, view match {large['match_us'] / small['match_us']:.2f}; "
            f"end-to-end p50 {large['latency'].p50_ms / small['latency'].p50_ms:.2f}",
            flush=True,
        )
    return 0


def _latency(result: measure.Latency) -> str:
    return (
        f"p50 {result.p50_ms:.1f} ms, p95 {result.p95_ms:.1f} ms, p99 {result.p99_ms:.1f} ms "
        f"({result.answered:,} answers, offered {result.offered_per_second:,.0f}/s)"
    )


async def bench_size(args, settings: Settings, size: int, workdir: Path) -> dict:
    """N exclusions loaded; blocking and a bare forwarder (on topics of its own) measured in turns."""
    await ensure_topics(settings)
    await ensure_operator_topics(settings, OPERATOR)  # as `selfex operator add` makes them
    forwarding = settings.model_copy(update={"topic_prefix": f"{settings.topic_prefix}fwd."})
    await ensure_topics(forwarding, names=(OPERATOR_EVENTS, OPERATOR_DECISIONS))
    workload = Workload(hasher=Hasher.from_settings(settings), exclusions=size, accounts=args.accounts)
    client, database = await open_database(settings, "blocking", INDEXES)
    try:
        store_s, view = await store_exclusions(database, workload)
        decide_us, match_us = measure.lookup_cost(view, workload.probes(LOOKUP_PROBES), workload.now)
        del view
        log_paths = [workdir / f"blocking-{size}-{n}.log" for n in range(args.instances)]
        forwarder_group = f"{forwarding.topic_prefix}forwarder"
        forwarder = [
            sys.executable,
            "-m",
            "bench.forwarder",
            settings.kafka,
            forwarding.topic(OPERATOR_EVENTS),
            forwarding.topic(OPERATOR_DECISIONS),
            forwarder_group,
        ]
        with ExitStack() as running:
            started = time.perf_counter()
            services = [
                running.enter_context(child([sys.executable, "-m", "selfex.cli", "run", "blocking"], service_environment(settings), path))
                for path in log_paths
            ]
            for n in range(args.forwarders):
                running.enter_context(child(forwarder, dict(os.environ), workdir / f"forwarder-{size}-{n}.log"))
            blocking, limit = Driven(settings, workload), Driven(forwarding, workload)
            async with blocking, limit:
                await measure.until_group_stable(settings.kafka, account_events_group(settings), len(services), READY_TIMEOUT_SECONDS)
                await blocking.ready()
                ready_s = time.perf_counter() - started
                await measure.until_group_stable(settings.kafka, forwarder_group, args.forwarders, READY_TIMEOUT_SECONDS)
                await limit.ready()
                await blocking.warm_up()
                await limit.warm_up()
                rss_mb = sum(measure.memory_mb(service.pid)[0] for service in services)
                rounds = []
                for n in range(args.rounds):
                    events = workload.events(args.events, f"throughput-{n}")
                    rounds.append((await blocking.throughput(events), await limit.throughput(events)))
                latency = await blocking.latency(workload.events(int(args.rate * args.latency_seconds), "latency"), args.rate)
                limit_latency = await limit.latency(workload.events(int(args.rate * args.latency_seconds), "latency"), args.rate)
                peak_mb = sum(measure.memory_mb(service.pid)[1] for service in services)
    finally:
        await client.drop_database(database.name)
        await client.close()
    return {
        "store_s": store_s,
        "ready_s": ready_s,
        "view_load_s": max(view_load_seconds(path) for path in log_paths),
        "rss_mb": rss_mb,
        "peak_mb": peak_mb,
        "decide_us": decide_us,
        "match_us": match_us,
        "latency": latency,
        "limit_latency": limit_latency,
        "throughput": statistics.median(b for b, _ in rounds),
        "limit": statistics.median(f for _, f in rounds),
        "ratio": statistics.median(b / f for b, f in rounds),
        "ratios": [b / f for b, f in rounds],
    }


class Driven:
    """One consumer under test (blocking, or the forwarder): its input topic and its output read back."""

    def __init__(self, settings: Settings, workload: Workload) -> None:
        self.bootstrap, self.workload = settings.kafka, workload
        self.source, self.output = settings.topic(OPERATOR_EVENTS), Output(settings.kafka, settings.topic(OPERATOR_DECISIONS))

    async def __aenter__(self) -> "Driven":
        await self.output.__aenter__()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.output.__aexit__(*exc)

    async def ready(self) -> float:
        return await measure.until_answered(
            self.bootstrap, self.source, self.output, self.workload.events(20, "probe"), READY_TIMEOUT_SECONDS
        )

    async def warm_up(self) -> None:
        """An event of every account first: operators mostly send events of accounts seen before."""
        await self.throughput(self.workload.events(self.workload.accounts, "warm", every_account=True))

    async def throughput(self, events) -> float:
        return await measure.throughput(self.bootstrap, self.source, self.output, events)

    async def latency(self, events, rate: float) -> measure.Latency:
        return await measure.latency(self.bootstrap, self.source, self.output, events, rate)


async def store_exclusions(database, workload: Workload) -> tuple[float, ExclusionView]:
    """Write blocking's projection in bulk (two writes in flight) and build the same view in-process for the lookup timing."""
    started, view, scopes = time.perf_counter(), ExclusionView(), Scopes()
    writing: set[asyncio.Task] = set()
    for chunk in workload.exclusion_documents():
        if len(writing) >= 2:
            done, writing = await asyncio.wait(writing, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        writing.add(asyncio.create_task(insert_exclusion_documents(database, chunk)))
        for document in chunk:
            view.add(active_exclusion(document, scopes))
    for task in writing:
        await task
    return time.perf_counter() - started, view


def account_events_group(settings: Settings) -> str:
    """The consumer group blocking's instances share for every operator's account events (``handlers.account_events_group``)."""
    return f"{settings.topic_prefix}blocking.{topics.ACCOUNT_EVENTS}"


def service_environment(settings: Settings) -> dict[str, str]:
    return {**os.environ, **settings.environment(), "SELFEX_LOG_FORMAT": "json"}


@contextmanager
def child(command: list[str], env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen]:
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        yield process
    except BaseException:
        print(f"--- {log_path.name} (last lines) ---\n{log_path.read_text(errors='replace')[-3000:]}", file=sys.stderr)
        raise
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def view_load_seconds(log_path: Path) -> float:
    """How long the service took to load its view, as it logged it."""
    return logged_seconds(log_path, "view_loaded")


def logged_seconds(log_path: Path, event: str) -> float:
    """The ``seconds`` a service logged with its first ``event`` line (NaN if none)."""
    for line in log_path.read_text(errors="replace").splitlines():
        if f'"{event}"' in line:
            try:
                return float(json.loads(line).get("seconds", "nan"))
            except ValueError:
                break
    return float("nan")


if __name__ == "__main__":
    sys.exit(main())
