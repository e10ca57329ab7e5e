"""The gateway's consumers: keep its lookup, its views and each operator's decisions current."""

from typing import Any

from shared import topics
from shared.events import DecisionMade, ExclusionLiftRefused, LifecycleEvent, VerificationEvent, VerificationProgressed, utcnow
from shared.service import Service

from services.gateway.domain import Summary
from services.gateway.repository import (
    MongoCommandEffects,
    MongoDecisions,
    MongoLookup,
    MongoSubmissionAnswers,
    MongoVerificationViews,
    MongoViews,
)
from services.gateway.views import answer_of, verification_view_of, view_of


def lifecycle_group(service: Service) -> str:
    """The consumer group that feeds the lookup (every gateway replica's share of it)."""
    return f"{service.settings.topic_prefix}{service.name}.{topics.EXCLUSION_LIFECYCLE}"


def register(service: Service) -> Any:
    """The consumers, subscribed; returns the lifecycle subscriber (the lookup's feed, watched)."""

    feed = service.subscriber(topics.EXCLUSION_LIFECYCLE, title="gateway.exclusion_lifecycle", group_id=lifecycle_group(service))

    @feed
    async def on_exclusion_lifecycle(event: LifecycleEvent) -> None:
        """Put the exclusion, as it now stands, under each of the person's identifiers and in its view;
        then note the command that changed it (last: a write's answer waits for that, and finds the rest)."""
        snapshot = event.payload
        await MongoLookup(service.db).record(snapshot.identifiers, Summary.from_snapshot(snapshot, event.subject))
        refused = isinstance(event, ExclusionLiftRefused)
        refusal = {"request_id": str(event.causation_id), "reason": snapshot.reason, "at": event.occurred_at.isoformat()} if refused else None
        await MongoViews(service.db).record(view_of(snapshot, event.subject, refusal=refusal))
        if event.causation_id is not None:
            await MongoCommandEffects(service.db).record(
                event.causation_id, str(snapshot.exclusion_id), snapshot.reason if refused else None, utcnow()
            )

    @service.subscriber(topics.VERIFICATION_EVENTS, title="gateway.verification_events")
    async def on_verification_event(event: VerificationEvent) -> None:
        """Keep where each verification (of an exclusion request, or of a lift) stands, then the answer to the submission that moved it."""
        if not isinstance(event, VerificationProgressed):
            return
        progress = event.payload
        if progress.verification is not None:
            view = verification_view_of(progress.exclusion_id, progress.verification, lift_id=progress.lift_id)
            await MongoVerificationViews(service.db).record(view)
        if progress.answer is not None:
            await MongoSubmissionAnswers(service.db).record(answer_of(progress.exclusion_id, progress.answer), utcnow())

    @service.subscriber(topics.DECISIONS, title="gateway.decisions")
    async def on_decision_made(decision: DecisionMade) -> None:
        """Keep the decision under its operator, who alone may read it."""
        await MongoDecisions(service.db).record(decision)

    return feed
