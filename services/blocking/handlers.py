"""Blocking's consumers: account events in, decisions out; lifecycle events keep the view current."""

from shared import topics
from shared.events import AccountEventOccurred, ExclusionActivated, LifecycleEvent
from shared.identity import Hasher
from shared.service import Service

from services.blocking import domain
from services.blocking.repository import MongoActiveExclusions


def register(service: Service, hasher: Hasher, view: domain.ExclusionView) -> None:
    @service.subscriber(topics.ACCOUNT_EVENTS, title="blocking.account_events")
    async def on_account_event(event: AccountEventOccurred) -> None:
        """Decide ALLOW or BLOCK for one account event and publish the decision."""
        identifiers = hasher.identifiers(event.payload.identity)
        decision = domain.decide(event, identifiers, view, service.clock())
        await service.publish(decision)
        service.log.info("decision_made", decision_id=str(decision.id), outcome=decision.payload.outcome.value)

    @service.subscriber(topics.EXCLUSION_LIFECYCLE, title="blocking.exclusion_lifecycle")
    async def on_exclusion_lifecycle(event: LifecycleEvent) -> None:
        """Keep the view of exclusions in force current."""
        if isinstance(event, ExclusionActivated):
            exclusion = domain.ActiveExclusion(
                exclusion_id=event.payload.exclusion_id,
                identifiers=frozenset(event.payload.identifiers),
                scope=event.payload.scope,
                starts_at=event.payload.starts_at,
                ends_at=event.payload.ends_at,
            )
            view.add(exclusion)
            await MongoActiveExclusions(service.db).save(exclusion)
            service.log.info("exclusion_in_view", exclusion_id=str(exclusion.exclusion_id), in_view=len(view))
