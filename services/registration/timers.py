"""Timers without a scheduler: every exclusion says when it next changes by itself (``next_transition_at``).

A loop claims due exclusions one at a time with a conditional update (a claim expires, so a replica
that dies frees its work), applies the transition the clock made due and publishes its event. With
several replicas each exclusion is claimed by one; the write is conditional on the version anyway.
``tick(now)`` is one pass of the loop: tests call it to move time instead of sleeping.
"""

import uuid
from datetime import datetime, timedelta

import structlog

from services.registration import transitions
from services.registration.outbox import Outbox, entries
from services.registration.repository import MongoExclusions
from shared.policies import Policy, PolicyError, policy_for
from shared.service import Clock, Ticker

CLAIM_LEASE = timedelta(seconds=60)
OUTBOX_GRACE = timedelta(seconds=30)  # younger entries are still being published by their writer
MAX_PER_TICK = 1000


class Timers:
    def __init__(self, exclusions: MongoExclusions, outbox: Outbox, policies: dict[str, Policy], clock: Clock, interval: float) -> None:
        self.exclusions = exclusions
        self.outbox = outbox
        self.policies = policies
        self.clock = clock
        self.interval = interval
        self.claimer = f"registration-{uuid.uuid4().hex[:8]}"
        self.log = structlog.get_logger("registration.timers")
        self._ticker = Ticker("registration-timers", self.tick, interval)

    async def tick(self, now: datetime | None = None) -> int:
        """Apply every transition due at ``now`` (default: the clock) and relay stale outbox entries."""
        now = now or self.clock()
        applied = 0
        while applied < MAX_PER_TICK:
            stored = await self.exclusions.claim_due(now, until=now + CLAIM_LEASE, claimer=self.claimer)
            if stored is None:
                break
            try:
                policy = policy_for(self.policies, stored.exclusion.jurisdiction)
            except PolicyError:
                self.log.error("timer_without_policy", exclusion_id=str(stored.id), jurisdiction=stored.exclusion.jurisdiction)
                continue  # the claim holds it back until the policy is back
            transition = transitions.due(stored.exclusion, policy, now)
            if transition is None:
                self.log.warning("timer_not_due", exclusion_id=str(stored.id), state=stored.exclusion.state.value)
                continue
            pending = entries(transition)
            if not await self.exclusions.save(stored, transition.exclusion, pending, at=now):
                self.log.info("timer_lost_race", exclusion_id=str(stored.id))
                continue
            self.log.info(
                "exclusion_" + transition.event.type.removeprefix("exclusion."),
                exclusion_id=str(stored.id),
                subject=stored.exclusion.person_id,
                state=transition.exclusion.state.value,
                event_id=str(transition.event.id),
            )
            await self.outbox.deliver(stored, pending)
            applied += 1
        await self.outbox.relay(now - OUTBOX_GRACE)
        return applied

    def start(self) -> None:
        """Run the loop in the background; an interval of 0 leaves the ticking to the caller."""
        self._ticker.start()

    async def stop(self) -> None:
        await self._ticker.stop()
