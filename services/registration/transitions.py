"""Every change of an exclusion, and the one lifecycle event each emits. No I/O, no clock reads.

A transition returns the exclusion as it will be stored (version + 1, next timer recomputed) and
the event that announces it, with any notification it entails. The ids of those events derive from
their cause: the command, the verification outcome, or for a timer the exclusion, the transition's
name and the version it applies to.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.registration.domain import (
    NOTHING_SEALED,
    SOURCE,
    Exclusion,
    Refusal,
    Sealed,
    Source,
    imported_source,
    needs_verification,
    next_transition_at,
    origin_end_refusal,
    reminder_at,
    taking_effect,
    third_party_record,
    verification_deadline,
)
from shared.events import (
    CancelExclusion,
    EndAtOrigin,
    Event,
    ExclusionActivated,
    ExclusionCancelled,
    ExclusionCoolingOffStarted,
    ExclusionEndingSoon,
    ExclusionExpired,
    ExclusionExtended,
    ExclusionLifted,
    ExclusionLiftRefused,
    ExclusionLiftRequested,
    ExclusionRequested,
    ExclusionState,
    ImportExclusion,
    NotificationRequested,
    NotificationRequestedPayload,
    RequestExclusion,
    VerificationFailed,
    derived_id,
)
from shared.policies import Policy, Terms

NOT_SHORTENED = "the running exclusion already lasts at least as long: an exclusion is never shortened"


@dataclass(frozen=True)
class Transition:
    """The exclusion after a change, the lifecycle event that announces it, and who is to be told."""

    exclusion: Exclusion
    event: Event
    notifications: tuple[NotificationRequested, ...] = ()

    @property
    def events(self) -> tuple[Event, ...]:
        return (self.event, *self.notifications)


# --- requests -----------------------------------------------------------------------------------


def registered(exclusion: Exclusion, request: RequestExclusion, now: datetime) -> Transition:
    """A new exclusion: waiting for verification, cooling off, or in force."""
    event_type = {
        ExclusionState.PENDING_VERIFICATION: ExclusionRequested,
        ExclusionState.COOLING_OFF: ExclusionCoolingOffStarted,
        ExclusionState.ACTIVE: ExclusionActivated,
    }[exclusion.state]
    event = _caused(event_type, exclusion, request, now)
    notices = _started(exclusion, event)
    if request.payload.third_party is not None:
        notices += (_notice(event, exclusion, "third_party_exclusion", "person"),)
    return Transition(exclusion, event, notices)


def extend(
    running: Exclusion,
    request: RequestExclusion,
    terms: Terms,
    policy: Policy,
    now: datetime,
    *,
    identifiers: list[str],
    sealed: Sealed = NOTHING_SEALED,
) -> Transition:
    """A new request for a person whose exclusion still runs: the later end wins, the scopes join.

    Nothing is ever shortened. A pending lift is withdrawn. An attested request completes a request
    still waiting for verification, and the panic button ends a cooling-off at once.
    """
    before = running
    panic = running.panic or terms.panic
    if running.state is ExclusionState.PENDING_VERIFICATION and not needs_verification(request.payload):
        running = _promote(running, *taking_effect(policy, panic, now))
    elif running.state is ExclusionState.COOLING_OFF and terms.panic:
        running = _promote(running, ExclusionState.ACTIVE, now)
    elif running.state is ExclusionState.LIFT_REQUESTED:
        running = running.model_copy(update={"state": ExclusionState.ACTIVE, "lift_effective_at": None})
    start = max(now, running.starts_at)
    ends_at = _later_end(running.ends_at, terms.ends_at(start))
    minimum_until = _later_minimum(running.minimum_until, terms.minimum_until(start))
    lengthened = (ends_at, minimum_until) != (running.ends_at, running.minimum_until)
    extended = _advance(
        running,
        policy,
        identifiers=sorted(set(running.identifiers) | set(identifiers)),
        scope=running.scope.union(request.payload.scope),
        ends_at=ends_at,
        minimum_until=minimum_until,
        duration=request.payload.duration if lengthened else running.duration,
        reminded=running.reminded and ends_at == running.ends_at,
        panic=panic,
        support_persons=list(sealed.support_persons) or running.support_persons,
        forwarding=running.forwarding or sealed.forwarding,  # the identity it was first registered with (an extension may name less)
        third_party=running.third_party or third_party_record(request, sealed),
        request_ids=[*running.request_ids, str(request.id)],
        causes=[*running.causes, str(request.id)],
        sources=running.with_source(Source(origin=request.payload.origin, operator_id=request.operator_id, at=now)),
    )
    if before.state in (ExclusionState.PENDING_VERIFICATION, ExclusionState.COOLING_OFF) and extended.state is not before.state:
        event_type = ExclusionActivated if extended.state is ExclusionState.ACTIVE else ExclusionCoolingOffStarted
        event = _caused(event_type, extended, request, now)
        notices = _started(extended, event)
    else:
        event = _caused(ExclusionExtended, extended, request, now, reason=None if lengthened else NOT_SHORTENED)
        notices = ()
    if request.payload.third_party is not None:
        notices += (_notice(event, extended, "third_party_exclusion", "person"),)
    return Transition(extended, event, notices)


def imported_registered(exclusion: Exclusion, command: ImportExclusion, now: datetime) -> Transition:
    """A register's exclusion, new here: in force at once. Nobody is told: the register told the person."""
    return Transition(exclusion, _caused(ExclusionActivated, exclusion, command, now, operator_id=None))


