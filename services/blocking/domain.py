"""Deciding: which exclusions an account event touches, and whether they block it. No I/O."""

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from shared.events import (
    AccountEventKind,
    AccountEventOccurred,
    DecisionMade,
    DecisionPayload,
    ExclusionType,
    Game,
    Outcome,
    Scope,
)
from shared.identity import PERSONAL_KINDS, IdentifierKind, kind_of

SOURCE = "blocking"
CODE = "Self-Excluded"
CIRCUMVENTION = "suspected_circumvention"


@dataclass(frozen=True)
class ActiveExclusion:
    """What blocking needs to know of an exclusion in force."""

    exclusion_id: uuid.UUID
    identifiers: frozenset[str]
    scope: Scope
    starts_at: datetime
    ends_at: datetime | None

    def in_force(self, at: datetime) -> bool:
        return self.starts_at <= at and (self.ends_at is None or at < self.ends_at)


@dataclass
class ExclusionView:
    """Active exclusions by identifier hash: a lookup costs a few dictionary reads, however many there are."""

    by_identifier: dict[str, set[uuid.UUID]] = field(default_factory=dict)
    by_id: dict[uuid.UUID, ActiveExclusion] = field(default_factory=dict)

    def add(self, exclusion: ActiveExclusion) -> None:
        self.discard(exclusion.exclusion_id)
        self.by_id[exclusion.exclusion_id] = exclusion
        for identifier in exclusion.identifiers:
            self.by_identifier.setdefault(identifier, set()).add(exclusion.exclusion_id)

    def discard(self, exclusion_id: uuid.UUID) -> None:
        old = self.by_id.pop(exclusion_id, None)
        if old is not None:
            for identifier in old.identifiers:
                ids = self.by_identifier.get(identifier)
                if ids is not None:
                    ids.discard(exclusion_id)
                    if not ids:
                        del self.by_identifier[identifier]

    def matching(self, identifiers: list[str]) -> dict[uuid.UUID, list[str]]:
        """Each exclusion any of the identifiers points at, with the identifiers that matched."""
        found: dict[uuid.UUID, list[str]] = {}
        for identifier in identifiers:
            for exclusion_id in self.by_identifier.get(identifier, ()):
                found.setdefault(exclusion_id, []).append(identifier)
        return found

    def __len__(self) -> int:
        return len(self.by_id)


def blocks(scope: Scope, event: AccountEventOccurred) -> bool:
    """Whether an exclusion with this scope refuses this kind of event."""
    kind = event.payload.kind
    games_all = ExclusionType.GAMES in scope.types and (Game.ALL in scope.games or not scope.games)
    if kind is AccountEventKind.WITHDRAWAL:
        return False  # a person may always take their money out
    if kind is AccountEventKind.MARKETING:
        channel = event.payload.channel
        if ExclusionType.GAMES in scope.types:
            return True  # nobody excluded from gambling is marketed to
        return channel is None or ExclusionType(channel.value) in scope.types
    if kind is AccountEventKind.BET:
        return scope.covers_game(event.payload.game)
    return games_all


def decide(event: AccountEventOccurred, identifiers: dict[IdentifierKind, str], view: ExclusionView, now: datetime) -> DecisionMade:
    """One decision for one account event; its id derives from the event, so redelivery repeats it."""
    at = now  # the operator asks whether it may go ahead now
    candidates = view.matching(list(identifiers.values()))
    blocking: list[tuple[ActiveExclusion, list[str]]] = [
        (view.by_id[exclusion_id], matched)
        for exclusion_id, matched in candidates.items()
        if view.by_id[exclusion_id].in_force(at) and blocks(view.by_id[exclusion_id].scope, event)
    ]
    flags: list[str] = []
    personal = [(e, m) for e, m in blocking if any(kind_of(h) in PERSONAL_KINDS for h in m)]
    if not personal and blocking:
        if event.payload.kind is AccountEventKind.REGISTRATION:
            flags.append(CIRCUMVENTION)
        else:
            blocking = []  # a shared device or card alone does not refuse an existing account
    if not blocking:
        return _decision(event, DecisionPayload(**_base(event), outcome=Outcome.ALLOW))
    # The exclusion that lasts longest is the one to report; "until further notice" outlasts all.
    exclusion, _ = max(blocking, key=lambda pair: (pair[0].ends_at is None, pair[0].ends_at or at))
    matched = sorted({kind_of(h).value for _, hashes in blocking for h in hashes})
    ends_on = exclusion.ends_at.date() if exclusion.ends_at else None
    return _decision(
        event,
        DecisionPayload(
            **_base(event),
            outcome=Outcome.BLOCK,
            code=CODE,
            message=block_message(ends_on),
            ends_on=ends_on,
            scope=exclusion.scope,
            matched=matched,
            flags=flags,
        ),
    )


def block_message(ends_on) -> str:
    until = ends_on.isoformat() if ends_on else "further notice"
    return f"Your account is blocked as part of the responsible gambling programme until {until}"


def _base(event: AccountEventOccurred) -> dict:
    return {
        "account_event_id": event.id,
        "operator_event_id": event.payload.operator_event_id,
        "account_id": event.payload.account_id,
        "kind": event.payload.kind,
    }


def _decision(event: AccountEventOccurred, payload: DecisionPayload) -> DecisionMade:
    return DecisionMade.caused_by(event, source=SOURCE, operator_id=event.operator_id, payload=payload)

