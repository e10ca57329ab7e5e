"""Each blocking instance's view follows every partition of the lifecycle topic, and knows whether it
is current.

The lifecycle subscriber's consumer group is shared by the instances, so each of them handles only
some partitions: enough to write the projection and push enforcement once, not enough for a view.
So each instance also reads the whole topic with a consumer of its own (no group), starting where
the shared group had committed when the view was loaded from the projection (what came before is in
the projection, what comes after is followed here), or from the positions a stored snapshot of the
view was complete up to. Lifecycle snapshots carry versions, so reading one twice, or late, changes
nothing.

Current means proven by the broker: every ``PROBE_SECONDS`` the follower asks the broker for the
topic's end offsets, and when its own position has reached them the view held everything published
before the question was asked. A view not proven current within the bound (the follower stopped, its
connection cut, the store away while applying) may be incomplete: the instance then answers
UNAVAILABLE and is not ready. A follower that fails starts again by itself.
"""

import asyncio
import time
from collections.abc import Callable

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.blocking import domain
from services.blocking.repository import MongoExclusionProjection
from services.blocking.view import ExclusionView
from shared import topics
from shared.health import Readiness
from shared.settings import Settings

log = structlog.get_logger(__name__)
RETRY_SECONDS = 1.0
PROBE_SECONDS = 0.5
PART = "view"
CATCHING_UP, STOPPED, LAGGING = "view_catching_up", "view_follower_stopped", "view_lagging"


