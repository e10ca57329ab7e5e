"""The forwarder's lag as an event: ``forwarding.status`` on ``forwarding.events``, every
``forwarder_status_seconds`` and once more when it stops, so that others (the audit's statistics)
learn how far behind the register is without reading the forwarder's store. Counts and moments only.
"""

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import structlog

from services.forwarder.repository import Deliveries, Status
from shared.events import Event, ForwardingStatusPayload, ForwardingStatusReported
from shared.service import Clock
from shared.settings import Settings

log = structlog.get_logger("forwarder.status")


def _aware(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def age(moment: datetime | None, now: datetime) -> float | None:
    """Seconds from ``moment`` to ``now`` (never below 0: another instance's clock may be ahead); None for never."""
    moment = _aware(moment)
    return None if moment is None else max(0.0, round((now - moment).total_seconds(), 1))


def status_event(status: Status, settings: Settings, now: datetime, *, stopping: bool = False) -> ForwardingStatusReported:
    """The status as it stands at ``now``. The breaker is the one stored for this register (closed until it first changed)."""
    register = settings.forwarder_register or None
    breaker = (status.breaker if status.register == register else None) or "closed"
    return ForwardingStatusReported(
        occurred_at=now,
        source="forwarder",
        payload=ForwardingStatusPayload(
            to_register=register,
            adapter=settings.forwarder_adapter if register else None,
            pending=status.pending,
            failed=status.failed,
            oldest_pending_at=_aware(status.oldest_pending_at),
            oldest_pending_age_seconds=age(status.oldest_pending_at, now),
            last_delivered_at=_aware(status.last_delivered_at),
            last_sync_at=_aware(status.last_sync_at),
            last_sync_age_seconds=age(status.last_sync_at, now),
            breaker=breaker if register else None,
            stopping=stopping,
        ),
    )


class StatusReports:
    """Publishes the forwarder's status; nothing when it neither forwards nor syncs (it has no lag)."""

    def __init__(self, settings: Settings, deliveries: Deliveries, clock: Clock, publish: Callable[[Event], Awaitable[None]]) -> None:
        self.settings = settings
        self.deliveries = deliveries
        self.clock = clock
        self.publish = publish

    @property
    def wanted(self) -> bool:
        s = self.settings
        forwards_or_syncs = bool(
            s.forwarder_register or s.forwarder_sync_url or (s.forwarder_sync_kafka_bootstrap and s.forwarder_sync_kafka_topic)
        )
        return s.forwarder_status_seconds > 0 and forwards_or_syncs

    async def report(self, *, stopping: bool = False) -> ForwardingStatusReported | None:
        """Read the status from the store and publish it; the event published (None: nothing to report)."""
        if not self.wanted:
            return None
        event = status_event(await self.deliveries.status(), self.settings, self.clock(), stopping=stopping)
        await self.publish(event)
        log.debug("status_reported", register=event.payload.to_register, pending=event.payload.pending, failed=event.payload.failed)
        return event

    async def last(self) -> None:
        """The status once more as the forwarder stops; bounded, and never a reason for the stop to fail."""
        try:
            async with asyncio.timeout(self.settings.forwarder_timeout_seconds):
                await self.report(stopping=True)
        except Exception as exc:  # noqa: BLE001 — the store or broker away: the next start reports again
            log.warning("last_status_not_reported", error=type(exc).__name__)
