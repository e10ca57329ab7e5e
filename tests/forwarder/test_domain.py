"""What the forwarder forwards and how it reads time: synchronous, literal data."""

import uuid
from datetime import UTC, datetime, timedelta

from services.forwarder.domain import Backoff, chipout_duration, delivery_id, ended_as, forwarded, person_key
from shared.events import (
    SCOPE_ALL,
    ExclusionActivated,
    ExclusionCancelled,
    ExclusionEndingSoon,
    ExclusionExtended,
    ExclusionLifted,
    ExclusionSnapshot,
    ExclusionState,
)

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def snapshot(**fields) -> ExclusionSnapshot:
    values = dict(
        exclusion_id=uuid.uuid4(),
        identifiers=["email:" + "a" * 64],
        scope=SCOPE_ALL,
        jurisdiction="SE",
        starts_at=NOW,
        ends_at=NOW + timedelta(days=30),
        duration="+30d",
    )
    values.update(fields)
    return ExclusionSnapshot(**values)


def test_an_exclusion_made_here_is_forwarded_when_it_starts_or_lengthens():
    assert forwarded(ExclusionActivated(payload=snapshot()), "native")
    assert forwarded(ExclusionExtended(payload=snapshot()), "chipout")
    assert not forwarded(ExclusionEndingSoon(payload=snapshot()), "native")


def test_one_that_came_from_elsewhere_or_lengthened_nothing_is_never_forwarded():
    assert not forwarded(ExclusionActivated(payload=snapshot(origin="B")), "native")
    assert not forwarded(ExclusionActivated(payload=snapshot(origin="B")), "kafka")
    assert not forwarded(ExclusionExtended(payload=snapshot(reason="never shortened")), "native")


def test_a_lift_or_cancellation_reaches_a_registers_topic_and_a_selfex_register_but_not_chipout_which_has_no_call_for_it():
    lifted = ExclusionLifted(payload=snapshot(state=ExclusionState.LIFTED, ended_at=NOW + timedelta(days=9)))
    cancelled = ExclusionCancelled(payload=snapshot(state=ExclusionState.CANCELLED, reason="made in error", ended_at=NOW))
    assert forwarded(lifted, "kafka") and forwarded(lifted, "native") and not forwarded(lifted, "chipout")
    assert forwarded(cancelled, "kafka") and forwarded(cancelled, "native") and not forwarded(cancelled, "chipout")
    assert ended_as(lifted.type) == "lifted" and ended_as(cancelled.type) == "cancelled"


def test_the_end_of_one_made_elsewhere_or_cancelled_before_its_cooling_off_ended_is_not_sent_to_a_selfex_register():
    assert not forwarded(ExclusionLifted(payload=snapshot(state=ExclusionState.LIFTED, origin="B")), "native")
    never = snapshot(state=ExclusionState.CANCELLED, starts_at=NOW + timedelta(days=7), ended_at=NOW)  # still cooling off
    assert not forwarded(ExclusionCancelled(payload=never), "native")
    assert forwarded(ExclusionCancelled(payload=never), "kafka")  # the topic carries every change, as before


def test_chipout_gets_a_duration_it_knows():
    assert chipout_duration(snapshot(duration="+4m"), NOW) == "+4m"
    assert chipout_duration(snapshot(ends_at=None, duration=None), NOW) == "+12m"  # until further notice
    assert chipout_duration(snapshot(duration="+6m-uk", ends_at=NOW + timedelta(days=10, hours=1)), NOW) == "+11d"


def test_a_delivery_id_is_the_same_for_the_same_event_and_register():
    event = ExclusionActivated(payload=snapshot())
    assert delivery_id(event, "B") == delivery_id(event, "B") != delivery_id(event, "C")


def test_the_person_key_is_the_strongest_identifier_as_the_gateway_keys_commands():
    strongest = "national_id:" + "b" * 64
    assert person_key(["email:" + "a" * 64, strongest, "device:" + "c" * 64]) == strongest
    assert person_key(["device:" + "c" * 64]) is None


def test_backoff_grows_exponentially_with_jitter_and_is_capped():
    backoff = Backoff(1.0, 8.0)
    pauses = [backoff.pause(n) for n in range(1, 8)]
    assert all(0 <= p <= 8.0 for p in pauses)
    assert max(backoff.pause(6) for _ in range(50)) > 4.0  # the ceiling has grown to the cap
