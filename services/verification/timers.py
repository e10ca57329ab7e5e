"""The verification timer: expired codes fail, left-behind outboxes go out. No scheduler needed:
``tick(now)`` does one round (tests call it with the time they choose); ``start`` runs it in a loop."""

import asyncio
import contextlib
from datetime import datetime

import structlog

from services.verification.verifier import Verifier

log = structlog.get_logger("verification.timers")


class Timers:
    def __init__(self, verifier: Verifier, *, interval: float) -> None:
        self.verifier = verifier
        self.interval = interval
        self._task: asyncio.Task | None = None

    async def tick(self, now: datetime) -> int:
        """One round at ``now``; returns how many verifications expired."""
        return await self.verifier.tick(now)

    async def start(self) -> None:
        """Run the loop in the background; an interval of 0 leaves the ticking to the caller."""
        if self.interval > 0 and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="verification-timers")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                expired = await self.tick(self.verifier.service.clock())
                if expired:
                    log.info("verifications_expired", count=expired)
            except Exception:  # noqa: BLE001 — a failed round is retried on the next one
                log.exception("timer_round_failed")
            await asyncio.sleep(self.interval)
