"""``selfex bench audit``: how fast the audit log appends, against the store's bare batched insert
rate measured in the same run, and how long ``selfex audit verify`` takes over many records.

Starts embedded servers on free ports unless SELFEX_KAFKA_BOOTSTRAP and SELFEX_MONGO_URI name real
ones. Then, in one run:

- the store's limit: the audit's own records (same size, same indexes) written with bare
  ``insert_many`` batches of the audit's batch size, no Kafka, no hashing, no parsing;
- the audit service as deployed (``selfex run audit``, one process), fed account events and a
  decision for each (the operator's two topics) at ``--rate`` pairs/s for ``--seconds``, then as
  fast as the bench can produce ``--events`` pairs: records appended per second, and the lag of each
  record (recorded_at minus the event's occurred_at, stamped when it was sent) as p50/p99/max;
- with ``--verify-records N``: N records in ``--partitions`` chains written to a fresh audit
  database, then ``selfex audit verify`` run on it as a regulator would, its wall time and its line.
- with ``--query-records N``: N records (account events of 1,000 people and a decision for each)
  appended to a fresh audit database as the service appends them, then the compliance queries timed
  on them (a page, a person's statement, an export, the statistics); ``--queries-only`` runs only this.

A benchmark, not a test: it reports what it measures and asserts nothing.
"""

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

from aiokafka import AIOKafkaProducer

from bench.decisions import child, servers, service_environment
from bench.workload import OPERATOR, identity
from services.audit.chain import Tail, record, tail_of
from services.audit.handlers import MAX_BATCH
from services.audit.repository import INDEXES, LOG
from shared import topics
from shared.broker import ensure_operator_topics, ensure_topics
from shared.events import AccountEventKind, AccountEventOccurred, AccountEventPayload, DecisionMade, DecisionPayload, Outcome, utcnow
from shared.identity import Hasher
from shared.settings import Settings
from shared.store import create_client, ensure_indexes

CHUNK = 500  # pairs made and sent together (their occurred_at is taken just before)
READY_SECONDS = 120.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="selfex bench audit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="account events/s offered in the paced run (each with its decision)")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the paced run")
    parser.add_argument("--events", type=int, default=20_000, help="account events (each with its decision) sent as fast as possible")
    parser.add_argument("--bare", type=int, default=40_000, help="records in the bare insert run")
    parser.add_argument("--verify-records", type=int, default=0, help="records to verify (e.g. 1000000); 0 skips it")
    parser.add_argument("--partitions", type=int, default=6, help="partitions per topic (chains)")
    parser.add_argument("--query-records", type=int, default=0, help="records to time the compliance queries on; 0 skips it")
    parser.add_argument("--queries-only", action="store_true", help="only the compliance queries' timings (with --query-records)")
    args = parser.parse_args(argv)
    settings = Settings().model_copy(update={"topic_partitions": args.partitions})
    with tempfile.TemporaryDirectory(prefix="selfex-bench-") as workdir, servers(settings, Path(workdir)) as (settings, kind):
        return asyncio.run(run(args, settings, kind, Path(workdir)))


async def run(args, settings: Settings, kind: str, workdir: Path) -> int:
    tag = uuid.uuid4().hex[:6]
    settings = settings.model_copy(update={"topic_prefix": f"bench{tag}.", "mongo_db": f"bench_{tag}"})
    print(
        f"selfex bench audit: {os.cpu_count()} CPUs, Python {platform.python_version()}, servers: {kind}, "
        f"{settings.topic_partitions} partitions per topic, audit batches of up to {MAX_BATCH:,}",
        flush=True,
    )
    hasher = Hasher.from_settings(settings)
    if args.queries_only:
        await query_timings(settings.model_copy(update={"mongo_db": f"bench_{tag}_queries"}), args.query_records, args.partitions, hasher)
        return 0
    bare = await bare_insert_rate(settings, args.bare, hasher)
    print(
        f"store's bare batched insert: {bare:,.0f} records/s ({args.bare:,} audit-shaped records, insert_many of {MAX_BATCH:,})", flush=True
    )

    await ensure_topics(settings)
    await ensure_operator_topics(settings, OPERATOR)
    client = create_client(settings)
    database = client[settings.database_for("audit")]
    try:
        with child([sys.executable, "-m", "selfex.cli", "run", "audit"], service_environment(settings), workdir / "audit.log"):
            async with producer(settings) as send:
                ready = time.perf_counter()
                await send_pairs(send, settings, hasher, 1, "bench-probe")
                await until_recorded(database, 2, READY_SECONDS)
                print(f"audit ready (groups joined, first pair recorded) in {time.perf_counter() - ready:.1f} s", flush=True)

                paced = int(args.rate * args.seconds)
                started = time.perf_counter()
                for n in range(0, paced, CHUNK):
                    due = started + n / args.rate
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                    await send_pairs(send, settings, hasher, min(CHUNK, paced - n), "bench-paced")
                await until_recorded(database, 2 + 2 * paced, 600)
                rate, lag = await appended(database, "bench-paced")
                print(
                    f"at {args.rate:,.0f} account events/s + their decisions ({2 * args.rate:,.0f} records/s offered, {args.seconds:g} s): "
                    f"appended {rate:,.0f} records/s; lag {lag}",
                    flush=True,
                )

                for n in range(0, args.events, CHUNK):
                    await send_pairs(send, settings, hasher, min(CHUNK, args.events - n), "bench-max")
                await until_recorded(database, 2 + 2 * paced + 2 * args.events, 1200)
                rate, lag = await appended(database, "bench-max")
                print(
                    f"at the maximum ({args.events:,} account events + their decisions sent as fast as the bench can): "
                    f"appended {rate:,.0f} records/s = {rate / bare:.0%} of the store's bare batched insert; lag {lag}",
                    flush=True,
                )
    finally:
        await client.close()
    if args.verify_records:
        await verify_many(settings.model_copy(update={"mongo_db": f"bench_{tag}_verify"}), args.verify_records, args.partitions, hasher)
    if args.query_records:
        await query_timings(settings.model_copy(update={"mongo_db": f"bench_{tag}_queries"}), args.query_records, args.partitions, hasher)
    return 0


