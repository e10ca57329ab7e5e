"""What a record repeats of its (redacted) event outside its body, for the compliance queries: plain
functions of the event, so the walk can recompute them and tell when they were changed.

- ``references``: every id that ties the record to a person or to something of theirs: the
  identifier hashes it carries, its subject, the exclusion, the lift, the account event a decision
  answers, the cause a delivery reports on. A person's records are found through them.
- ``facts``: the few fields the statistics count by (jurisdiction, duration kind, year-of-birth
  band, gender, outcome, action, a dead letter's topic, the forwarder's reported lag). Nothing here
  is personal in clear: identity is only ever its keyed hashes, and a year of birth only its decade.

A type gains facts only when it is new: verify recomputes them, so a record of an older type written
without them would be named modified (``forwarding.delivered`` and ``.failed`` are counted by type).
"""

from datetime import UTC, datetime, timedelta
from typing import Any

# Lifecycle events carry the whole exclusion (its snapshot): these types.
LIFECYCLE_TYPES = frozenset(
    {
        "exclusion.requested",
        "exclusion.cooling_off_started",
        "exclusion.activated",
        "exclusion.extended",
        "exclusion.ending_soon",
        "exclusion.expired",
        "exclusion.lift_requested",
        "exclusion.lift_refused",
        "exclusion.lifted",
        "exclusion.cancelled",
    }
)
_REFERENCE_FIELDS = ("exclusion_id", "lift_id", "account_event_id", "cause_id")
FORWARDING_STATUS = "forwarding.status"
# What the statistics show of the forwarder's newest status (ForwardingStatusPayload): counts and moments.
FORWARDING_STATUS_FIGURES = (
    "to_register",
    "adapter",
    "pending",
    "failed",
    "oldest_pending_at",
    "oldest_pending_age_seconds",
    "last_delivered_at",
    "last_sync_at",
    "last_sync_age_seconds",
    "breaker",
    "stopping",
)


def references(event: dict[str, Any]) -> list[str]:
    """The ids that tie the event to a person or to what is theirs, sorted, each once."""
    found: set[str] = set()
    if isinstance(subject := event.get("subject"), str) and subject:
        found.add(subject)
    payload = event.get("payload")
    if isinstance(payload, dict):
        for name in ("identity", "identifiers"):
            if isinstance(hashes := payload.get(name), list):
                found.update(h for h in hashes if isinstance(h, str))
        for name in _REFERENCE_FIELDS:
            if isinstance(value := payload.get(name), str) and value:
                found.add(value)
    return sorted(found)


def birth_band(year: object) -> str | None:
    """The decade of a year of birth ("1980s"): what the statistics count by, never the year itself."""
    return f"{int(year) // 10 * 10}s" if isinstance(year, int) and not isinstance(year, bool) else None


def facts(event: dict[str, Any]) -> dict[str, Any] | None:
    """What the statistics count the event by; None for the events they do not count."""
    kind = event.get("type")
    payload = event.get("payload")
    if not isinstance(payload, dict):
        return None
    if kind in LIFECYCLE_TYPES:
        return {
            "exclusion_id": payload.get("exclusion_id"),
            "jurisdiction": payload.get("jurisdiction"),
            "state": payload.get("state"),
            "duration_kind": "fixed" if payload.get("ends_at") else "until_lifted",
            "version": payload.get("version"),
            "request": event.get("correlation_id"),
        }
    if kind == "exclusion.request":
        return {
            "jurisdiction": payload.get("jurisdiction"),
            "gender": payload.get("gender"),
            "birth_band": birth_band(payload.get("year_of_birth")),
            "request": event.get("correlation_id") or event.get("id"),
        }
    if kind == "decision.made":
        return {"outcome": payload.get("outcome"), "kind": payload.get("kind")}
    if kind == "enforcement.commanded":
        return {"action": payload.get("action"), "exclusion_id": payload.get("exclusion_id")}
    if kind == "message.dead_lettered":
        return {"topic": payload.get("topic"), "consumer": payload.get("consumer")}
    if kind == FORWARDING_STATUS:
        return {name: payload.get(name) for name in FORWARDING_STATUS_FIGURES}
    return None


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def moment(when: datetime) -> int:
    """A moment as the queries compare it: microseconds since the epoch (UTC). A number, not text:
    the embedded store compares ISO-looking strings as dates to the second, which would tie (and so
    page wrongly) everything that happened within one second."""
    delta = when.astimezone(UTC) - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def instant(at: int) -> datetime:
    """The moment ``moment`` gave ``at`` for."""
    return EPOCH + timedelta(microseconds=int(at))


def moment_of(value: object) -> int | None:
    """``moment`` of an event's ``occurred_at`` (any offset); None if it is no moment."""
    try:
        when = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment(when) if when.tzinfo is not None else None


def query_fields(event: dict[str, Any]) -> dict[str, Any]:
    """The record's fields for queries: ``at`` (when it happened, in microseconds) and ``refs`` always,
    ``facts`` when the statistics count it."""
    fields: dict[str, Any] = {"at": moment_of(event.get("occurred_at")), "refs": references(event)}
    if (counted := facts(event)) is not None:
        fields["facts"] = counted
    return fields
