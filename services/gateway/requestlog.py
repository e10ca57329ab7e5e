"""Each request's audit record, on its way to the audit log through ``gateway.requests``.

A record is queued, not waited for: it is written for every answer, checks included, so it must
cost the request almost nothing. Records wait ``LINGER_SECONDS`` and then go out together with
FastStream's ``publish_batch``, one record batch per partition; a record the broker refuses is
logged, by request id.
"""

import asyncio
import zlib
from itertools import islice

import structlog
from faststream.kafka import KafkaBroker

from shared.broker import BatchMessage, batch_message, record_batches, topic_partitions
from shared.events import RequestHandled
from shared.settings import Settings

log = structlog.get_logger("gateway")

LINGER_SECONDS = 0.01
HEADERS = {"content-type": "application/json", "type": RequestHandled.model_fields["type"].default}


class RequestLog:
    def __init__(self, broker: KafkaBroker, settings: Settings) -> None:
        self._broker = broker
        self._topic = settings.topic(RequestHandled.topic)
        self._partitions = 1
        self._queued: dict[int | None, list[tuple[BatchMessage, str]]] = {}
        self._flush: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task] = set()
        self.lost = 0

    async def start(self) -> None:
        self._partitions = len(await topic_partitions(self._broker, self._topic))

    async def stop(self) -> None:
        """Send what is still queued and wait for every record's acknowledgement."""
        if self._flush is not None:
            self._flush.cancel()
        self._send()
        await asyncio.gather(*self._sending, return_exceptions=True)

    async def record(self, event: RequestHandled) -> None:
        key = event.key()
        # One operator's records stay in order on one partition; crc32 costs less than the client's
        # pure-Python murmur2, and only this gateway's request logs write the topic.
        partition = zlib.crc32(key) % self._partitions if key else None
        message = batch_message(event.model_dump_json().encode(), key)
        self._queued.setdefault(partition, []).append((message, event.payload.request_id))
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(LINGER_SECONDS, self._send)

    def _send(self) -> None:
        self._flush = None
        queued, self._queued = self._queued, {}
        for partition, records in queued.items():
            task = asyncio.create_task(self._publish(partition, records))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _publish(self, partition: int | None, records: list[tuple[BatchMessage, str]]) -> None:
        request_ids = iter([request_id for _, request_id in records])
        for batch in record_batches([message for message, _ in records]):
            ids = list(islice(request_ids, len(batch)))
            try:
                await (await self._broker.publish_batch(*batch, topic=self._topic, partition=partition, headers=HEADERS, no_confirm=True))
            except Exception as error:  # noqa: BLE001 — the broker refused or is away: the records are lost, and said to be
                self.lost += len(ids)
                log.error("request_records_lost", request_ids=ids, error=type(error).__name__, lost=self.lost)