async def query_timings(settings: Settings, count: int, partitions: int, hasher: Hasher) -> None:
    """The compliance queries over ``count`` records: account events of 1,000 people, a decision each."""
    from services.audit.queries import AuditQueries, Criteria, Scope
    from services.audit.repository import Entry, MongoAuditLog

    client = create_client(settings)
    try:
        database = client[settings.database_for("audit")]
        await ensure_indexes(database, INDEXES)
        log = MongoAuditLog(database)
        events_topic = settings.topic(topics.of_operator(OPERATOR, topics.ACCOUNT_EVENTS))
        decisions_topic = settings.topic(topics.of_operator(OPERATOR, topics.DECISIONS))
        offsets: dict[tuple[str, int], int] = {}
        started = time.perf_counter()
        batch: list[Entry] = []
        for n in range(count // 2):
            login = AccountEventOccurred(
                source="bench",
                operator_id=OPERATOR,
                payload=AccountEventPayload(
                    operator_event_id=f"e-{n}", account_id=f"acc-{n}", kind=AccountEventKind.LOGIN, identity=identity(n % 1000)
                ),
            )
            outcome = Outcome.BLOCK if n % 10 == 0 else Outcome.ALLOW
            decision = DecisionMade(
                source="bench",
                operator_id=OPERATOR,
                payload=DecisionPayload(
                    account_event_id=login.id,
                    operator_event_id=f"e-{n}",
                    account_id=f"acc-{n}",
                    kind=AccountEventKind.LOGIN,
                    outcome=outcome,
                ),
            )
            for topic, event in ((events_topic, login), (decisions_topic, decision)):
                offset = offsets[(topic, n % partitions)] = offsets.get((topic, n % partitions), -1) + 1
                batch.append(Entry(topic, n % partitions, offset, utcnow().isoformat(timespec="milliseconds"), event.redacted(hasher)))
            if len(batch) >= MAX_BATCH:
                await log.append(batch)
                batch = []
        await log.append(batch)
        print(f"{count:,} records appended in {time.perf_counter() - started:,.0f} s for the query timings", flush=True)
        queries = AuditQueries(database)

        async def timed(what: str, work) -> None:
            began = time.perf_counter()
            said = await work()
            print(f"  {what}: {(time.perf_counter() - began) * 1000:,.0f} ms ({said})", flush=True)

        async def page() -> str:
            found, cursor = await queries.page(Scope(OPERATOR), Criteria(types=("decision.made",)), limit=100)
            found, _ = await queries.page(Scope(OPERATOR), Criteria(types=("decision.made",)), cursor=cursor, limit=100)
            return f"{len(found)} records"

        async def statement() -> str:
            return f"{len(await queries.statement(Scope(None), hasher.lookup_forms(identity(7))))} records"

        async def export() -> str:
            return f"{sum([1 async for _ in queries.every(Scope(None), Criteria(types=('decision.made',)))]):,} records"

        async def statistics() -> str:
            figures = (await queries.statistics(Scope(None), None, utcnow())).as_json()
            return f"{sum(sum(v for k, v in day.items() if k != 'day') for day in figures['decisions_by_day']):,} decisions counted"

        await timed("second page of 100 decisions (type, cursor)", page)
        await timed("a person's statement (their account events and decisions)", statement)
        await timed("export of every decision (read and listed)", export)
        await timed("statistics over the whole log", statistics)
    finally:
        await client.drop_database(settings.database_for("audit"))
        await client.close()


def producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=settings.kafka, linger_ms=5, max_batch_size=512 * 1024, acks=1)


