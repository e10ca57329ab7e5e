"""Blocking's consumers: account events in batches, one decision each; lifecycle events keep the view
current and push enforcement when an exclusion starts or ends.

Account events come in on each operator's own topic (``operator.{operator_id}.account_events``, read
by pattern: an operator added later is read within ``kafka_metadata_max_age_ms``), and the topic,
which only that operator may write to, says whose event it is. An event whose ``operator_id`` names
another operator is decided for the topic's operator: the answer goes back only to the operator that
sent it (on its own decisions topic), so nothing is said to, or recorded for, the operator it named;
and the sender, which waits for an answer, gets one rather than silence.

Both consume whole batches of records and parse each record themselves, so one bad record is
dead-lettered on its own while the rest of its batch is still handled.
"""

import asyncio
from collections.abc import Sequence
from typing import Any, Literal

from aiokafka import ConsumerRecord
from faststream.message import StreamMessage
from pydantic import Field, ValidationError

from services.blocking import domain
from services.blocking.accounts import SeenAccounts
from services.blocking.follower import ViewFollower
from services.blocking.identities import AccountIdentifiers
from services.blocking.publisher import BatchPublisher
from services.blocking.repository import MongoExclusionProjection
from shared import topics
from shared.broker import describe
from shared.events import AccountEventKind, AccountEventOccurred, Contract, Event
from shared.identity import Hasher, IdentityError
from shared.service import Service

# An account-events batch: up to this many records; an empty poll waits this long before the next.
MAX_BATCH = 1000
BATCH_WAIT_MS = 2
# How long the broker may hold a fetch with no data: short, so a lone event is not kept waiting.
FETCH_MAX_WAIT_MS = 5
# Lifecycle events are few and nobody waits on them by the millisecond: an empty poll waits longer,
# so an instance does not wake 250 times a second for them while it is busy deciding.
LIFECYCLE_WAIT_MS = 100


# AccountEventOccurred.model_validate_json without its Python wrapper: called for every account event.
parse_account_event = AccountEventOccurred.__pydantic_validator__.validate_json


class _References(Contract):
    operator_event_id: str = Field(min_length=1, max_length=200)
    account_id: str = Field(min_length=1, max_length=200)
    kind: AccountEventKind


class AccountEventReferences(Event):
    """What a decision repeats of an account event, read without the rest: an event whose identity
    (or game, or channel) breaks the contract is still answered, UNAVAILABLE, rather than left unanswered."""

    type: Literal["account.event"] = "account.event"
    operator_id: str | None = Field(default=None, max_length=100)  # the topic says whose it is
    payload: _References


def unchecked_decision(value: bytes | None, error: ValidationError, operator_id: str, now) -> domain.Decision:
    """The UNAVAILABLE decision for an account event of ``operator_id`` that breaks the contract; raises
    ``error`` when not even its references can be read (then there is nothing to answer: it is dead-lettered)."""
    try:
        references = AccountEventReferences.model_validate_json(value or b"")
    except ValidationError:
        raise error from None
    references = references.model_copy(update={"operator_id": operator_id})
    if references.payload.kind is AccountEventKind.WITHDRAWAL:  # never refused, whoever asks
        return domain.allowed(references, now)
    return domain.unchecked(references, now, f"event_invalid: {describe(error).removeprefix('ValidationError: ')}")


NAMES_NOBODY = f"{domain.IDENTITY_UNUSABLE}: no personal identifier (national id, name with date of birth and postcode, e-mail or mobile)"


def account_events_group(settings) -> str:
    """The consumer group the instances share for every operator's account events."""
    return f"{settings.topic_prefix}blocking.{topics.ACCOUNT_EVENTS}"


def lifecycle_group(settings) -> str:
    """The consumer group the instances share for the lifecycle topic (its offsets mark what the projection holds)."""
    return f"{settings.topic_prefix}blocking.{topics.EXCLUSION_LIFECYCLE}"


async def records_of(message: StreamMessage[Any]) -> Any:
    """The batch's Kafka records as they are: each is parsed (and refused) on its own."""
    return list(message.raw_message)


