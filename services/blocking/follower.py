"""Each blocking instance's view follows every partition of the lifecycle topic.

The lifecycle subscriber's consumer group is shared by the instances, so each of them handles only
some partitions: enough to write the projection and push enforcement once, not enough for a view.
So each instance also reads the whole topic with a consumer of its own (no group), starting where
the shared group had committed when the view was loaded from the projection: what came before is in
the projection, what comes after is followed here. Snapshots carry versions, so reading one twice, or
late, changes nothing.
"""

import asyncio
from collections.abc import Callable

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.blocking import domain
from services.blocking.repository import MongoExclusionProjection
from services.blocking.view import ExclusionView
from shared import topics
from shared.settings import Settings

log = structlog.get_logger(__name__)
RETRY_SECONDS = 1.0


class ViewFollower:
    def __init__(self, settings: Settings, view: ExclusionView, projection: Callable[[], MongoExclusionProjection], group: str) -> None:
        self._settings = settings
        self._view = view
        self._projection = projection
        self._group = group
        self._topic = settings.topic(topics.EXCLUSION_LIFECYCLE)
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task | None = None
        self._checkpoint: dict[TopicPartition, int] = {}

    async def checkpoint(self) -> None:
        """Note where the shared group has got to; call it before the view is loaded from the projection."""
        # Asked as the group, without joining it (the embedded broker does not answer the admin request).
        reader = AIOKafkaConsumer(bootstrap_servers=self._settings.kafka, group_id=self._group, enable_auto_commit=False)
        await reader.start()
        try:
            await reader.topics()
            partitions = [TopicPartition(self._topic, p) for p in sorted(reader.partitions_for_topic(self._topic) or ())]
            committed = {partition: await reader.committed(partition) for partition in partitions}
        finally:
            await reader.stop()
        self._checkpoint = {tp: offset for tp, offset in committed.items() if offset is not None and offset >= 0}

    async def start(self) -> None:
        consumer = self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._settings.kafka,
            client_id="selfex-blocking-follower",
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
        )
        await consumer.start()
        await consumer.topics()  # fetches the metadata
        partitions = [TopicPartition(self._topic, p) for p in sorted(consumer.partitions_for_topic(self._topic) or ())]
        consumer.assign(partitions)
        for partition in partitions:
            if partition in self._checkpoint:
                consumer.seek(partition, self._checkpoint[partition])
            else:
                await consumer.seek_to_beginning(partition)
        self._task = asyncio.create_task(self._follow(consumer), name="blocking-view-follower")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=1000)
            snapshots = []
            for records in batches.values():
                for record in records:
                    try:
                        snapshots.append(domain.SnapshotEvent.model_validate_json(record.value).payload)
                    except Exception:  # noqa: BLE001 — the shared group's subscriber dead-letters it
                        continue
            while snapshots:
                try:
                    await self._apply(snapshots)
                    break
                except Exception as error:  # noqa: BLE001 — the store is away: try the same batch again
                    log.warning("view_follower_retrying", error=type(error).__name__)
                    await asyncio.sleep(RETRY_SECONDS)

    async def _apply(self, snapshots: list) -> None:
        view = self._view
        unseen = [s.exclusion_id for s in snapshots if view.version_of(s.exclusion_id) is None]
        known = await self._projection().known(unseen) if unseen else {}
        for snapshot in snapshots:
            domain.follow_view(view, known, snapshot)
