"""What the gateway's routes work with, built once in the app's lifespan: ``gateway(request)``."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from shared.events import Event, derived_id
from shared.identity import Hasher, Identity
from shared.policies import Policy
from shared.service import Clock
from shared.settings import Settings

from services.gateway import access
from services.gateway.access import Gatekeeper, Operator
from services.gateway.coalescing import CoalescingLookup
from services.gateway.domain import Summary, unique
from services.gateway.edge import note
from services.gateway.feed import LifecycleFeed
from services.gateway.problems import Problem, Unavailable
from services.gateway.repository import MongoDecisions, MongoExclusionReads, MongoLookup

FIRST_POLL_SECONDS = 0.01
LAST_POLL_SECONDS = 0.1
SEARCH_AFTER_SECONDS = 1.0


@dataclass
class Gateway:
    settings: Settings
    hasher: Hasher
    policies: dict[str, Policy]
    clock: Clock
    gatekeeper: Gatekeeper
    lookup: MongoLookup
    checks: CoalescingLookup
    exclusions: MongoExclusionReads
    decisions: MongoDecisions
    publish: Callable[[Event], Awaitable[None]]
    feed: LifecycleFeed

    async def summaries_of(self, identity: Identity, region: str = "GB") -> list[Summary]:
        """Every exclusion any of the identity's identifiers belongs to."""
        identifiers = list(self.hasher.identifiers(identity, region).values())
        return unique(await self.checks.summaries(identifiers)) if identifiers else []

    async def published_and_read(self, command: Event, *, known_id: str | None = None) -> dict[str, Any] | None:
        """Publish the command, then wait (bounded) for registration to write its effect.

        The exclusion read is put into the lookup at once, so a check right after the answer sees it
        even before the lifecycle event reaches the gateway's consumer. None when the bound passed.
        """
        await self.publish(command)
        started = time.monotonic()
        deadline = started + self.settings.gateway_read_your_write_seconds
        new_id = str(derived_id(command.id, "exclusion"))
        pause = FIRST_POLL_SECONDS
        while True:
            # A named exclusion is read by id; the slow search is for when it was not the one changed.
            search = known_id is None or time.monotonic() - started > SEARCH_AFTER_SECONDS
            document = await self.exclusions.changed_by(str(command.id), new_id=new_id, known_id=known_id, search=search)
            if document is not None:
                await self.lookup.record(document.get("identifiers") or [], Summary.from_exclusion(document))
                return document
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(pause)
            pause = min(pause * 2, LAST_POLL_SECONDS)


def gateway(request: Request) -> Gateway:
    return request.scope["state"]["gateway"]


def lookup_current(request: Request, the_gateway: Gateway, *, status: int = 503) -> None:
    """Nothing, when the lookup is known current; else the refusal to guess (a wrong "not excluded"
    is harm): ``status`` (503; ChipOut knows only 500) with ``Retry-After``, saying unavailable."""
    if the_gateway.feed.current():
        return
    note(request).outcome = "unavailable"
    raise Unavailable(status, the_gateway.feed.reason() or "the lookup is not known to be current")


async def admitted(request: Request, key: str | None, scope: access.Scope, *, refused: Callable[[Exception], Problem]) -> Operator:
    """The operator behind ``key`` if it may do this now; else the API's own answer, via ``refused``."""
    the_note = note(request)
    try:
        operator = await gateway(request).gatekeeper.admit(key, scope)
    except access.WrongKeyError as exc:
        the_note.key_fingerprint = exc.fingerprint
        the_note.outcome = "wrong key"
        raise refused(exc) from None
    except (access.ScopeMissingError, access.RateLimitedError) as exc:
        the_note.operator_id = exc.operator.id
        the_note.outcome = "rate limited" if isinstance(exc, access.RateLimitedError) else f"no {exc.scope.value} scope"
        raise refused(exc) from None
    except access.KeyMissingError as exc:
        the_note.outcome = "no key"
        raise refused(exc) from None
    the_note.operator_id = operator.id
    return operator