def imported_extended(running: Exclusion, command: ImportExclusion, policy: Policy, now: datetime, *, identifiers: list[str]) -> Transition:
    """A register's exclusion (or a new version of it) for a person whose exclusion runs here: the later
    end wins, the scopes join, a pending lift is withdrawn; a pending request takes effect at once."""
    payload = command.payload
    if running.state in (ExclusionState.PENDING_VERIFICATION, ExclusionState.COOLING_OFF):
        running = _promote(running, ExclusionState.ACTIVE, now)
    elif running.state is ExclusionState.LIFT_REQUESTED:
        running = running.model_copy(update={"state": ExclusionState.ACTIVE, "lift_effective_at": None})
    ends_at = _later_end(running.ends_at, payload.ends_at)
    lengthened = ends_at != running.ends_at
    extended = _advance(
        running,
        policy,
        identifiers=sorted(set(running.identifiers) | set(identifiers)),
        scope=running.scope.union(payload.scope),
        ends_at=ends_at,
        reminded=running.reminded and ends_at == running.ends_at,
        request_ids=[*running.request_ids, str(command.id)],
        causes=[*running.causes, str(command.id)],
        imports=[*running.imports, str(command.id)],
        origin=running.origin or payload.origin,
        sources=running.with_source(imported_source(command, now)),
    )
    return Transition(
        extended, _caused(ExclusionExtended, extended, command, now, reason=None if lengthened else NOT_SHORTENED, operator_id=None)
    )


def imported_ended(exclusion: Exclusion, command: ImportExclusion, policy: Policy, now: datetime) -> Transition | None:
    """The register's exclusion ended there (lifted, expired, cancelled): one made here only by imports
    from that register ends here too, the same way; one that a request made here joined runs on."""
    if not exclusion.running or not exclusion.only_imported:
        return None
    ended_as = command.payload.ended_as or "expired"
    state, event_type = {
        "lifted": (ExclusionState.LIFTED, ExclusionLifted),
        "cancelled": (ExclusionState.CANCELLED, ExclusionCancelled),
    }.get(ended_as, (ExclusionState.EXPIRED, ExclusionExpired))
    recorded = {
        "request_ids": [*exclusion.request_ids, str(command.id)],
        "causes": [*exclusion.causes, str(command.id)],
        "imports": [*exclusion.imports, str(command.id)],
    }
    ended = _advance(
        exclusion, policy, state=state, ended_at=now, lift_effective_at=None, reason=f"ended at {command.payload.from_register}", **recorded
    )
    return Transition(ended, _caused(event_type, ended, command, now, operator_id=None))


