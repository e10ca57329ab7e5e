"""The compliance queries over the audit log (docs/adr/0007), read-only: records by person, operator,
type and time, paged or streamed; a person's records in order (their statement); the counts of
regulatory reporting. Every query is bounded by a ``Scope``: one operator's records, or all.
The forwarder's lag (its ``forwarding.status`` events) is the deployment's own: it is in the
statistics of the scope ``all`` only (register staff, regulators), never in an operator's.

A person is named by the keyed hashes of their identifiers (every form the hash chain knows). Their
records are those that carry one of those hashes, and, one step on, those that carry what the first
ones name of theirs: their subject, their exclusions, their account events (a decision answers one).
The links are followed over the whole log, but what is returned is always cut to the scope.
"""

import base64
import binascii
import json
import math
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase

from services.audit.repository import LOG
from services.audit.summaries import FORWARDING_STATUS, FORWARDING_STATUS_FIGURES, LIFECYCLE_TYPES, instant, moment

MAX_IDENTIFIERS = 64
EXCLUDING = frozenset({"active", "lift_requested"})
PERCENTILES = (50, 90, 95, 99)
# What a listing reads of a record: everything but the query fields (the event is in the body).
LISTED = {"refs": 0, "facts": 0}


class QueryError(ValueError):
    """A query that cannot be answered as asked: the field at fault and why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Scope:
    """Whose records a query may return: one operator's (``operator_id``), or every one (None)."""

    operator_id: str | None

    @classmethod
    def parse(cls, text: str) -> "Scope":
        if text == "all":
            return cls(None)
        kind, _, operator_id = text.partition(":")
        if kind != "operator" or not operator_id:
            raise QueryError("scope", "scope is 'all' or 'operator:<operator_id>'")
        return cls(operator_id)

    def where(self) -> dict[str, Any]:
        return {"operator_id": self.operator_id} if self.operator_id is not None else {}


@dataclass(frozen=True)
class Criteria:
    """What a search asks for; every part optional, all of them together."""

    identifiers: tuple[str, ...] = ()
    operator_id: str | None = None
    types: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None


def cursor_of(document: dict[str, Any]) -> str:
    """An opaque cursor: the position after this record in the listing's order (time, then id)."""
    return base64.urlsafe_b64encode(json.dumps([document.get("at"), document["_id"]]).encode()).decode().rstrip("=")


def _after(cursor: str) -> dict[str, Any]:
    try:
        at, record_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(at, int | None) or isinstance(at, bool) or not isinstance(record_id, str):
            raise ValueError
    except (ValueError, TypeError, binascii.Error):
        raise QueryError("cursor", "cursor is not one this API gave out (use next_cursor as it was answered)") from None
    if at is None:  # a record from before the query fields: those sort first
        return {"$or": [{"at": {"$ne": None}}, {"at": None, "_id": {"$gt": record_id}}]}
    # A range on ``at`` first (an index serves it), then the tie-break within one moment.
    return {"at": {"$gte": at}, "$or": [{"at": {"$gt": at}}, {"_id": {"$gt": record_id}}]}


def listed(document: dict[str, Any]) -> dict[str, Any]:
    """A record as the queries answer it: its place in its chain, its hash, and the redacted event."""
    said = json.loads(document["body"])
    return {
        "id": document["_id"],
        "occurred_at": document.get("occurred_at"),
        "recorded_at": said.get("recorded_at"),
        "type": document.get("type"),
        "operator_id": document.get("operator_id"),
        "subject": document.get("subject"),
        "chain": said.get("chain"),
        "seq": document.get("seq"),
        "hash": document.get("hash"),
        "event": said.get("event"),
    }


