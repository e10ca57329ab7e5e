"""The dispatcher against the real store with a fake register: a fault of ours is retried within the
budget and then failed with an alert, never retried for ever; a permanent refusal fails at once."""

import uuid
from datetime import UTC, datetime, timedelta

from services.forwarder.dispatcher import Dispatcher
from services.forwarder.domain import PermanentDeliveryError
from services.forwarder.repository import Deliveries
from shared.events import SCOPE_ALL, ExclusionSnapshot

NOW = datetime(2026, 12, 1, tzinfo=UTC)


class Register:
    name = "fake"

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def deliver(self, delivery, now) -> None:
        self.calls += 1
        raise self.error


def delivery() -> dict:
    snapshot = ExclusionSnapshot(exclusion_id=uuid.uuid4(), identifiers=[], scope=SCOPE_ALL, jurisdiction="SE", starts_at=NOW)
    return {
        "_id": str(uuid.uuid4()),
        "event_id": str(uuid.uuid4()),
        "change": "exclusion.activated",
        "exclusion_id": str(snapshot.exclusion_id),
        "snapshot": snapshot.model_dump(mode="json"),
        "created_at": NOW,
        "next_attempt_at": NOW,
    }


async def attempts_until_done(settings, database, error: Exception):
    alerts = []

    async def publish(event):
        alerts.append(event)

    deliveries = Deliveries(database)
    register = Register(error)
    dispatcher = Dispatcher(
        settings.model_copy(update={"forwarder_register": "B", "forwarder_attempts": 3}), deliveries, register, lambda: NOW, publish
    )
    record = delivery()
    assert await deliveries.add(record)
    for _ in range(5):
        [queued] = await deliveries.due(NOW + timedelta(hours=1), 10) or [None]
        if queued is None:
            break
        taken = await deliveries.take(queued, NOW, timedelta(seconds=30))
        await dispatcher.attempt(taken)
    return await deliveries.get(record["_id"]), register, alerts


async def test_a_fault_of_ours_is_retried_within_the_budget_then_failed_with_an_alert(settings, database):
    stored, register, [alert] = await attempts_until_done(settings, database, KeyError("snapshot"))
    assert register.calls == 3 and stored["status"] == "failed" and stored["attempts"] == 3
    assert alert.type == "forwarding.failed" and "KeyError in the forwarder" in alert.payload.reason
    assert await Deliveries(database).due(NOW + timedelta(days=1), 10) == []  # nothing left queued


async def test_a_refusal_that_can_never_succeed_fails_at_once(settings, database):
    stored, register, [alert] = await attempts_until_done(settings, database, PermanentDeliveryError("HTTP 400 (identity)"))
    assert register.calls == 1 and stored["status"] == "failed" and "HTTP 400" in alert.payload.reason