def ended_at_origin(exclusion: Exclusion, command: EndAtOrigin, policy: Policy, now: datetime) -> Transition | None:
    """The deployment that forwarded the exclusion here says it ended there: this copy ends the same way
    (lifted or cancelled) if that deployment's operator alone made it; else it runs on, and the refusal
    says why. Nobody is told: the origin told the person. None if it has ended already."""
    if not exclusion.running:
        return None
    payload = command.payload
    recorded = {"request_ids": [*exclusion.request_ids, str(command.id)], "causes": [*exclusion.causes, str(command.id)]}
    reason = origin_end_refusal(exclusion, payload.origin, command.operator_id, payload.ended_at)
    if reason is not None:
        refused = _advance(exclusion, policy, refusal=Refusal(request_id=str(command.id), reason=reason, at=now), **recorded)
        return Transition(refused, _caused(ExclusionLiftRefused, refused, command, now, reason=reason))
    state, event_type = (
        (ExclusionState.LIFTED, ExclusionLifted) if payload.ended_as == "lifted" else (ExclusionState.CANCELLED, ExclusionCancelled)
    )
    ended = _advance(
        exclusion, policy, state=state, ended_at=now, lift_effective_at=None, reason=f"{payload.ended_as} at {payload.origin}", **recorded
    )
    return Transition(ended, _caused(event_type, ended, command, now, reason=f"{payload.ended_as} at {payload.origin}"))


def request_lift(exclusion: Exclusion, request: Event, policy: Policy, now: datetime) -> Transition:
    """The person asked to end it, and proved it (``request``: the verified lift): refused, lifted at
    once, or lifted after the return cooling-off."""
    reason = lift_refusal(exclusion, policy, now)
    if reason is not None:
        refused = _advance(
            exclusion,
            policy,
            refusal=Refusal(request_id=str(request.id), reason=reason, at=now),
            request_ids=[*exclusion.request_ids, str(request.id)],
            causes=[*exclusion.causes, str(request.id)],
        )
        return Transition(refused, _caused(ExclusionLiftRefused, refused, request, now, reason=reason))
    effective = now + policy.return_cooling_off
    recorded = {"request_ids": [*exclusion.request_ids, str(request.id)], "causes": [*exclusion.causes, str(request.id)]}
    if effective <= now:
        lifted = _advance(exclusion, policy, state=ExclusionState.LIFTED, lift_effective_at=now, ended_at=now, **recorded)
        event = _caused(ExclusionLifted, lifted, request, now)
        return Transition(lifted, event, _ended(lifted, event))
    pending = _advance(exclusion, policy, state=ExclusionState.LIFT_REQUESTED, lift_effective_at=effective, **recorded)
    return Transition(pending, _caused(ExclusionLiftRequested, pending, request, now))


def lift_refusal(exclusion: Exclusion, policy: Policy, now: datetime) -> str | None:
    """Why the policy does not let this exclusion be lifted now; None if it does."""
    if not exclusion.running:
        return f"the exclusion has already ended ({exclusion.state.value})"
    if exclusion.state is ExclusionState.LIFT_REQUESTED:
        return f"a lift is already requested; it takes effect at {_iso(exclusion.lift_effective_at)}"
    if exclusion.state is not ExclusionState.ACTIVE:
        return f"the exclusion is not in force yet ({exclusion.state.value}); there is nothing to lift"
    if exclusion.ends_at is not None and not policy.lift_allowed_early():
        return f"the exclusion ends by itself at {_iso(exclusion.ends_at)}; {policy.jurisdiction} does not allow lifting it early"
    if exclusion.minimum_until is not None and now < exclusion.minimum_until:
        return f"the minimum period runs until {_iso(exclusion.minimum_until)}; no lift before then"
    if exclusion.ends_at is not None and now + policy.return_cooling_off >= exclusion.ends_at:
        return f"the exclusion ends by itself at {_iso(exclusion.ends_at)}, before a lift could take effect"
    return None


