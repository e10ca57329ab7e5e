"""How the decisions bench measures: records through the real broker, timed from the send to the
arrival of the answer on the output topic; the view's lookup timed in-process; a process's memory."""

import asyncio
import json
import statistics
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from services.blocking.domain import decide
from services.blocking.publisher import KeyPartitions
from services.blocking.view import ExclusionView

Records = list[tuple[bytes, bytes, str]]  # (key, value, operator event id)


@dataclass
class Latency:
    p50_ms: float
    p95_ms: float
    p99_ms: float
    offered_per_second: float
    answered: int


class Output:
    """Reads an output topic from its current end by assigning every partition: no group to join."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=5)

    async def __aenter__(self) -> "Output":
        await self.consumer.start()
        partitions = None
        for _ in range(200):
            partitions = self.consumer.partitions_for_topic(self.topic)
            if partitions:
                break
            await self.consumer.topics()  # refreshes the metadata
            await asyncio.sleep(0.05)
        if not partitions:
            raise RuntimeError(f"topic {self.topic} does not exist")
        self.partitions = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self.consumer.assign(self.partitions)
        await self.consumer.seek_to_end(*self.partitions)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.consumer.stop()

    async def skip_to_end(self) -> None:
        await self.consumer.seek_to_end(*self.partitions)
        for partition in self.partitions:
            await self.consumer.position(partition)


def producer(bootstrap: str, linger_ms: int) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=linger_ms, max_batch_size=256 * 1024, acks=1)


async def until_answered(bootstrap: str, source: str, output: Output, probe: Records, timeout: float) -> float:
    """Send a probe now and then until an answer comes back (group joined, view loaded); seconds taken."""
    started = time.monotonic()
    async with producer(bootstrap, 0) as send:
        n = 0
        while time.monotonic() - started < timeout:
            key, value, _ = probe[n % len(probe)]
            await send.send_and_wait(source, value, key=key)
            n += 1
            batches = await output.consumer.getmany(timeout_ms=500)
            if any(batches.values()):
                return time.monotonic() - started
    raise TimeoutError(f"no answer on {output.topic} within {timeout:.0f}s")


async def until_group_stable(bootstrap: str, group: str, members: int, timeout: float) -> None:
    """Wait until ``members`` consumers have joined ``group`` and it has settled, so that no rebalance
    interrupts a measurement."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            described = (await admin.describe_consumer_groups([group]))[0]
            _, _, state, _, _, joined = described.groups[0][:6] if hasattr(described, "groups") else described[:6]
            if state == "Stable" and len(joined) >= members:
                return
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
    raise TimeoutError(f"{members} members did not settle in group {group} within {timeout:.0f}s")


async def throughput(bootstrap: str, source: str, output: Output, records: Records, timeout: float = 600) -> float:
    """Answers per second: all records sent as fast as the producer can, until as many answers came back."""
    await output.skip_to_end()
    received = 0

    async def receive() -> float:
        nonlocal received
        while received < len(records):
            batches = await output.consumer.getmany(timeout_ms=100, max_records=10_000)
            received += sum(len(b) for b in batches.values())
        return time.perf_counter()

    async with producer(bootstrap, 5) as send:
        partition_of = KeyPartitions(sorted(await send.partitions_for(source)))
        receiver = asyncio.create_task(receive())
        started = time.perf_counter()
        await send_in_batches(send, source, partition_of, records)
        finished = await asyncio.wait_for(receiver, timeout)
    return len(records) / (finished - started)


async def send_in_batches(send: AIOKafkaProducer, topic: str, partition_of: KeyPartitions, records: Records) -> None:
    """Every record, packed into record batches per partition and all sent before any is awaited: the
    cheapest way for the bench to produce, so that it outruns what it measures rather than limiting it."""
    batches: dict[int, Any] = {}
    sent = []
    for key, value, _ in records:
        partition = partition_of(key)
        batch = batches.get(partition)
        if batch is None or batch.append(key=key, value=value, timestamp=None, headers=[]) is None:
            if batch is not None:
                sent.append(await send.send_batch(batch, topic, partition=partition))
            batch = batches[partition] = send.create_batch()
            batch.append(key=key, value=value, timestamp=None, headers=[])
    for partition, batch in batches.items():
        sent.append(await send.send_batch(batch, topic, partition=partition))
    await asyncio.gather(*sent)


async def latency(bootstrap: str, source: str, output: Output, records: Records, rate: float, timeout: float = 60) -> Latency:
    """End-to-end latency at a fixed offered rate: each record's answer matched by operator event id."""
    await output.skip_to_end()
    sent_at: dict[str, float] = {}
    took: list[float] = []

    async def receive() -> None:
        while len(took) < len(records):
            batches = await output.consumer.getmany(timeout_ms=50)
            arrived = time.perf_counter()
            for batch in batches.values():
                for record in batch:
                    event_id = json.loads(record.value)["payload"]["operator_event_id"]
                    if event_id in sent_at:
                        took.append(arrived - sent_at.pop(event_id))

    async with producer(bootstrap, 0) as send:
        receiver = asyncio.create_task(receive())
        started, n = time.perf_counter(), 0
        while n < len(records):
            due = min(len(records), int((time.perf_counter() - started) * rate) + 1)
            while n < due:
                key, value, event_id = records[n]
                sent_at[event_id] = time.perf_counter()
                await send.send(source, value, key=key)
                n += 1
            await asyncio.sleep(0.0005)
        offered = len(records) / (time.perf_counter() - started)
        await asyncio.wait_for(receiver, timeout)
    cuts = statistics.quantiles(took, n=100, method="inclusive")
    return Latency(cuts[49] * 1000, cuts[94] * 1000, cuts[98] * 1000, offered, len(took))


def lookup_cost(view: ExclusionView, probes: list, now: datetime, rounds: int = 3) -> tuple[float, float]:
    """Microseconds per decision (lookup + the decision itself) and per bare view lookup: best of rounds."""
    best_decide = best_match = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for event, identifiers in probes:
            decide(event, identifiers, view, now)
        best_decide = min(best_decide, (time.perf_counter() - started) / len(probes))
        hashes = [list(identifiers.values()) for _, identifiers in probes]
        started = time.perf_counter()
        for each in hashes:
            view.matching(each)
        best_match = min(best_match, (time.perf_counter() - started) / len(probes))
    return best_decide * 1e6, best_match * 1e6


def memory_mb(pid: int) -> tuple[float, float]:
    """Resident and peak resident memory of a process, in MB (Linux /proc)."""
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) / 1024
    return fields.get("VmRSS", 0.0), fields.get("VmHWM", 0.0)
