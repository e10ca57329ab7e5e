"""Each request's audit record, on its way to the audit log through ``gateway.requests``.

A record is queued, not waited for: it is written for every answer, checks included, so it must
cost the request almost nothing. Its own producer batches records for a few milliseconds (one
produce request then carries hundreds); a record the broker refuses is logged, by request id.
"""

import zlib

import structlog
from aiokafka import AIOKafkaProducer

from shared.events import RequestHandled
from shared.settings import Settings

log = structlog.get_logger("gateway")

LINGER_MS = 10
MAX_BATCH_BYTES = 1024 * 1024


class RequestLog:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._topic = settings.topic(RequestHandled.topic)
        self._producer: AIOKafkaProducer | None = None
        self._partitions = 1
        self.lost = 0

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(  # made here: aiokafka binds to the running loop
            bootstrap_servers=self._settings.kafka,
            client_id="selfex-gateway-requests",
            acks="all",
            enable_idempotence=self._settings.kafka_idempotence,
            linger_ms=LINGER_MS,
            max_batch_size=MAX_BATCH_BYTES,
        )
        await self._producer.start()
        self._partitions = len(await self._producer.partitions_for(self._topic))

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()  # sends what is still queued
            self._producer = None

    async def record(self, event: RequestHandled) -> None:
        assert self._producer is not None, "the request log starts in the app's lifespan"
        key = event.key()
        delivery = await self._producer.send(
            self._topic,
            event.model_dump_json().encode(),
            key=key,
            # One operator's records stay in order on one partition; crc32 costs less than the
            # client's pure-Python murmur2, and only this producer writes the topic.
            partition=zlib.crc32(key) % self._partitions if key else None,
            headers=[("content-type", b"application/json"), ("type", event.type.encode())],
        )
        request_id = event.payload.request_id
        delivery.add_done_callback(lambda done: self._delivered(done, request_id))

    def _delivered(self, done, request_id: str) -> None:
        if done.cancelled() or done.exception() is not None:
            self.lost += 1
            error = "cancelled" if done.cancelled() else type(done.exception()).__name__
            log.error("request_record_lost", request_id=request_id, error=error, lost=self.lost)