class AuditQueries:
    def __init__(self, database: AsyncDatabase) -> None:
        self._log = database[LOG]

    async def person_refs(self, identifiers: Iterable[str]) -> list[str]:
        """Every id a person's records carry: their identifier hashes, and what records carrying one
        name of theirs (subjects, exclusions, lifts, account events)."""
        hashes = sorted(set(identifiers))
        if not hashes:
            return []
        if len(hashes) > MAX_IDENTIFIERS:
            raise QueryError("identifiers", f"at most {MAX_IDENTIFIERS} identifier hashes")
        found = set(hashes)
        async for document in self._log.find({"refs": {"$in": hashes}}, {"refs": 1, "type": 1, "_id": 1}):
            found.update(document.get("refs") or ())
            if document.get("type") == "account.event":
                found.add(document["_id"])  # the decision that answers it names it
        return sorted(found)

    async def where(self, scope: Scope, criteria: Criteria, *, cursor: str | None = None) -> dict[str, Any]:
        """The filter of a search: one flat ``$and`` of its parts (the embedded store mishandles nested ones)."""
        parts: list[dict[str, Any]] = [_after(cursor)] if cursor else []
        if scope.operator_id is not None:
            parts.append(scope.where())
        if criteria.operator_id is not None:
            parts.append({"operator_id": criteria.operator_id})
        if criteria.types:
            parts.append({"type": {"$in": sorted(set(criteria.types))}})
        if criteria.since is not None or criteria.until is not None:
            if criteria.since and criteria.until and criteria.since >= criteria.until:
                raise QueryError("from", "from must be before to")
            span: dict[str, int] = {}
            if criteria.since is not None:
                span["$gte"] = moment(criteria.since)
            if criteria.until is not None:
                span["$lt"] = moment(criteria.until)
            parts.append({"at": span})
        if criteria.identifiers:
            parts.append({"refs": {"$in": await self.person_refs(criteria.identifiers)}})
        return {"$and": parts} if len(parts) > 1 else parts[0] if parts else {}

    async def page(self, scope: Scope, criteria: Criteria, *, cursor: str | None = None, limit: int = 100) -> tuple[list[dict], str | None]:
        """One page of records in time order, and the cursor of the next (None: this was the last)."""
        where = await self.where(scope, criteria, cursor=cursor)
        found = await self._log.find(where, LISTED, sort=[("at", ASCENDING), ("_id", ASCENDING)], limit=limit + 1).to_list()
        more = len(found) > limit
        found = found[:limit]
        return [listed(d) for d in found], cursor_of(found[-1]) if more and found else None

    async def every(self, scope: Scope, criteria: Criteria) -> AsyncIterator[dict[str, Any]]:
        """Every record the criteria select, in time order, read in batches (for exports)."""
        where = await self.where(scope, criteria)
        async for document in self._log.find(where, LISTED, sort=[("at", ASCENDING), ("_id", ASCENDING)], batch_size=1000):
            yield listed(document)

    async def statement(self, scope: Scope, identifiers: Iterable[str]) -> list[dict[str, Any]]:
        """Every record of the person within the scope, in the order things happened."""
        hashes = tuple(identifiers)
        if not hashes:
            raise QueryError("identifiers", "name the person by at least one identifier hash")
        return [r async for r in self.every(scope, Criteria(identifiers=hashes))]

    async def statistics(self, scope: Scope, since: datetime | None, until: datetime) -> "Statistics":
        """The counts of regulatory reporting over [since, until) (exclusions active: as of until)."""
        if since is not None and since >= until:
            raise QueryError("from", "from must be before to")
        start, end = moment(since) if since else 0, moment(until)
        stats = Statistics(since=since, until=until)
        scoped = scope.where()
        requests: dict[str, dict[str, Any]] = {}
        async for document in self._log.find({**scoped, "type": "exclusion.request", "at": {"$lt": end}}, {"facts": 1}):
            facts = document.get("facts") or {}
            requests[str(facts.get("request"))] = facts
        latest: dict[str, tuple[int, int, dict[str, Any]]] = {}
        started: dict[str, dict[str, Any]] = {}
        async for document in self._log.find(
            {**scoped, "type": {"$in": sorted(LIFECYCLE_TYPES)}, "at": {"$lt": end}}, {"facts": 1, "at": 1, "type": 1}
        ):
            facts = document.get("facts") or {}
            exclusion = str(facts.get("exclusion_id"))
            held = latest.get(exclusion)
            ordering = (int(facts.get("version") or 0), int(document.get("at") or 0))
            if held is None or ordering >= held[:2]:
                latest[exclusion] = (*ordering, facts)
            if document.get("type") == "exclusion.activated" and int(document.get("at") or 0) >= start:
                started.setdefault(exclusion, facts)
        for facts in started.values():
            stats.started.count(facts, requests.get(str(facts.get("request"))))
        for _, _, facts in latest.values():
            if facts.get("state") in EXCLUDING:
                stats.active.count(facts, requests.get(str(facts.get("request"))))
        span = {"at": {"$gte": start, "$lt": end}}
        async for document in self._log.find({**scoped, "type": "decision.made", **span}, {"facts": 1, "at": 1}):
            day = instant(document.get("at") or 0).date().isoformat()
            stats.decisions[day][str((document.get("facts") or {}).get("outcome"))] += 1
        enforced: list[tuple[str, int]] = []
        async for document in self._log.find({**scoped, "type": "enforcement.commanded", **span}, {"facts": 1, "at": 1}):
            facts = document.get("facts") or {}
            if facts.get("action") == "end_sessions":
                enforced.append((str(facts.get("exclusion_id")), int(document.get("at") or 0)))
        activated: dict[str, int] = {}
        wanted = sorted({exclusion for exclusion, _ in enforced})
        # The activation may be another operator's record: only the time between is answered.
        async for document in self._log.find({"type": "exclusion.activated", "facts.exclusion_id": {"$in": wanted}}, {"facts": 1, "at": 1}):
            exclusion = str((document.get("facts") or {}).get("exclusion_id"))
            if exclusion not in activated or int(document.get("at") or 0) < activated[exclusion]:
                activated[exclusion] = int(document.get("at") or 0)
        for exclusion, at in enforced:
            if exclusion in activated:
                stats.enforcement_ms.append(max(0.0, (at - activated[exclusion]) / 1000))
        async for document in self._log.find({**scoped, "type": "message.dead_lettered", **span}, {"facts": 1}):
            stats.dead_letters[str((document.get("facts") or {}).get("topic"))] += 1
        if scope.operator_id is None:  # the deployment's own, not an operator's
            stats.forwarding = await self._forwarding(start, end)
        return stats

    async def _forwarding(self, start: int, end: int) -> "Forwarding":
        """Deliveries and failures in [start, end); the newest status of each register that reported in
        it, and of the last to report before ``end`` even if that was before ``start`` (its time says so)."""
        forwarding = Forwarding()
        span = {"at": {"$gte": start, "$lt": end}}
        for outcome in ("delivered", "failed"):
            forwarding.deliveries[outcome] = await self._log.count_documents({"type": f"forwarding.{outcome}", **span})
        statuses = {"facts": 1, "at": 1}
        async for document in self._log.find({"type": FORWARDING_STATUS, **span}, statuses):
            forwarding.reported(document)
        last = await self._log.find_one(
            {"type": FORWARDING_STATUS, "at": {"$lt": end}}, statuses, sort=[("at", DESCENDING), ("_id", DESCENDING)]
        )
        if last is not None:
            forwarding.reported(last)
        return forwarding


