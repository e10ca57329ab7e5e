"""The gateway's consumers: keep its lookup, its views and each operator's decisions current."""

from collections.abc import Sequence
from typing import Any

from aiokafka import ConsumerRecord
from faststream.message import StreamMessage

from services.gateway.context import Arrivals
from services.gateway.domain import Summary
from services.gateway.repository import (
    MongoCommandEffects,
    MongoDecisions,
    MongoLookup,
    MongoSubmissionAnswers,
    MongoVerificationViews,
    MongoViews,
    together,
)
from services.gateway.views import answer_of, verification_view_of, view_of
from shared import topics
from shared.events import DecisionMade, ExclusionLiftRefused, LifecycleEvent, VerificationEvent, VerificationProgressed, utcnow
from shared.identity import Hasher
from shared.service import Service

# How long the broker may hold the lifecycle feed's fetch when it has nothing: a write's answer waits
# on this feed, and the embedded broker (Tansu) holds a fetch for the whole wait even when a record
# arrives meanwhile (aiokafka's default, 500 ms, cost up to a quarter of a second per event, measured).
LIFECYCLE_FETCH_MAX_WAIT_MS = 10
# Decisions: up to this many stored at once; an empty poll waits this long before the next.
DECISIONS_BATCH = 500
DECISIONS_WAIT_MS = 10

parse_decision = DecisionMade.model_validate_json


async def records_of(message: StreamMessage[Any]) -> Any:
    """The batch's Kafka records as they are: each is parsed (and refused) on its own."""
    return list(message.raw_message)


def lifecycle_group(service: Service) -> str:
    """The consumer group that feeds the lookup (every gateway replica's share of it)."""
    return f"{service.settings.topic_prefix}{service.name}.{topics.EXCLUSION_LIFECYCLE}"


def register(service: Service, hasher: Hasher, arrivals: Arrivals | None = None) -> Any:
    """The consumers, subscribed; returns the lifecycle subscriber (the lookup's feed, watched).
    ``arrivals``: told of each command's effect once written, so the write waiting on it answers at once."""

    feed = service.subscriber(
        topics.EXCLUSION_LIFECYCLE,
        title="gateway.exclusion_lifecycle",
        group_id=lifecycle_group(service),
        fetch_max_wait_ms=LIFECYCLE_FETCH_MAX_WAIT_MS,
    )

    @feed
    async def on_exclusion_lifecycle(event: LifecycleEvent) -> None:
        """Put the exclusion, as it now stands, under each of the person's identifiers and in its view;
        then note the command that changed it (last: a write's answer waits for that, and finds the rest)."""
        snapshot = event.payload
        # Kept under the newest form of each identifier hash (one made before a key rotation too);
        # a key this gateway does not hold raises, and the event is retried until it is given it.
        if (identifiers := hasher.canonical_all(snapshot.identifiers)) != tuple(snapshot.identifiers):
            snapshot = snapshot.model_copy(update={"identifiers": list(identifiers)})
        refused = isinstance(event, ExclusionLiftRefused)
        refusal = (
            {"request_id": str(event.causation_id), "reason": snapshot.reason, "at": event.occurred_at.isoformat()} if refused else None
        )
        await together(  # the lookup and the view at once; the effect only once both are written
            MongoLookup(service.db).record(snapshot.identifiers, Summary.from_snapshot(snapshot, event.subject)),
            MongoViews(service.db).record(view_of(snapshot, event.subject, refusal=refusal), made_by=event.operator_id, now=utcnow()),
        )
        if event.causation_id is not None:
            await MongoCommandEffects(service.db).record(
                event.causation_id, str(snapshot.exclusion_id), snapshot.reason if refused else None, utcnow()
            )
            if arrivals is not None:
                arrivals.noted(event.causation_id)

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

    settings = service.settings
    recipients = topics.OperatorTopics(settings.topic_prefix, topics.DECISIONS)

    dead_letters = service.dead_letters

    # Every operator's decisions topic, by pattern, in batches: blocking makes up to thousands a
    # second, and one insert per decision kept the gateway's loop and store seconds behind (measured).
    @service.subscriber(
        pattern=topics.operator_pattern(settings.topic_prefix, topics.DECISIONS),
        group_id=f"{settings.topic_prefix}{service.name}.operator.{topics.DECISIONS}",
        batch=True,
        max_records=DECISIONS_BATCH,
        batch_timeout_ms=DECISIONS_WAIT_MS,
        decoder=records_of,
        title="gateway.decisions",
    )
    async def on_decisions_made(records: Sequence[ConsumerRecord]) -> None:
        """Keep each decision under the operator whose decisions topic it came on, who alone may read
        it; a record that is not such a decision is parked on its own, the rest stored together."""
        decisions, parked = [], []
        for record in records:
            try:
                decision = parse_decision(record.value or b"")
                if decision.operator_id != recipients.operator_of(record.topic):  # never shown to the operator it names
                    raise ValueError("a decision on one operator's topic names another operator")
                decisions.append(decision)
            except Exception as error:  # noqa: BLE001 — a bad record is parked, the batch goes on
                parked.append((record, error))
        await MongoDecisions(service.db).record_many(decisions)
        for record, failure in parked:
            await dead_letters.park_record(record, failure)

    return feed
