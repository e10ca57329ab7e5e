"""The machine's limit for the decisions bench: a bare aiokafka consumer that forwards every record to
an output topic with no logic at all. Consumes, sends and commits in batches exactly as blocking does
(same fetch settings, the same remembered partitioner, one record batch per partition, every batch
sent before any is awaited, commit after the sends are acknowledged).

    python -m bench.forwarder BOOTSTRAP SOURCE_TOPIC TARGET_TOPIC GROUP
"""

import asyncio
import signal
import sys
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from services.blocking.handlers import BATCH_WAIT_MS, FETCH_MAX_WAIT_MS, MAX_BATCH
from services.blocking.publisher import KeyPartitions


async def forward(bootstrap: str, source: str, target: str, group: str) -> None:
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        session_timeout_ms=2000,
        heartbeat_interval_ms=500,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0, max_batch_size=512 * 1024)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await producer.start()
    await consumer.start()
    partition_of = KeyPartitions(sorted(await producer.partitions_for(target)))  # as blocking's outbox does
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=BATCH_WAIT_MS, max_records=MAX_BATCH)
            if not batches:
                continue
            packed: dict[int, Any] = {}
            sent = []
            for records in batches.values():
                for record in records:
                    partition = partition_of(record.key)
                    batch = packed.get(partition)
                    if batch is None or batch.append(key=record.key, value=record.value, timestamp=None, headers=[]) is None:
                        if batch is not None:
                            sent.append(await producer.send_batch(batch, target, partition=partition))
                        batch = packed[partition] = producer.create_batch()
                        batch.append(key=record.key, value=record.value, timestamp=None, headers=[])
            for partition, batch in packed.items():
                sent.append(await producer.send_batch(batch, target, partition=partition))
            await asyncio.gather(*sent)
            await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


if __name__ == "__main__":
    asyncio.run(forward(*sys.argv[1:5]))