@dataclass
class Breakdown:
    """Exclusions counted in all and by each dimension the regulators ask for."""

    total: int = 0
    by: dict[str, Counter[str]] = field(
        default_factory=lambda: {name: Counter() for name in ("jurisdiction", "duration_kind", "birth_band", "gender")}
    )

    def count(self, facts: dict[str, Any], request: dict[str, Any] | None) -> None:
        self.total += 1
        known = request or {}
        self.by["jurisdiction"][str(facts.get("jurisdiction") or "unknown")] += 1
        self.by["duration_kind"][str(facts.get("duration_kind") or "unknown")] += 1
        self.by["birth_band"][str(known.get("birth_band") or "unknown")] += 1
        self.by["gender"][str(known.get("gender") or "unknown")] += 1

    def as_json(self) -> dict[str, Any]:
        return {"total": self.total, **{f"by_{name}": dict(sorted(counts.items())) for name, counts in self.by.items()}}


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank percentile of the values (sorted here)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


@dataclass
class Forwarding:
    """The forwarder's deliveries and failures in the period, and the newest status each register reported."""

    deliveries: Counter[str] = field(default_factory=Counter)
    newest: dict[str, tuple[int, str, dict[str, Any]]] = field(default_factory=dict)

    def reported(self, document: dict[str, Any]) -> None:
        facts = document.get("facts") or {}
        register = str(facts.get("to_register") or "none")  # none: a deployment that only imports
        ordering = (int(document.get("at") or 0), str(document["_id"]))
        held = self.newest.get(register)
        if held is None or ordering > held[:2]:
            self.newest[register] = (*ordering, facts)

    def as_json(self) -> dict[str, Any]:
        figures = [name for name in FORWARDING_STATUS_FIGURES if name != "to_register"]
        return {
            "deliveries": {"delivered": self.deliveries["delivered"], "failed": self.deliveries["failed"]},
            "status_by_register": {
                register: {"reported_at": instant(at).isoformat(), **{name: facts.get(name) for name in figures}}
                for register, (at, _, facts) in sorted(self.newest.items())
            },
        }


