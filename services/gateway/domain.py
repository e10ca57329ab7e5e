"""The gateway's rules: what a person's exclusions mean to an operator asking. No I/O, no clock reads.

The gateway answers checks from its own lookup (one document per identifier hash, holding a summary
of every exclusion that identifier belongs to), kept current from the lifecycle topic and from the
gateway's own reads of its writes. A summary says enough to answer GAMSTOP (``Y``/``N``/``P``),
ChipOut's status and the native checks without reading anything else.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal

from shared.events import EXCLUDING_STATES, ExclusionSnapshot, ExclusionState, ExclusionType, Game, Scope

Answer = Literal["Y", "N", "P"]
ENDED_STATES = frozenset({ExclusionState.LIFTED, ExclusionState.EXPIRED})


def as_datetime(value: Any) -> datetime | None:
    """A stored moment as an aware datetime; stores hand back datetimes, ISO strings or None."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise TypeError(f"not a moment: {type(value).__name__}")


def _iso(value: Any) -> str | None:
    moment = as_datetime(value)
    return moment.isoformat() if moment else None


@dataclass(frozen=True)
class Summary:
    """One exclusion as the lookup keeps it: its state, scope and dates."""

    exclusion_id: str
    person_id: str | None
    state: ExclusionState
    scope: Scope
    jurisdiction: str
    starts_at: datetime | None
    ends_at: datetime | None
    minimum_until: datetime | None
    lift_effective_at: datetime | None
    version: int

    @classmethod
    def from_snapshot(cls, snapshot: ExclusionSnapshot, person_id: str | None) -> "Summary":
        return cls(
            exclusion_id=str(snapshot.exclusion_id),
            person_id=person_id,
            state=snapshot.state,
            scope=snapshot.scope,
            jurisdiction=snapshot.jurisdiction,
            starts_at=snapshot.starts_at,
            ends_at=snapshot.ends_at,
            minimum_until=snapshot.minimum_until,
            lift_effective_at=snapshot.lift_effective_at,
            version=snapshot.version,
        )

    @classmethod
    def from_exclusion(cls, document: Mapping[str, Any]) -> "Summary":
        """From registration's ``exclusions`` document."""
        return cls._of(document, exclusion_id=str(document["_id"]))

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any]) -> "Summary":
        """From the lookup's own JSON form (see ``stored``)."""
        return cls._of(stored, exclusion_id=stored["id"])

    @classmethod
    def _of(cls, fields: Mapping[str, Any], *, exclusion_id: str) -> "Summary":
        # Both forms carry the same fields under the same names; only the id's key differs.
        return cls(
            exclusion_id=exclusion_id,
            person_id=fields.get("person_id"),
            state=ExclusionState(fields["state"]),
            scope=Scope.model_validate(fields["scope"]),
            jurisdiction=fields.get("jurisdiction", ""),
            starts_at=as_datetime(fields.get("starts_at")),
            ends_at=as_datetime(fields.get("ends_at")),
            minimum_until=as_datetime(fields.get("minimum_until")),
            lift_effective_at=as_datetime(fields.get("lift_effective_at")),
            version=int(fields.get("version", 1)),
        )

    def stored(self) -> dict[str, Any]:
        """Plain JSON values only: dates as ISO strings, so every store keeps them exactly."""
        return {
            "id": self.exclusion_id,
            "person_id": self.person_id,
            "state": self.state.value,
            "scope": self.scope.model_dump(mode="json"),
            "jurisdiction": self.jurisdiction,
            "starts_at": _iso(self.starts_at),
            "ends_at": _iso(self.ends_at),
            "minimum_until": _iso(self.minimum_until),
            "lift_effective_at": _iso(self.lift_effective_at),
            "version": self.version,
        }

    def in_force(self, now: datetime) -> bool:
        """Excluding now. A state whose end has passed counts as ended, even before the timer wrote it."""
        if self.state not in EXCLUDING_STATES:
            return False
        if self.ends_at is not None and self.ends_at <= now:
            return False
        if self.state is ExclusionState.LIFT_REQUESTED and self.lift_effective_at is not None:
            return self.lift_effective_at > now
        return True

    def ended(self, now: datetime) -> bool:
        """Lifted or expired: the person was excluded and no longer is."""
        return self.state in ENDED_STATES or (self.state in EXCLUDING_STATES and not self.in_force(now))

    def until(self) -> datetime | None:
        """ChipOut's ``To``: the end, or for an exclusion without one, the minimum before a lift."""
        return self.ends_at or self.minimum_until


