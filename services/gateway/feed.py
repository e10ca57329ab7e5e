"""Whether the gateway's lookup is current: the lifecycle feed watched against the topic's end.

The lookup is written by the lifecycle subscriber (one consumer group, shared by every gateway
replica, committing an offset only once its write is durable). A check can trust the lookup only if
that group has applied the topic up to a recent moment, so a watch samples the topic's end offsets
(the high watermarks) every ``gateway_feed_poll_seconds`` and compares the group's committed offsets
with them: the newest sample the group has reached is the moment the lookup is known complete up to.
The lookup counts as current while that moment is within ``gateway_feed_max_lag_seconds``.

So the feed is not current at start until the group has applied what the topic held when the
gateway started (the first sample), nor when the feed lags, nor when it has stopped: a dead consumer
task (noticed at once, and restarted), failing store writes (offsets stop moving), or a broker the
watch cannot reach (no sample succeeds, and the last known moment ages past the bound).

A check reads ``current()``: one clock read and a comparison, no broker call.
"""

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from shared import topics
from shared.health import Readiness
from shared.settings import Settings

log = structlog.get_logger("gateway")

PART = "feed"
MAX_SAMPLES = 1000  # a feed that far behind is judged by its oldest samples: later, never earlier


class LifecycleFeed:
    def __init__(
        self,
        settings: Settings,
        readiness: Readiness,
        subscriber: Callable[[], Any],
        *,
        group: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._readiness = readiness
        self._subscriber = subscriber  # the lifecycle subscriber (FastStream's), found when needed
        self._group = group
        self._clock = clock
        self._topic = settings.topic(topics.EXCLUSION_LIFECYCLE)
        self._max_lag = settings.gateway_feed_max_lag_seconds
        self._poll = settings.gateway_feed_poll_seconds
        self._timeout = max(1.0, min(self._max_lag, 5.0))
        self._current_until = 0.0  # the lookup is current until this moment (monotonic)
        self._caught_up_at: float | None = None
        self._samples: deque[tuple[float, dict[TopicPartition, int]]] = deque(maxlen=MAX_SAMPLES)
        self._reason = "starting: not yet caught up with the lifecycle topic"
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task | None = None
        self.restarts = 0
        readiness.not_ready(PART, self._reason)

    # --- what a check reads -------------------------------------------------------------------

    def current(self) -> bool:
        """Whether the lookup holds everything the topic held ``max_lag`` seconds ago (hot path)."""
        return self._clock() < self._current_until

    def reason(self) -> str | None:
        """Why the lookup is not current, or None when it is (and readiness told so)."""
        if self.current():
            self._readiness.ready(PART)
            return None
        reason = self._reason
        if self._caught_up_at is not None and reason == "ok":
            reason = f"the lifecycle feed is more than {self._max_lag:g}s behind (or the broker does not answer)"
        self._readiness.not_ready(PART, reason)
        return reason

    # --- the watch ------------------------------------------------------------------------------

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._settings.kafka,
            group_id=self._group,  # only to read the group's committed offsets: it never joins
            client_id="selfex-gateway-feed-watch",
            enable_auto_commit=False,
            request_timeout_ms=max(1000, int(self._timeout * 1000)),
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._watch(), name="gateway-feed-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()
            self._consumer = None
        self._current_until = 0.0
        self._reason = "stopped"
        self._readiness.not_ready(PART, self._reason)

    async def _watch(self) -> None:
        while True:
            try:
                if not await self._restarted_if_dead():
                    await asyncio.wait_for(self.sample(), self._timeout)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 — the bound decides when an unanswered watch matters
                log.warning("feed_watch_failed", error=type(error).__name__)
            self.reason()
            await asyncio.sleep(self._poll)

    async def sample(self) -> None:
        """One round: the topic's end now against the group's progress."""
        consumer = self._consumer
        assert consumer is not None, "the watch starts before it samples"
        sampled_at = self._clock()
        partitions = await self._partitions(consumer)
        ends = await consumer.end_offsets(partitions)
        self._samples.append((sampled_at, ends))
        applied = await self._applied(consumer, partitions)
        reached = None
        while self._samples and all(applied.get(tp, 0) >= offset for tp, offset in self._samples[0][1].items()):
            reached = self._samples.popleft()[0]
        if reached is not None:
            if self._caught_up_at is None:
                log.info("feed_caught_up", behind_seconds=round(self._clock() - reached, 3))
            self._caught_up_at = reached
            self._reason = "ok"
            self._current_until = reached + self._max_lag
        elif self._caught_up_at is None:
            self._reason = "starting: not yet caught up with the lifecycle topic"

    async def _partitions(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        await consumer.topics()
        found = consumer.partitions_for_topic(self._topic)
        if not found:
            raise LookupError(f"topic {self._topic} has no partitions yet")
        return [TopicPartition(self._topic, p) for p in sorted(found)]

    async def _applied(self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The group's committed offset of each partition; where it has none, the partition's start."""
        committed = await asyncio.gather(*(consumer.committed(tp) for tp in partitions))
        applied = dict(zip(partitions, committed, strict=True))
        missing = [tp for tp, offset in applied.items() if offset is None]
        if missing:
            applied.update(await consumer.beginning_offsets(missing))
        return applied

    async def _restarted_if_dead(self) -> bool:
        """A lifecycle consumer whose task has ended is noted (the lookup stops being current at
        once) and started again; True when it was."""
        subscriber = self._subscriber()
        tasks = getattr(subscriber, "tasks", None)
        if not getattr(subscriber, "running", False) or not tasks or any(not task.done() for task in tasks):
            return False
        self._current_until = 0.0
        self._reason = "the lifecycle consumer has stopped; restarting it"
        self._samples.clear()
        self._caught_up_at = None
        self.reason()
        log.error("feed_consumer_stopped", restarts=self.restarts)
        self.restarts += 1
        with contextlib.suppress(Exception):
            await subscriber.stop()
        await subscriber.start()
        self._reason = "restarted: not yet caught up with the lifecycle topic"
        return True
