"""Blocking's rules: whether an account event is refused, and what an exclusion's start or end enforces.

No I/O and no clock reads: the caller passes ``now``.

What each scope refuses (a withdrawal is never refused: a person may always take their money out):

| event                               | GAMES, all games | GAMES, some games   | ADS           | DM           |
|-------------------------------------|------------------|---------------------|---------------|--------------|
| bet                                 | BLOCK            | BLOCK if its game,  | allow         | allow        |
|                                     |                  | or if it names none |               |              |
| login, registration, deposit, bonus | BLOCK            | allow               | allow         | allow        |
| marketing                           | BLOCK            | BLOCK               | BLOCK if ADS  | BLOCK if DM  |
| withdrawal                          | allow            | allow               | allow         | allow        |

A bet that names no game is refused by any games exclusion, as a marketing send that names no
channel is by any exclusion: when the event does not say, the conservative reading holds.
Under a partial-games exclusion (e.g. SLOTS only) the person may still use the account for the
games they are not excluded from, so login, registration, deposit and bonus go ahead and only bets
on the excluded games are refused. Nobody excluded from any gambling is marketed to, on any channel.

An event that cannot be checked gets neither ALLOW nor BLOCK but UNAVAILABLE, with the reason
(operators treat it as a block): when the instance's view may be incomplete, and when the event's
identity carries no personal identifier (nothing it could match a person by). A withdrawal is
never unsure: no exclusion refuses it, so it is allowed whatever its identity says.

Identifiers: a match on a personal identifier (national id, name + date of birth + postcode,
e-mail, mobile) is the person. A device or payment-instrument fingerprint alone only says that
something the person used is in play: it refuses a new registration, flagged
``suspected_circumvention`` for review, and does not refuse events of an existing account (a shared
family computer must not lock everyone out).

The view follows each exclusion's newest snapshot: every lifecycle event carries the whole
exclusion, which is put in the view while its state excludes and taken out otherwise; a snapshot
with a lower ``version`` than the one already held arrived late and changes nothing. An exclusion
in the view refuses only from its start and until its end, whether or not the expiry has arrived.

Enforcement: when an exclusion that covers games starts to exclude, every operator account seen
with one of its personal identifiers gets ``end_sessions``; when it stops excluding (expired, lifted)
they get ``lift``, unless another exclusion in force still covers games for the same person.
"""

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel

from services.blocking.view import ActiveExclusion, ExclusionView
from shared.events import (
    AccountEventKind,
    AccountEventOccurred,
    DecisionMade,
    DecisionPayload,
    EnforcementCommanded,
    EnforcementPayload,
    Event,
    ExclusionSnapshot,
    ExclusionType,
    Game,
    Outcome,
    Scope,
    derived_id,
)
from shared.identity import PERSONAL_KINDS, IdentifierKind, kind_of

__all__ = [
    "ActiveExclusion",
    "ExclusionView",
    "Known",
    "allowed",
    "block_message",
    "blocks",
    "decide",
    "decision",
    "decision_fields",
    "enforcement_action",
    "enforcements",
    "follow",
    "follow_view",
    "names_a_person",
    "unchecked",
]

SOURCE = "blocking"
CODE = "Self-Excluded"
UNAVAILABLE_CODE = "Unavailable"
CIRCUMVENTION = "suspected_circumvention"
END_SESSIONS = "end_sessions"
LIFT = "lift"
PERSONAL_PREFIXES = tuple(f"{kind.value}:" for kind in PERSONAL_KINDS)
# A decision as its fields, in DecisionMade's layout (``decision_fields``): one is made per account event.
Decision = dict[str, Any]
# The events that start and end an exclusion; others only restate it (or change it, e.g. extended).
STARTS, ENDS = "exclusion.activated", frozenset({"exclusion.expired", "exclusion.lifted"})


def covers_all_games(scope: Scope) -> bool:
    return ExclusionType.GAMES in scope.types and (Game.ALL in scope.games or not scope.games)


def covers_game(scope: Scope, game: Game | None) -> bool:
    """Whether the scope excludes from this game: the games it names, or all of them when it names none or ``ALL``."""
    if ExclusionType.GAMES not in scope.types:
        return False
    return covers_all_games(scope) or (game is not None and game in scope.games)


def blocks(scope: Scope, event: AccountEventOccurred) -> bool:
    """Whether an exclusion with this scope refuses this kind of event (see the table above)."""
    kind = event.payload.kind
    if kind is AccountEventKind.WITHDRAWAL:
        return False
    if kind is AccountEventKind.MARKETING:
        if ExclusionType.GAMES in scope.types:
            return True
        channel = event.payload.channel
        return channel is None or ExclusionType(channel.value) in scope.types
    if kind is AccountEventKind.BET:
        game = event.payload.game
        return ExclusionType.GAMES in scope.types if game is None else covers_game(scope, game)
    return covers_all_games(scope)


