"""Delivers what is pending: each due delivery is held (a lease), attempted through the circuit
breaker, and then marked delivered, scheduled again (exponential backoff with jitter), or failed
after the retry budget with an alert. A delivery the breaker stopped is not an attempt.
"""

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import structlog
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState

from services.forwarder.adapters import Adapter
from services.forwarder.domain import Backoff, PermanentDeliveryError, TransientDeliveryError
from services.forwarder.repository import Deliveries
from shared.crypto import SealError
from shared.events import Event, ExclusionForwarded, ForwardingFailed, ForwardingPayload, derived_id
from shared.service import Background, Clock
from shared.settings import Settings

log = structlog.get_logger("forwarder")


class Dispatcher(Background):
    name = "forwarder.dispatcher"

    def __init__(
        self, settings: Settings, deliveries: Deliveries, adapter: Adapter, clock: Clock, publish: Callable[[Event], Awaitable[None]]
    ) -> None:
        self.settings = settings
        self.deliveries = deliveries
        self.adapter = adapter
        self.clock = clock
        self.publish = publish
        self.register = settings.forwarder_register
        self.backoff = Backoff(settings.forwarder_retry_first_seconds, settings.forwarder_retry_longest_seconds)
        self.lease = timedelta(seconds=settings.forwarder_timeout_seconds * 3)
        self.breakers = AsyncCircuitBreakerFactory(
            default_threshold=settings.forwarder_breaker_failures,
            default_ttl=settings.forwarder_breaker_pause_seconds,
            exclude=[PermanentDeliveryError],  # the register answered: it is up
        )
        self.breakers.add_listener(self._breaker_event)
        self._breaker_changes: list[str] = []
        self.breaker_state = "closed"
        self._open_until = 0.0  # monotonic: while the breaker is open, nothing is taken before this
        self._wake = asyncio.Event()

    def _breaker_event(self, name: str, event_type: str, event: Any) -> None:
        if event_type == "state_changed":
            state = getattr(event, "state", "?")
            log.warning("register_breaker", register=name, state=state)
            self._breaker_changes.append(state)
            self.breaker_state = state
            if state == "opened":
                self._open_until = time.monotonic() + self.settings.forwarder_breaker_pause_seconds

    async def _note_breaker(self) -> None:
        while self._breaker_changes:
            await self.deliveries.breaker_changed(self.register, self._breaker_changes.pop(0), self.clock())

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        """Keep up to ``forwarder_concurrency`` attempts in flight: whenever one ends, a delivery is
        recorded (``wake``) or the poll interval passes, take what is due into the free places."""
        inflight: dict[str, asyncio.Task] = {}
        try:
            while True:
                self._wake.clear()
                try:
                    await self._take_due(inflight)
                    await self._note_breaker()
                except Exception:
                    log.exception("delivery_round_failed")
                waker = asyncio.create_task(self._wake.wait())
                await asyncio.wait(
                    [waker, *inflight.values()], timeout=self.settings.forwarder_poll_seconds, return_when=asyncio.FIRST_COMPLETED
                )
                waker.cancel()
                for delivery_id, task in list(inflight.items()):
                    if task.done():
                        del inflight[delivery_id]
                        if not task.cancelled() and task.exception() is not None:
                            log.error("delivery_attempt_crashed", delivery_id=delivery_id, error=repr(task.exception())[:300])
        finally:
            for task in inflight.values():  # stopping: each stays pending, taken again once its lease lapses
                task.cancel()

    async def _take_due(self, inflight: dict[str, asyncio.Task]) -> None:
        """Fill the free places with due deliveries. While the breaker is open nothing is taken (the
        register is left alone until the pause ends); then one delivery at a time probes it until it closes."""
        if time.monotonic() < self._open_until:
            return
        concurrency = self.settings.forwarder_concurrency if self.breaker_state == "closed" else 1
        free = concurrency - len(inflight)
        if free <= 0:
            return
        now = self.clock()
        for due in await self.deliveries.due(now, free + len(inflight)):
            if due["_id"] in inflight or len(inflight) >= concurrency:
                continue
            taken = await self.deliveries.take(due, now, self.lease)
            if taken is not None:
                inflight[taken["_id"]] = asyncio.create_task(self.attempt(taken), name=f"forwarder.delivery.{taken['_id']}")

    async def attempt(self, delivery: dict[str, Any]) -> None:
        delivery_id, attempts = delivery["_id"], delivery["attempts"]
        try:
            async with await self.breakers.get_breaker(self.register):
                await self.adapter.deliver(delivery, self.clock())
        except OpenedState:
            when = self.clock() + timedelta(seconds=self.settings.forwarder_breaker_pause_seconds / 2)
            await self.deliveries.retry_at(delivery_id, when, "the register's circuit breaker is open", attempted=False)
            return
        except (PermanentDeliveryError, SealError, ValueError) as exc:
            await self._fail(delivery, f"refused: {exc}")
            return
        except Exception as exc:  # the register away (TransientDeliveryError), or a fault of ours: retried within the budget
            if not isinstance(exc, TransientDeliveryError):
                log.exception("delivery_attempt_failed_unexpectedly", delivery_id=delivery_id)
                exc = TransientDeliveryError(f"{type(exc).__name__} in the forwarder")
            if attempts >= self.settings.forwarder_attempts:
                await self._fail(delivery, f"{exc} (after {attempts} attempts)")
                return
            pause = self.backoff.pause(attempts)
            await self.deliveries.retry_at(delivery_id, self.clock() + timedelta(seconds=pause), str(exc))
            log.info("delivery_retrying", delivery_id=delivery_id, attempts=attempts, retry_in=round(pause, 2), error=str(exc))
            return
        await self.deliveries.delivered(delivery_id, self.clock())
        log.info("exclusion_forwarded", delivery_id=delivery_id, exclusion_id=delivery["exclusion_id"], attempts=attempts)
        await self.publish(self._event(ExclusionForwarded, delivery, None))

    async def _fail(self, delivery: dict[str, Any], reason: str) -> None:
        await self.deliveries.failed(delivery["_id"], self.clock(), reason[:500])
        log.error("delivery_failed", delivery_id=delivery["_id"], exclusion_id=delivery["exclusion_id"], reason=reason[:500])
        await self.publish(self._event(ForwardingFailed, delivery, reason[:500]))

    def _event(self, kind: type[ExclusionForwarded] | type[ForwardingFailed], delivery: dict[str, Any], reason: str | None) -> Event:
        """Derived from the forwarded lifecycle event (and the replay, if one), so a repeat is the same event."""
        name = f"{kind.model_fields['type'].default}/{delivery.get('replayed_at') or ''}"
        return kind(
            id=derived_id(delivery["event_id"], name),
            source="forwarder",
            causation_id=uuid.UUID(delivery["event_id"]),
            subject=delivery.get("subject"),
            payload=ForwardingPayload(
                delivery_id=delivery["_id"],
                exclusion_id=delivery["exclusion_id"],
                change=delivery["change"],
                to_register=self.register,
                adapter=self.settings.forwarder_adapter,
                attempts=delivery["attempts"],
                reason=reason,
            ),
        )