class ViewFollower:
    def __init__(
        self,
        settings: Settings,
        view: ExclusionView,
        projection: Callable[[], MongoExclusionProjection],
        group: str,
        readiness: Readiness,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._view = view
        self._projection = projection
        self._group = group
        self._readiness = readiness
        self._clock = clock
        self._max_lag = settings.blocking_view_max_lag_seconds
        self._topic = settings.topic(topics.EXCLUSION_LIFECYCLE)
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task | None = None
        self._checkpoint: dict[TopicPartition, int] = {}
        self._bounds: dict[TopicPartition, tuple[int, int]] = {}  # (first, end) offset of each partition at the checkpoint
        # The offset of the first record of each partition the view has not applied: every record
        # before it is in the view at any point where the event loop can switch.
        self._positions: dict[TopicPartition, int] = {}
        self._current_at: float | None = None  # when the view was last proven to hold everything published
        self._caught_up = asyncio.Event()
        self._paused = False

    async def checkpoint(self) -> None:
        """Note where the shared group has got to; call it before the view is loaded from the projection."""
        # Asked as the group, without joining it (the embedded broker does not answer the admin request).
        reader = AIOKafkaConsumer(bootstrap_servers=self._settings.kafka, group_id=self._group, enable_auto_commit=False)
        await reader.start()
        try:
            await reader.topics()
            partitions = [TopicPartition(self._topic, p) for p in sorted(reader.partitions_for_topic(self._topic) or ())]
            committed = {partition: await reader.committed(partition) for partition in partitions}
            firsts = await reader.beginning_offsets(partitions) if partitions else {}
            ends = await reader.end_offsets(partitions) if partitions else {}
        finally:
            await reader.stop()
        self._checkpoint = {tp: offset for tp, offset in committed.items() if offset is not None and offset >= 0}
        self._bounds = {tp: (firsts[tp], ends[tp]) for tp in partitions}

    @property
    def topic(self) -> str:
        return self._topic

    def can_resume_from(self, positions: dict[int, int]) -> bool:
        """Whether the records after these positions (partition -> offset) can all still be read.

        Not when the topic no longer holds the records just after them (retention), when they lie
        beyond its end (another topic of the same name), or when they name a partition it lacks.
        Call after ``checkpoint``.
        """
        for partition, offset in positions.items():
            bounds = self._bounds.get(TopicPartition(self._topic, partition))
            if bounds is None or not bounds[0] <= offset <= bounds[1]:
                return False
        return True

    def resume_from(self, positions: dict[int, int]) -> None:
        """Follow from these positions instead of the group's: the view holds everything before them
        (a partition not named is read from its beginning)."""
        self._checkpoint = {TopicPartition(self._topic, p): o for p, o in positions.items()}

    def positions(self) -> dict[int, int]:
        """Partition -> offset of the first record the view has not applied; the view holds every one before."""
        return {tp.partition: offset for tp, offset in self._positions.items()}

    async def start(self) -> None:
        """Start following; the view is not current (nor the instance ready) until it has caught up."""
        self._readiness.watch(PART, self.unavailable_reason)
        self._task = asyncio.create_task(self._run(), name="blocking-view-follower")

    async def caught_up(self) -> None:
        """Return once the view holds every lifecycle event published before the follower started."""
        waited = self._clock()
        while True:
            try:
                await asyncio.wait_for(asyncio.shield(self._caught_up.wait()), timeout=10)
                log.info("view_caught_up", seconds=round(self._clock() - waited, 2), in_view=len(self._view))
                return
            except TimeoutError:
                log.warning("view_still_catching_up", seconds=round(self._clock() - waited))

    def unavailable_reason(self) -> str | None:
        """Why the view may be incomplete now, or None when it is known to be current within the bound."""
        if self._task is None or self._task.done():
            return STOPPED
        if self._current_at is None:
            return CATCHING_UP
        if self._clock() - self._current_at > self._max_lag:
            return LAGGING
        return None

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def kill(self) -> None:
        """Stop following as a failure would (for tests and diagnostics): the view is no longer current."""
        await self.stop()

    def pause(self) -> None:
        """Stop reaching the broker while still running, as a cut connection would (for tests)."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    async def _run(self) -> None:
        """Follow until cancelled; a failure starts the consumer again from where the view has got to."""
        positions = self._positions = dict(self._checkpoint)
        while True:
            consumer = None
            try:
                consumer = await self._open(positions)
                await self._follow(consumer, positions)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 — the broker or store is away: start again
                log.warning("view_follower_restarting", error=type(error).__name__)
                await asyncio.sleep(RETRY_SECONDS)
            finally:
                if consumer is not None:
                    await asyncio.shield(consumer.stop())

    async def _open(self, positions: dict[TopicPartition, int]) -> AIOKafkaConsumer:
        # Raw aiokafka, not a FastStream subscriber: it seeks each partition to a position of its own
        # and probes end_offsets against its position, which FastStream's subscribers do not expose.
        consumer = self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._settings.kafka,
            client_id="selfex-blocking-follower",
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
        )
        await consumer.start()
        try:
            await consumer.topics()  # fetches the metadata
            partitions = [TopicPartition(self._topic, p) for p in sorted(consumer.partitions_for_topic(self._topic) or ())]
            if not partitions:
                raise LookupError(f"no partitions for {self._topic}")
            consumer.assign(partitions)
            for partition in partitions:
                if partition in positions:
                    consumer.seek(partition, positions[partition])
                else:
                    await consumer.seek_to_beginning(partition)
        except BaseException:
            await consumer.stop()
            raise
        return consumer

    async def _follow(self, consumer: AIOKafkaConsumer, positions: dict[TopicPartition, int]) -> None:
        probed = 0.0
        while True:
            if self._paused:
                await asyncio.sleep(0.05)
                continue
            batches = await consumer.getmany(timeout_ms=100, max_records=1000)
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
            for partition, records in batches.items():
                if records:
                    positions[partition] = records[-1].offset + 1
            if self._clock() - probed >= PROBE_SECONDS or batches:
                probed = self._clock()
                await self._probe(consumer)

    async def _probe(self, consumer: AIOKafkaConsumer) -> None:
        """Ask the broker where the topic ends; if the view has got there, it was current when asked."""
        asked = self._clock()
        partitions = list(consumer.assignment())
        ends = await asyncio.wait_for(consumer.end_offsets(partitions), timeout=max(1.0, self._max_lag))
        for partition in partitions:
            if await consumer.position(partition) < ends[partition]:
                return
        self._current_at = asked
        self._caught_up.set()

    async def _apply(self, snapshots: list) -> None:
        view = self._view
        unseen = [s.exclusion_id for s in snapshots if view.version_of(s.exclusion_id) is None]
        known = await self._projection().known(unseen) if unseen else {}
        for snapshot in snapshots:
            domain.follow_view(view, known, snapshot)