def is_personal(identifier_hash: str) -> bool:
    return identifier_hash.startswith(PERSONAL_PREFIXES)


def decide(event: AccountEventOccurred, identifiers: dict[IdentifierKind, str], view: ExclusionView, now: datetime) -> DecisionMade:
    """One decision for one account event; its id derives from the event, so redelivery repeats it."""
    refused = refusal(event, identifiers, view, now)
    return DecisionMade.model_validate(refused if refused is not None else allowed(event, now))


def refusal(event: AccountEventOccurred, identifiers: dict[IdentifierKind, str], view: ExclusionView, now: datetime) -> Decision | None:
    """The BLOCK decision if an exclusion refuses this event, else None (ALLOW)."""
    candidates = view.matching(identifiers.values())
    if not candidates:
        return None
    refusing: list[tuple[ActiveExclusion, list[str]]] = []
    for exclusion_id, matched in candidates.items():
        exclusion = view.by_id[exclusion_id]
        if exclusion.in_force(now) and blocks(exclusion.scope, event):
            refusing.append((exclusion, matched))
    flags: list[str] = []
    if refusing and not any(is_personal(h) for _, hashes in refusing for h in hashes):
        if event.payload.kind is AccountEventKind.REGISTRATION:
            flags.append(CIRCUMVENTION)
        else:
            refusing = []  # a shared device or card alone does not refuse an existing account
    if not refusing:
        return None
    # The exclusion that lasts longest is the one to report; "until further notice" outlasts all.
    exclusion, _ = max(refusing, key=lambda pair: (pair[0].ends_at is None, pair[0].ends_at or now))
    ends_on = exclusion.ends_at.date() if exclusion.ends_at else None
    return decision_fields(
        event,
        now,
        Outcome.BLOCK,
        code=CODE,
        message=block_message(ends_on),
        ends_on=ends_on,
        scope=exclusion.scope,
        matched=sorted({kind_of(h).value for _, hashes in refusing for h in hashes}),
        flags=flags,
    )


UNAVAILABLE_MESSAGE = "Selfex could not check this event; treat it as a block"
IDENTITY_UNUSABLE = "identity_unusable"


def unchecked(event: Event, now: datetime, reason: str) -> Decision:
    """The UNAVAILABLE decision: the event could not be checked, for ``reason`` (never input values).

    ``event`` needs only the references a decision repeats (ids, operator, account, kind), so an
    event whose identity broke the contract can still be answered."""
    return decision_fields(event, now, Outcome.UNAVAILABLE, code=UNAVAILABLE_CODE, message=UNAVAILABLE_MESSAGE, reason=reason)


def allowed(event: Event, now: datetime) -> Decision:
    """The ALLOW decision (``event`` needs only the references a decision repeats, as for ``unchecked``)."""
    return decision_fields(event, now, Outcome.ALLOW)


def names_a_person(identifiers: dict[IdentifierKind, str]) -> bool:
    """Whether an account's identifiers include one that identifies a person (not only a device or card)."""
    return not PERSONAL_KINDS.isdisjoint(identifiers)


def block_message(ends_on: date | None) -> str:
    until = ends_on.isoformat() if ends_on else "further notice"
    return f"Your account is blocked as part of the responsible gambling programme until {until}"


def decision(event: Event, now: datetime, outcome: Outcome, **outcome_fields: Any) -> DecisionMade:
    """The decision on this event as the contract's model, validated (what ``DecisionMade.caused_by`` builds)."""
    return DecisionMade.model_validate(decision_fields(event, now, outcome, **outcome_fields))


def decision_fields(event: Event, now: datetime, outcome: Outcome, **outcome_fields: Any) -> Decision:
    """The decision on this event as its fields, in ``DecisionMade``'s layout with every default in place:
    its references to the event (already validated) then the outcome's own fields. One is made for
    every account event, so the model is not built: ``publisher.decision_json`` of these is the bytes
    of ``DecisionMade.model_validate(fields).model_dump_json()`` (tests/blocking/test_decisions.py)."""
    payload = event.payload
    return {
        **_ENVELOPE,
        "id": derived_id(event.id, DECISION_TYPE),
        "occurred_at": now,
        "source": SOURCE,
        "correlation_id": event.correlation_id or event.id,
        "causation_id": event.id,
        "operator_id": event.operator_id,
        "payload": {
            **_PAYLOAD,
            "account_event_id": event.id,
            "operator_event_id": payload.operator_event_id,
            "account_id": payload.account_id,
            "kind": payload.kind,
            "outcome": outcome,
            **outcome_fields,
        },
    }


def defaults(model: type[BaseModel]) -> dict[str, Any]:
    """A model's fields in its order, each at its default (None where it has none: the caller fills those)."""
    return {
        name: None if field.is_required() else field.get_default(call_default_factory=True) for name, field in model.model_fields.items()
    }