def cancel(exclusion: Exclusion, command: CancelExclusion, policy: Policy, now: datetime) -> Transition | None:
    """Register staff cancel an exclusion made in error: it ends now, cancelled, with their reason;
    the person and any support persons are told. None if it has ended already."""
    if not exclusion.running:
        return None
    reason = command.payload.reason
    cancelled = _advance(
        exclusion,
        policy,
        state=ExclusionState.CANCELLED,
        ended_at=now,
        lift_effective_at=None,
        reason=reason,
        request_ids=[*exclusion.request_ids, str(command.id)],
        causes=[*exclusion.causes, str(command.id)],
    )
    event = _caused(ExclusionCancelled, cancelled, command, now, reason=reason)
    return Transition(cancelled, event, (_notice(event, cancelled, "exclusion_cancelled", "person"), *_ended(cancelled, event)))


# --- verification outcomes ----------------------------------------------------------------------


def verify(exclusion: Exclusion, verified: Event, policy: Policy, now: datetime) -> Transition | None:
    """The person proved the request is theirs: cooling-off or in force. None if it no longer waits."""
    if exclusion.state is not ExclusionState.PENDING_VERIFICATION:
        return None
    promoted = _promote(exclusion, *taking_effect(policy, exclusion.panic, now))
    verified_exclusion = _advance(promoted, policy, causes=[*exclusion.causes, str(verified.id)])
    event_type = ExclusionActivated if verified_exclusion.state is ExclusionState.ACTIVE else ExclusionCoolingOffStarted
    event = _caused(event_type, verified_exclusion, verified, now, operator_id=exclusion.requested_by)
    return Transition(verified_exclusion, event, _started(verified_exclusion, event))


def fail(exclusion: Exclusion, failed: VerificationFailed, policy: Policy, now: datetime) -> Transition | None:
    """Verification failed: the request ends cancelled. None if it no longer waits."""
    if exclusion.state is not ExclusionState.PENDING_VERIFICATION:
        return None
    reason = f"verification failed: {failed.payload.reason or 'not verified'}"
    cancelled = _advance(
        exclusion, policy, state=ExclusionState.CANCELLED, ended_at=now, reason=reason, causes=[*exclusion.causes, str(failed.id)]
    )
    return Transition(cancelled, _caused(ExclusionCancelled, cancelled, failed, now, reason=reason, operator_id=exclusion.requested_by))


# --- timers -------------------------------------------------------------------------------------


def due(exclusion: Exclusion, policy: Policy, now: datetime) -> Transition | None:
    """The transition the clock has made due at ``now``, if any."""
    state = exclusion.state
    if state is ExclusionState.PENDING_VERIFICATION and now >= verification_deadline(exclusion, policy):
        reason = f"not verified within {policy.verification_timeout_hours} hours"
        cancelled = _advance(exclusion, policy, state=ExclusionState.CANCELLED, ended_at=now, reason=reason)
        return Transition(cancelled, _timed(ExclusionCancelled, exclusion, cancelled, "cancel", now, reason=reason))
    if state is ExclusionState.COOLING_OFF and now >= exclusion.starts_at:
        active = _advance(exclusion, policy, state=ExclusionState.ACTIVE)
        event = _timed(ExclusionActivated, exclusion, active, "activate", now)
        return Transition(active, event, _started(active, event))
    if state is ExclusionState.ACTIVE and exclusion.ends_at is not None and now >= exclusion.ends_at:
        expired = _advance(exclusion, policy, state=ExclusionState.EXPIRED, ended_at=exclusion.ends_at)
        event = _timed(ExclusionExpired, exclusion, expired, "expire", now)
        return Transition(expired, event, _ended(expired, event))
    remind_at = reminder_at(exclusion, policy) if state is ExclusionState.ACTIVE else None
    if remind_at is not None and now >= remind_at:
        reminded = _advance(exclusion, policy, reminded=True)
        return Transition(reminded, _timed(ExclusionEndingSoon, exclusion, reminded, "remind", now))
    if state is ExclusionState.LIFT_REQUESTED and exclusion.lift_effective_at and now >= exclusion.lift_effective_at:
        lifted = _advance(exclusion, policy, state=ExclusionState.LIFTED, ended_at=exclusion.lift_effective_at)
        event = _timed(ExclusionLifted, exclusion, lifted, "lift", now)
        return Transition(lifted, event, _ended(lifted, event))
    return None


