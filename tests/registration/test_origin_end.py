"""An exclusion forwarded here ends when its origin says it ended there, only if that origin's operator
alone made it and nothing it forwarded arrived after the end: synchronous, literal data."""

from datetime import UTC, datetime, timedelta

from services.registration.domain import Exclusion, exclude
from services.registration.transitions import ended_at_origin, extend
from shared.events import (
    Channel,
    EndAtOrigin,
    ExclusionRequestedPayload,
    ExclusionState,
    OriginEndPayload,
    RequestExclusion,
)
from shared.identity import Identity
from shared.policies import shipped_policies

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
SE = shipped_policies()["SE"]
IDENTITY = Identity(email="harriet@example.com")


def request(origin: str | None = "A", operator_id: str = "op-a") -> RequestExclusion:
    return RequestExclusion(
        source="gateway",
        operator_id=operator_id,
        payload=ExclusionRequestedPayload(identity=IDENTITY, duration="+30d", jurisdiction="SE", channel=Channel.OPERATOR, origin=origin),
    )


def forwarded(origin: str | None = "A", operator_id: str = "op-a") -> Exclusion:
    return exclude(request(origin, operator_id), person_id="p-1", identifiers=["email:x"], now=NOW, policy=SE)


def joined(running: Exclusion, origin: str | None, operator_id: str, at: datetime) -> Exclusion:
    return extend(running, request(origin, operator_id), SE.terms("+60d"), SE, at, identifiers=["email:x"]).exclusion


def end(exclusion: Exclusion, *, origin: str = "A", operator_id: str = "op-a", ended_as: str = "lifted", ended_at: datetime | None = None):
    command = EndAtOrigin(
        source="gateway",
        operator_id=operator_id,
        payload=OriginEndPayload(exclusion_id=exclusion.id, origin=origin, ended_as=ended_as, ended_at=ended_at or NOW + timedelta(days=2)),
    )
    return command, ended_at_origin(exclusion, command, SE, NOW + timedelta(days=3))


def test_a_copy_that_the_origins_operator_alone_made_ends_the_way_it_ended_there_and_nobody_is_told():
    lifted_command, lifted = end(forwarded())
    _, cancelled = end(forwarded(), ended_as="cancelled")
    assert lifted is not None and cancelled is not None
    assert (lifted.event.type, lifted.exclusion.state, lifted.exclusion.ended_at) == (
        "exclusion.lifted",
        ExclusionState.LIFTED,
        NOW + timedelta(days=3),
    )
    assert (cancelled.event.type, cancelled.exclusion.state) == ("exclusion.cancelled", ExclusionState.CANCELLED)
    assert lifted.event.causation_id == lifted_command.id and str(lifted_command.id) in lifted.exclusion.causes
    assert lifted.event.payload.origin == "A" and lifted.notifications == ()  # origin kept: B never forwards it on
    assert end(lifted.exclusion)[1] is None  # ended already: nothing again


def test_an_extension_the_origin_forwarded_before_the_end_ends_with_it():
    _, ended = end(joined(forwarded(), "A", "op-a", NOW + timedelta(days=1)))
    assert ended is not None and ended.exclusion.state is ExclusionState.LIFTED


def test_one_made_here_from_another_origin_or_by_another_operator_is_kept_and_the_refusal_says_why():
    for exclusion, origin, operator_id in (
        (forwarded(origin=None), "A", "op-a"),  # made here
        (forwarded(origin="C", operator_id="op-c"), "A", "op-a"),  # from another origin
        (forwarded(), "A", "op-other"),  # the origin's name, another operator's key
    ):
        _, kept = end(exclusion, origin=origin, operator_id=operator_id)
        assert kept is not None and kept.event.type == "exclusion.lift_refused", (exclusion.origin, operator_id)
        assert kept.exclusion.running and kept.exclusion.state is ExclusionState.ACTIVE
        assert kept.event.payload.reason.startswith("kept:") and kept.exclusion.refusal is not None


def test_a_request_made_here_that_joined_it_keeps_it():
    _, kept = end(joined(forwarded(), None, "op-b", NOW + timedelta(days=1)))
    assert kept is not None and kept.exclusion.running and "joined" in kept.event.payload.reason


def test_what_the_origin_forwarded_after_the_end_there_may_be_a_new_exclusion_and_keeps_it():
    late = joined(forwarded(), "A", "op-a", NOW + timedelta(days=2, minutes=1))  # arrived after the end at A
    _, kept = end(late, ended_at=NOW + timedelta(days=2))
    assert kept is not None and kept.exclusion.running and "after the end" in kept.event.payload.reason


def test_one_stored_before_sources_were_kept_is_never_ended_by_an_origin():
    legacy = forwarded().model_copy(update={"sources": None})
    _, kept = end(legacy)
    assert kept is not None and kept.exclusion.running
    assert joined(legacy, "A", "op-a", NOW).sources is None  # what joined before stays unknown