def register(
    service: Service,
    hasher: Hasher,
    view: domain.ExclusionView,
    accounts: SeenAccounts,
    publisher: BatchPublisher,
    follower: ViewFollower,
    *,
    listener=None,
) -> None:
    dead_letters = service.dead_letters
    account_identifiers = AccountIdentifiers(hasher)
    batches: dict[str, Any] = {"batch": True, "max_records": MAX_BATCH, "batch_timeout_ms": BATCH_WAIT_MS, "decoder": records_of}

    settings = service.settings
    senders = topics.OperatorTopics(settings.topic_prefix, topics.ACCOUNT_EVENTS)

    @service.subscriber(
        pattern=topics.operator_pattern(settings.topic_prefix, topics.ACCOUNT_EVENTS),
        group_id=account_events_group(settings),
        batch=True,
        max_records=MAX_BATCH,
        batch_timeout_ms=BATCH_WAIT_MS,
        decoder=records_of,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        title="blocking.account_events",
        listener=listener,
    )
    async def on_account_events(records: Sequence[ConsumerRecord]) -> None:
        """Decide ALLOW, BLOCK or UNAVAILABLE for each account event of a batch; publish the decisions together.

        Each event is the operator's whose topic it came on (a batch mixes operators' topics), and
        its decision goes to that operator's decisions topic alone. UNAVAILABLE (operators treat it
        as a block) when the event cannot be checked: the instance's view may be incomplete and holds
        no exclusion refusing it, or the identity names nobody.
        """
        now = service.clock()
        unavailable = follower.unavailable_reason()  # once per batch: the view's state when deciding it
        decisions: list[domain.Decision] = []
        parked = []
        for record in records:
            try:
                operator_id = senders.operator_of(record.topic)
                try:
                    event = parse_account_event(record.value)
                except ValidationError as error:
                    decisions.append(unchecked_decision(record.value, error, operator_id, now))
                    continue
                if event.operator_id != operator_id:  # a claim the topic does not bear out
                    service.log.warning("account_event_operator_mismatch", topic=record.topic, offset=record.offset)
                    event = event.model_copy(update={"operator_id": operator_id})
                payload = event.payload
                try:
                    identifiers, new = account_identifiers.of(
                        event.operator_id, payload.account_id, payload.identity
                    )  # raw identity ends here
                except IdentityError as error:
                    if payload.kind is AccountEventKind.WITHDRAWAL:  # never refused, whoever asks
                        decisions.append(domain.allowed(event, now))
                    else:
                        decisions.append(domain.unchecked(event, now, f"{domain.IDENTITY_UNUSABLE}: {error}"))
                    continue
                if new:  # an account seen before with the same identity was noted then
                    accounts.note(event.operator_id, payload.account_id, identifiers.values())
                refused = domain.refusal(event, identifiers, view, now)  # a device alone still refuses a registration
                if refused is not None:
                    decisions.append(refused)
                elif payload.kind is AccountEventKind.WITHDRAWAL:  # never refused: nothing to be unsure of
                    decisions.append(domain.allowed(event, now))
                elif not domain.names_a_person(identifiers):
                    decisions.append(domain.unchecked(event, now, NAMES_NOBODY))
                elif unavailable is not None:
                    decisions.append(domain.unchecked(event, now, unavailable))
                else:
                    decisions.append(domain.allowed(event, now))
            except Exception as error:  # noqa: BLE001 — a bad record is parked, the batch goes on
                parked.append((record, error))
        # The decisions go out while the newly seen accounts are stored, both before the commit: a
        # failed write fails the batch, which is retried (same decision ids), so no seen account is lost.
        await asyncio.gather(publisher.publish_decisions(decisions), accounts.flush())
        for record, failure in parked:
            await dead_letters.park_record(record, failure)

    @service.subscriber(
        topics.EXCLUSION_LIFECYCLE,
        **{**batches, "batch_timeout_ms": LIFECYCLE_WAIT_MS},
        group_id=lifecycle_group(service.settings),
        title="blocking.exclusion_lifecycle",
    )
    async def on_exclusion_lifecycle(records: Sequence[ConsumerRecord]) -> None:
        """Record each exclusion's newest snapshot, enforce its start and its end, and bring the view up to it.

        The instances share this group, so each handles some partitions; every instance's view also
        follows all of them through its ``ViewFollower``.
        """
        events, refused = [], []
        for record in records:
            try:
                events.append(domain.SnapshotEvent.model_validate_json(record.value))
            except Exception as error:  # noqa: BLE001
                refused.append((record, error))
        # Each exclusion's identifiers in their newest form, as the view holds them; a key this
        # instance does not hold raises here, outside the dead-lettering above: the batch is retried.
        events = [_in_newest_form(event, hasher) for event in events]
        projection = MongoExclusionProjection(service.db)
        known = await projection.known(e.payload.exclusion_id for e in events)
        # The projection is saved before the view changes: a failed save fails the batch (retried,
        # offsets held), and the next start loads the view from a projection that lost nothing.
        await projection.save_many(domain.newest(known, (e.payload for e in events)))
        now, commands = service.clock(), []
        for event in events:
            snapshot = event.payload
            _, action = domain.follow(view, known, event.type, snapshot, now)
            if action:
                commands += domain.enforcements(event, snapshot, action, await accounts.accounts_for(snapshot.identifiers))
        await publisher.publish(commands)
        for record, failure in refused:
            await dead_letters.park_record(record, failure)
        if events:
            service.log.info("view_followed", events=len(events), enforcements=len(commands), in_view=len(view))


def _in_newest_form(event: domain.SnapshotEvent, hasher: Hasher) -> domain.SnapshotEvent:
    """The event with its exclusion's identifier hashes in the newest form of the chain (the same
    event when they are): what was hashed before a key rotation matches what is hashed after it."""
    snapshot = event.payload
    identifiers = hasher.canonical_all(snapshot.identifiers)
    if identifiers == tuple(snapshot.identifiers):
        return event
    return event.model_copy(update={"payload": snapshot.model_copy(update={"identifiers": list(identifiers)})})