def merged(current: Iterable[Mapping[str, Any]], summary: Summary) -> tuple[list[dict[str, Any]], bool]:
    """The lookup's list with ``summary`` in it, and whether it changed: an older version never wins."""
    entries = [dict(stored) for stored in current]
    wanted = summary.stored()
    for index, stored in enumerate(entries):
        if stored["id"] == summary.exclusion_id:
            if int(stored.get("version", 0)) > summary.version or stored == wanted:
                return entries, False
            entries[index] = wanted
            return entries, True
    return [*entries, wanted], True


def gamstop_answer(summaries: Iterable[Summary], now: datetime) -> Answer:
    """``Y`` while excluded, ``P`` when an exclusion was lifted or has expired, ``N`` otherwise."""
    answer: Answer = "N"
    for summary in summaries:
        if summary.in_force(now):
            return "Y"
        if summary.ended(now):
            answer = "P"
    return answer


def day(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).date().isoformat() if moment else None


def chipout_type(scope: Scope) -> str:
    """ChipOut's ``Type`` in a status answer: ``All`` for every game, else the games and the other types named."""
    if ExclusionType.GAMES in scope.types and (Game.ALL in scope.games or not scope.games):
        return "All"
    parts = sorted(g.value.capitalize() for g in scope.games if ExclusionType.GAMES in scope.types)
    parts += sorted(t.value for t in scope.types if t is not ExclusionType.GAMES)
    return ",".join(parts)


def chipout_status(summaries: Iterable[Summary], now: datetime) -> list[dict[str, str | None]]:
    """ChipOut's ``Excluded`` list: the exclusions in force, earliest first (dates in UTC)."""
    in_force = sorted((s for s in summaries if s.in_force(now)), key=lambda s: (s.starts_at or now, s.exclusion_id))
    return [{"Type": chipout_type(s.scope), "From": day(s.starts_at), "To": day(s.until())} for s in in_force]


@dataclass(frozen=True)
class Check:
    """The native check's answer for one person."""

    exclusion: Answer
    scope: Scope | None
    until: date | None
    until_further_notice: bool

    @property
    def excluded(self) -> bool:
        return self.exclusion == "Y"

    def as_json(self) -> dict[str, Any]:
        return {
            "exclusion": self.exclusion,
            "excluded": self.excluded,
            "scope": self.scope.model_dump(mode="json") if self.scope else None,
            "until": self.until.isoformat() if self.until else None,
            "until_further_notice": self.until_further_notice,
        }


def check(summaries: Iterable[Summary], now: datetime) -> Check:
    """What an operator needs to refuse someone: excluded or not, from what, and until when."""
    summaries = list(summaries)
    answer = gamstop_answer(summaries, now)
    in_force = [s for s in summaries if s.in_force(now)]
    if not in_force:
        return Check(answer, None, None, False)
    scope = in_force[0].scope
    for summary in in_force[1:]:
        scope = scope.union(summary.scope)
    open_ended = any(s.ends_at is None for s in in_force)
    last_end = None if open_ended else max(s.ends_at for s in in_force if s.ends_at)
    return Check(answer, scope, last_end.date() if last_end else None, open_ended)


def unique(summaries: Iterable[Summary]) -> list[Summary]:
    """One summary per exclusion (several identifiers of a person name the same one): the newest."""
    best: dict[str, Summary] = {}
    for summary in summaries:
        known = best.get(summary.exclusion_id)
        if known is None or summary.version > known.version:
            best[summary.exclusion_id] = summary
    return list(best.values())
