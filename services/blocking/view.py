"""The view of exclusions in force: answers "who is excluded by these identifier hashes" from memory.

It holds only exclusions whose state excludes. A lookup is a few dictionary reads whatever the
number of exclusions, and it is kept small: one entry per exclusion, and each identifier hash
points straight at its exclusion (a tuple only in the rare case several share one identifier).
"""

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime

from shared.events import ExclusionSnapshot, ExclusionType, Game, Scope


@dataclass(frozen=True, slots=True)
class ActiveExclusion:
    """What blocking needs to know of an exclusion in force."""

    exclusion_id: uuid.UUID
    identifiers: Iterable[str]
    scope: Scope
    starts_at: datetime
    ends_at: datetime | None
    version: int = 1

    def in_force(self, at: datetime) -> bool:
        return self.starts_at <= at and (self.ends_at is None or at < self.ends_at)

    @classmethod
    def of(cls, snapshot: ExclusionSnapshot) -> "ActiveExclusion":
        return cls(
            exclusion_id=snapshot.exclusion_id,
            identifiers=tuple(snapshot.identifiers),
            scope=snapshot.scope,
            starts_at=snapshot.starts_at,
            ends_at=snapshot.ends_at,
            version=snapshot.version,
        )


class Scopes:
    """One shared Scope object per distinct scope: a million exclusions use a handful of them."""

    def __init__(self) -> None:
        self._known: dict[tuple[tuple[str, ...], tuple[str, ...]], Scope] = {}

    def get(self, types: Iterable[str], games: Iterable[str] = ()) -> Scope:
        key = (tuple(sorted(types)), tuple(sorted(games)))
        scope = self._known.get(key)
        if scope is None:
            scope = self._known[key] = Scope(types=frozenset(ExclusionType(t) for t in key[0]), games=frozenset(Game(g) for g in key[1]))
        return scope


@dataclass
class ExclusionView:
    """Exclusions in force by id and by identifier hash."""

    by_id: dict[uuid.UUID, ActiveExclusion] = field(default_factory=dict)
    # identifier hash -> its exclusion, or a tuple of them when several share the identifier
    by_identifier: dict[str, ActiveExclusion | tuple[ActiveExclusion, ...]] = field(default_factory=dict)
    # exclusion id -> version of its last snapshot that took it out: a late, older one must not put it back
    removed: dict[uuid.UUID, int] = field(default_factory=dict)
    # Each exclusion's identifiers in the newest hash form (``Hasher.canonical_all``), so that the
    # newest form of an account's identity finds what was hashed before a key rotation; it raises
    # for a key this instance does not hold, before anything changes (the follower then retries).
    canonical: Callable[[Iterable[str]], tuple[str, ...]] | None = None

    def add(self, exclusion: ActiveExclusion) -> None:
        if self.canonical is not None:
            identifiers = self.canonical(exclusion.identifiers)
            if identifiers is not exclusion.identifiers:
                exclusion = replace(exclusion, identifiers=identifiers)
        self.discard(exclusion.exclusion_id)
        self.by_id[exclusion.exclusion_id] = exclusion
        index = self.by_identifier
        for identifier in exclusion.identifiers:
            there = index.get(identifier)
            if there is None:
                index[identifier] = exclusion
            elif isinstance(there, tuple):
                index[identifier] = (*there, exclusion)
            else:
                index[identifier] = (there, exclusion)

    def discard(self, exclusion_id: uuid.UUID) -> None:
        old = self.by_id.pop(exclusion_id, None)
        if old is None:
            return
        index = self.by_identifier
        for identifier in old.identifiers:
            there = index.get(identifier)
            if there is old:
                del index[identifier]
            elif isinstance(there, tuple):
                rest = tuple(e for e in there if e is not old)
                index[identifier] = rest[0] if len(rest) == 1 else rest

    def clear(self) -> None:
        self.by_id.clear()
        self.by_identifier.clear()
        self.removed.clear()

    def get(self, exclusion_id: uuid.UUID) -> ActiveExclusion | None:
        return self.by_id.get(exclusion_id)

    def version_of(self, exclusion_id: uuid.UUID) -> int | None:
        """The version of the newest snapshot the view has applied for this exclusion, if any."""
        held = self.by_id.get(exclusion_id)
        return held.version if held is not None else self.removed.get(exclusion_id)

    def apply(self, snapshot: ExclusionSnapshot) -> bool:
        """Hold the exclusion while its snapshot excludes, drop it otherwise; an older snapshot changes nothing."""
        held = self.version_of(snapshot.exclusion_id)
        if held is not None and snapshot.version < held:
            return False
        if snapshot.excludes():
            self.removed.pop(snapshot.exclusion_id, None)
            self.add(ActiveExclusion.of(snapshot))
        else:
            self.discard(snapshot.exclusion_id)
            self.removed[snapshot.exclusion_id] = snapshot.version
        return True

    def matching(self, identifiers: Iterable[str]) -> dict[uuid.UUID, list[str]]:
        """Each exclusion any of the identifiers points at, with the identifiers that matched."""
        found: dict[uuid.UUID, list[str]] = {}
        index = self.by_identifier
        for identifier in identifiers:
            there = index.get(identifier)
            if there is None:
                continue
            for exclusion in there if isinstance(there, tuple) else (there,):
                found.setdefault(exclusion.exclusion_id, []).append(identifier)
        return found

    def __len__(self) -> int:
        return len(self.by_id)