DECISION_TYPE = DecisionMade.model_fields["type"].default
# The layout is the contract's, read from its models: a field added there appears here at its default.
_ENVELOPE, _PAYLOAD = defaults(DecisionMade), defaults(DecisionPayload)


# --- the view follows the lifecycle ----------------------------------------------------------


class SnapshotEvent(Event):
    """Any lifecycle event: every one carries the exclusion's whole snapshot, which is all blocking needs."""

    type: str
    payload: ExclusionSnapshot


@dataclass(frozen=True, slots=True)
class Known:
    """What blocking last recorded of an exclusion: its version and whether it excluded."""

    version: int
    excluding: bool


def is_stale(known: Known | None, snapshot: ExclusionSnapshot) -> bool:
    """An older snapshot than the one recorded: delivered late, it must not undo a newer state."""
    return known is not None and snapshot.version < known.version


def enforcement_action(known: Known | None, event_type: str, snapshot: ExclusionSnapshot) -> str | None:
    """``end_sessions`` when the exclusion starts excluding, ``lift`` when it stops, else None.

    An activation or an end event always says so again, so a redelivered one re-emits the same
    (derived-id) commands; other events only when they change whether the exclusion excludes.
    """
    if ExclusionType.GAMES not in snapshot.scope.types or is_stale(known, snapshot):
        return None  # an ADS or DM exclusion has no sessions to end
    was = known is not None and known.excluding
    if snapshot.excludes():
        return END_SESSIONS if (event_type == STARTS or not was) else None
    return LIFT if (event_type in ENDS or was) else None


def still_excluded(view: ExclusionView, ended: ExclusionSnapshot, now: datetime) -> bool:
    """Whether another exclusion in force still covers games for the person whose exclusion ended."""
    personal = [h for h in ended.identifiers if is_personal(h)]
    return any(
        exclusion_id != ended.exclusion_id
        and view.by_id[exclusion_id].in_force(now)
        and ExclusionType.GAMES in view.by_id[exclusion_id].scope.types
        for exclusion_id in view.matching(personal)
    )


def enforcements(cause: Event, snapshot: ExclusionSnapshot, action: str, accounts: Iterable[tuple[str, str]]) -> list[EnforcementCommanded]:
    """One command per (operator, account); ids derive from the cause, so redelivery repeats them."""
    ends_on = snapshot.ends_at.date() if snapshot.ends_at else None
    message = block_message(ends_on) if action == END_SESSIONS else None
    return [
        EnforcementCommanded.caused_by(
            cause,
            source=SOURCE,
            name=f"enforcement.commanded/{action}/{operator_id}:{account_id}",
            subject=cause.subject,
            operator_id=operator_id,
            payload=EnforcementPayload(
                account_id=account_id,
                action=action,
                exclusion_id=snapshot.exclusion_id,
                ends_on=ends_on if action == END_SESSIONS else None,
                message=message,
            ),
        )
        for operator_id, account_id in sorted(set(accounts))
    ]


def newest(known: dict, snapshots: Iterable[ExclusionSnapshot]) -> list[ExclusionSnapshot]:
    """Each exclusion's newest snapshot among these, unless what is known of it is newer still."""
    found: dict[uuid.UUID, ExclusionSnapshot] = {}
    for snapshot in snapshots:
        held = found.get(snapshot.exclusion_id)
        if (held is None or snapshot.version >= held.version) and not is_stale(known.get(snapshot.exclusion_id), snapshot):
            found[snapshot.exclusion_id] = snapshot
    return list(found.values())


def follow(view: ExclusionView, known: dict, event_type: str, snapshot: ExclusionSnapshot, now: datetime) -> tuple[bool, str | None]:
    """Record this snapshot unless it is older than what is known of the exclusion, and bring the view up to it.

    ``known`` (exclusion id -> Known) is what the projection says; it decides the enforcement, so
    that it does not depend on how far another instance's view has got. It is updated in place.
    Returns whether the snapshot was newer than the known one, and the enforcement it calls for.
    """
    prior = known.get(snapshot.exclusion_id)
    if is_stale(prior, snapshot):
        return False, None
    action = enforcement_action(prior, event_type, snapshot)
    known[snapshot.exclusion_id] = Known(snapshot.version, snapshot.excludes())
    view.apply(snapshot)
    if action == LIFT and still_excluded(view, snapshot, now):
        action = None
    return True, action


def follow_view(view: ExclusionView, known: dict, snapshot: ExclusionSnapshot) -> bool:
    """Bring only the view up to this snapshot (an instance following the lifecycle for its own view).

    ``known`` holds what the projection says of exclusions the view has not met yet.
    """
    if view.version_of(snapshot.exclusion_id) is None and is_stale(known.get(snapshot.exclusion_id), snapshot):
        return False
    return view.apply(snapshot)