async def send_pairs(send: AIOKafkaProducer, settings: Settings, hasher: Hasher, count: int, source: str) -> None:
    """``count`` account events and a decision for each, made now (their occurred_at is the send time)."""
    events_topic = settings.topic(topics.of_operator(OPERATOR, topics.ACCOUNT_EVENTS))
    decisions_topic = settings.topic(topics.of_operator(OPERATOR, topics.DECISIONS))
    sent = []
    for n in range(count):
        account = f"acc-{uuid.uuid4().hex[:8]}"
        event = AccountEventOccurred(
            source=source,
            operator_id=OPERATOR,
            payload=AccountEventPayload(
                operator_event_id=f"{source}-{n}", account_id=account, kind=AccountEventKind.LOGIN, identity=identity(n)
            ),
        )
        decision = DecisionMade.caused_by(
            event,
            source=source,
            operator_id=OPERATOR,
            payload=DecisionPayload(
                account_event_id=event.id,
                operator_event_id=event.payload.operator_event_id,
                account_id=account,
                kind=AccountEventKind.LOGIN,
                outcome=Outcome.ALLOW,
            ),
        )
        sent.append(await send.send(events_topic, event.model_dump_json().encode(), key=event.key()))
        sent.append(await send.send(decisions_topic, decision.model_dump_json().encode(), key=decision.key()))
    await asyncio.gather(*sent)


async def until_recorded(database, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while await database[LOG].estimated_document_count() < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the audit log did not reach {count:,} records within {timeout:.0f} s")
        await asyncio.sleep(0.1)


async def appended(database, source: str) -> tuple[float, str]:
    """Records appended per second (from the first event sent to the last record appended) and the lag of each, for one run."""
    bodies = [json.loads(d["body"]) async for d in database[LOG].find({"operator_id": OPERATOR}, {"body": 1})]
    found = [body for body in bodies if body["event"]["source"] == source]
    recorded = [datetime.fromisoformat(d["recorded_at"]) for d in found]
    lags = sorted(
        (r - datetime.fromisoformat(d["event"]["occurred_at"])).total_seconds() * 1000 for r, d in zip(recorded, found, strict=True)
    )
    first_sent = min(datetime.fromisoformat(d["event"]["occurred_at"]) for d in found)
    span = (max(recorded) - first_sent).total_seconds()  # from the first send to the last record appended
    rate = len(found) / span if span > 0 else float("nan")
    p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
    return rate, f"p50 {statistics.median(lags):,.0f} ms, p99 {p99:,.0f} ms, max {lags[-1]:,.0f} ms ({len(found):,} records)"


def shaped(
    hasher: Hasher, count: int, partitions: int, tails: dict[int, Tail] | None = None, topic: str = "bench.operator.bench.account_events"
) -> list[list[dict]]:
    """``count`` audit records of account events, chained per partition from ``tails`` (updated), in insert batches."""
    tails = {} if tails is None else tails
    batch, batches = [], []
    for n in range(count):
        partition = n % partitions
        event = AccountEventOccurred(
            source="bench",
            operator_id=OPERATOR,
            payload=AccountEventPayload(
                operator_event_id=f"e-{n}", account_id=f"acc-{n}", kind=AccountEventKind.LOGIN, identity=identity(n % 1000)
            ),
        )
        tail = tails.get(partition, Tail())
        document = record(
            tail,
            topic=topic,
            partition=partition,
            offset=tail.offset + 1,
            recorded_at=utcnow().isoformat(timespec="milliseconds"),
            event=event.redacted(hasher),
        )
        tails[partition] = tail_of(document)
        batch.append(document)
        if len(batch) == MAX_BATCH:
            batches.append(batch)
            batch = []
    return [*batches, batch] if batch else batches


async def bare_insert_rate(settings: Settings, count: int, hasher: Hasher) -> float:
    client = create_client(settings)
    try:
        database = client[f"{settings.mongo_db}_bare"]
        await ensure_indexes(database, INDEXES)
        batches = shaped(hasher, count, 6)
        started = time.perf_counter()
        for batch in batches:
            await database[LOG].insert_many(batch, ordered=True)
        return count / (time.perf_counter() - started)
    finally:
        await client.close()


async def verify_many(settings: Settings, count: int, partitions: int, hasher: Hasher) -> None:
    client = create_client(settings)
    try:
        database = client[settings.database_for("audit")]
        await ensure_indexes(database, INDEXES)
        started = time.perf_counter()
        tails: dict[int, Tail] = {}
        for start in range(0, count, 50_000):
            for batch in shaped(hasher, min(50_000, count - start), partitions, tails):
                await database[LOG].insert_many(batch, ordered=True)
        print(f"{count:,} records written in {time.perf_counter() - started:,.0f} s for the verify run", flush=True)
    finally:
        await client.close()
    started = time.perf_counter()
    verifying = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "selfex.cli",
        "audit",
        "verify",
        env=service_environment(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await verifying.communicate()
    wall = time.perf_counter() - started
    print(
        f"selfex audit verify over {count:,} records: {wall:.1f} s wall, exit {verifying.returncode}: {out.decode(errors='replace').strip()[-500:]}",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