def _cell(value: Any) -> float | int | str:
    """A figure as a CSV cell: nothing is empty, a flag is true or false."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


@dataclass
class Statistics:
    since: datetime | None
    until: datetime
    started: Breakdown = field(default_factory=Breakdown)
    active: Breakdown = field(default_factory=Breakdown)
    decisions: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    enforcement_ms: list[float] = field(default_factory=list)
    dead_letters: Counter[str] = field(default_factory=Counter)
    forwarding: Forwarding | None = None  # None: not the deployment's own scope

    def as_json(self) -> dict[str, Any]:
        timing: dict[str, Any] = {"count": len(self.enforcement_ms)}
        if self.enforcement_ms:
            timing |= {f"p{p}": round(percentile(self.enforcement_ms, p), 1) for p in PERCENTILES}
            timing["max"] = round(max(self.enforcement_ms), 1)
        figures = {
            "from": self.since.isoformat() if self.since else None,
            "to": self.until.isoformat(),
            "exclusions_started": self.started.as_json(),
            "exclusions_active": {"at": self.until.isoformat(), **self.active.as_json()},
            "decisions_by_day": [{"day": day, **dict(sorted(counts.items()))} for day, counts in sorted(self.decisions.items())],
            "time_to_enforcement_ms": timing,
            "dead_letters_by_topic": dict(sorted(self.dead_letters.items())),
        }
        if self.forwarding is not None:
            figures["forwarding"] = self.forwarding.as_json()
        return figures

    def rows(self) -> list[tuple[str, str, str, float | int | str]]:
        """The same figures as rows: (section, dimension, key, value), for CSV."""
        figures = self.as_json()
        rows: list[tuple[str, str, str, float | int | str]] = []
        for section in ("exclusions_started", "exclusions_active"):
            rows.append((section, "total", "", figures[section]["total"]))
            for dimension in ("jurisdiction", "duration_kind", "birth_band", "gender"):
                rows += [(section, dimension, key, n) for key, n in figures[section][f"by_{dimension}"].items()]
        for day in figures["decisions_by_day"]:
            rows += [("decisions_by_day", day["day"], outcome, n) for outcome, n in day.items() if outcome != "day"]
        rows += [("time_to_enforcement_ms", "", key, value) for key, value in figures["time_to_enforcement_ms"].items()]
        rows += [("dead_letters_by_topic", "topic", topic, n) for topic, n in figures["dead_letters_by_topic"].items()]
        if "forwarding" in figures:
            rows += [("forwarding.deliveries", "", outcome, n) for outcome, n in figures["forwarding"]["deliveries"].items()]
            for register, status in figures["forwarding"]["status_by_register"].items():
                rows += [("forwarding.status_by_register", register, name, _cell(value)) for name, value in status.items()]
        return rows