# --- the pieces ---------------------------------------------------------------------------------


def _advance(exclusion: Exclusion, policy: Policy, **changes: Any) -> Exclusion:
    """The exclusion one version on, its next timer recomputed."""
    changed = exclusion.model_copy(update={**changes, "version": exclusion.version + 1})
    return changed.model_copy(update={"next_transition_at": next_transition_at(changed, policy)})


def _promote(exclusion: Exclusion, state: ExclusionState, start: datetime) -> Exclusion:
    """Verified (or attested) now: it starts at ``start``; a later start moves the end with it."""
    delta = start - exclusion.starts_at
    update: dict[str, Any] = {"state": state, "starts_at": start}
    if delta.total_seconds() > 0:
        update["ends_at"] = exclusion.ends_at + delta if exclusion.ends_at else None
        update["minimum_until"] = exclusion.minimum_until + delta if exclusion.minimum_until else None
    return exclusion.model_copy(update=update)


def _later_end(current: datetime | None, new: datetime | None) -> datetime | None:
    """No end (only a lift ends it) is later than any date."""
    return None if current is None or new is None else max(current, new)


def _later_minimum(current: datetime | None, new: datetime | None) -> datetime | None:
    """No minimum is no constraint: the other one holds."""
    candidates = [m for m in (current, new) if m is not None]
    return max(candidates) if candidates else None


def _caused(
    event_type: type[Event], exclusion: Exclusion, cause: Event, now: datetime, *, reason: str | None = None, **fields: Any
) -> Event:
    fields.setdefault("operator_id", cause.operator_id)
    return event_type.caused_by(
        cause, source=SOURCE, subject=exclusion.person_id, occurred_at=now, payload=exclusion.snapshot(reason), **fields
    )


def _timed(event_type: type[Event], before: Exclusion, after: Exclusion, name: str, now: datetime, *, reason: str | None = None) -> Event:
    """A timer's event: its id derives from the exclusion, the transition and the version it applies to."""
    return event_type(  # type: ignore[call-arg]  # every lifecycle event type has its ``type`` default
        id=derived_id(before.id, f"{name}@{before.version}"),
        source=SOURCE,
        occurred_at=now,
        correlation_id=before.request_id,
        subject=before.person_id,
        operator_id=before.requested_by,
        payload=after.snapshot(reason),
    )


def _started(exclusion: Exclusion, event: Event) -> tuple[NotificationRequested, ...]:
    if exclusion.state is not ExclusionState.ACTIVE or not exclusion.support_persons:
        return ()
    return (_notice(event, exclusion, "exclusion_started", "support_persons"),)


def _ended(exclusion: Exclusion, event: Event) -> tuple[NotificationRequested, ...]:
    if not exclusion.support_persons:
        return ()
    return (_notice(event, exclusion, "exclusion_ended", "support_persons"),)


def _notice(event: Event, exclusion: Exclusion, template: str, recipient: str) -> NotificationRequested:
    """Tell someone; the notification service finds the (sealed) contacts by subject and exclusion id."""
    params = {
        "exclusion_id": str(exclusion.id),
        "jurisdiction": exclusion.jurisdiction,
        "state": exclusion.state.value,
        "starts_at": _iso(exclusion.starts_at),
    }
    if exclusion.ends_at is not None:
        params["ends_at"] = _iso(exclusion.ends_at)
    # Support persons' contacts travel sealed (to ``support_person:{exclusion_id}``), never in clear.
    sealed_contacts = list(exclusion.support_persons) if recipient == "support_persons" else []
    return NotificationRequested.caused_by(
        event,
        source=SOURCE,
        name=f"notification.{template}.{recipient}",
        subject=exclusion.person_id,
        occurred_at=event.occurred_at,
        payload=NotificationRequestedPayload(
            template=template, recipient=recipient, locale=exclusion.locale, params=params, sealed_contacts=sealed_contacts
        ),
    )


def _iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment else "-"
