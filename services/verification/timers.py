"""The verification timer: expired codes fail, left-behind outboxes go out. No scheduler needed:
``tick(now)`` does one round (tests call it with the time they choose); ``start`` runs it in a loop."""

from datetime import datetime

import structlog

from services.verification.verifier import Verifier
from shared.service import Ticker

log = structlog.get_logger("verification.timers")


class Timers:
    def __init__(self, verifier: Verifier, *, interval: float) -> None:
        self.verifier = verifier
        self.interval = interval
        self._ticker = Ticker("verification-timers", self._round, interval)

    async def tick(self, now: datetime) -> int:
        """One round at ``now``; returns how many verifications expired."""
        return await self.verifier.tick(now)

    async def start(self) -> None:
        """Run the loop in the background; an interval of 0 leaves the ticking to the caller."""
        self._ticker.start()

    async def stop(self) -> None:
        await self._ticker.stop()

    async def _round(self) -> None:
        expired = await self.tick(self.verifier.service.clock())
        if expired:
            log.info("verifications_expired", count=expired)
