"""What the gateway shows of an exclusion and of its verification, made from the events that announce
them. No I/O: the documents ``repository`` keeps in ``exclusion_views``, ``verification_views`` and
``submission_answers``, as plain JSON values (dates as ISO strings, which every store keeps exactly).
"""

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from shared.events import ExclusionSnapshot, SubmissionAnswer, VerificationStanding


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def view_of(snapshot: ExclusionSnapshot, person_id: str | None, *, refusal: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """An exclusion as the native API, ChipOut and the portal show it, with the person's identifier
    hashes (to check that a caller names its person). ``refusal``: the lift refusal this event
    announces (``request_id``, ``reason``, ``at``), if it announces one.

    The field names are registration's, so ``Summary.from_exclusion`` and ``schemas.exclusion_view``
    read a view as they read an exclusion.
    """
    return {
        "_id": str(snapshot.exclusion_id),
        "person_id": person_id,
        "identifiers": sorted(snapshot.identifiers),
        "state": snapshot.state.value,
        "scope": snapshot.scope.model_dump(mode="json"),
        "jurisdiction": snapshot.jurisdiction,
        "duration": snapshot.duration,
        "channel": snapshot.channel.value if snapshot.channel else None,
        "created_at": _iso(snapshot.created_at),
        "starts_at": _iso(snapshot.starts_at),
        "ends_at": _iso(snapshot.ends_at),
        "minimum_until": _iso(snapshot.minimum_until),
        "lift_effective_at": _iso(snapshot.lift_effective_at),
        "ended_at": _iso(snapshot.ended_at),
        "version": snapshot.version,
        "origin": snapshot.origin,  # the deployment that forwarded it (its end there may end it here: register.py)
        "refusal": dict(refusal) if refusal else None,
    }


def verification_view_of(exclusion_id: Any, standing: VerificationStanding, *, lift_id: Any = None) -> dict[str, Any]:
    """Where an exclusion request's verification stands (kept under the exclusion's id), or a lift
    request's (under the lift's id, ``lift`` true, naming the exclusion it would lift)."""
    key = lift_id if lift_id is not None else exclusion_id
    return {"_id": str(key), "exclusion_id": str(exclusion_id), "lift": lift_id is not None, **standing.model_dump(mode="json")}


def answer_of(exclusion_id: Any, answer: SubmissionAnswer) -> dict[str, Any]:
    """What became of one submission."""
    return {
        "_id": str(answer.submission_id),
        "exclusion_id": str(exclusion_id),
        **answer.model_dump(mode="json", exclude={"submission_id"}),
    }
