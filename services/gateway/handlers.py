"""The gateway's consumers: keep its lookup and each operator's decisions current."""

from typing import Any

from shared import topics
from shared.events import DecisionMade, LifecycleEvent
from shared.service import Service

from services.gateway.domain import Summary
from services.gateway.repository import MongoDecisions, MongoLookup


def lifecycle_group(service: Service) -> str:
    """The consumer group that feeds the lookup (every gateway replica's share of it)."""
    return f"{service.settings.topic_prefix}{service.name}.{topics.EXCLUSION_LIFECYCLE}"


def register(service: Service) -> Any:
    """The consumers, subscribed; returns the lifecycle subscriber (the lookup's feed, watched)."""

    feed = service.subscriber(topics.EXCLUSION_LIFECYCLE, title="gateway.exclusion_lifecycle", group_id=lifecycle_group(service))

    @feed
    async def on_exclusion_lifecycle(event: LifecycleEvent) -> None:
        """Put the exclusion, as it now stands, under each of the person's identifiers."""
        summary = Summary.from_snapshot(event.payload, event.subject)
        await MongoLookup(service.db).record(event.payload.identifiers, summary)

    @service.subscriber(topics.DECISIONS, title="gateway.decisions")
    async def on_decision_made(decision: DecisionMade) -> None:
        """Keep the decision under its operator, who alone may read it."""
        await MongoDecisions(service.db).record(decision)

    return feed
