"""What the gateway's routes work with, built once in the app's lifespan: ``gateway(request)``."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from shared.events import Event
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
from services.gateway.repository import MongoCommandEffects, MongoDecisions, MongoLookup, MongoViews

FIRST_POLL_SECONDS = 0.01
LAST_POLL_SECONDS = 0.1


@dataclass(frozen=True)
class Written:
    """A command's effect as the gateway's views hold it: the exclusion as it now stands, and the
    refusal if registration refused the command."""

    exclusion: dict[str, Any]
    refusal: str | None = None


@dataclass
class Gateway:
    settings: Settings
    hasher: Hasher
    policies: dict[str, Policy]
    clock: Clock
    gatekeeper: Gatekeeper
    lookup: MongoLookup
    checks: CoalescingLookup
    views: MongoViews
    effects: MongoCommandEffects
    decisions: MongoDecisions
    publish: Callable[[Event], Awaitable[None]]
    feed: LifecycleFeed

    async def summaries_of(self, identity: Identity, region: str = "GB") -> list[Summary]:
        """Every exclusion any of the identity's identifiers belongs to."""
        identifiers = list(self.hasher.identifiers(identity, region).values())
        return unique(await self.checks.summaries(identifiers)) if identifiers else []

    async def published_and_read(self, command: Event) -> Written | None:
        """Publish the command, then wait (bounded) until the gateway's own views hold its effect.

        The lifecycle consumer notes the command that caused each event after it has written the
        lookup and the view, so once the note is there a check sees the exclusion too. Both reads are
        by ``_id``. None when the bound passed.
        """
        await self.publish(command)
        deadline = time.monotonic() + self.settings.gateway_read_your_write_seconds
        pause = FIRST_POLL_SECONDS
        while True:
            effect = await self.effects.get(command.id)
            view = await self.views.get(effect["exclusion_id"]) if effect is not None else None
            if view is not None:
                return Written(view, effect.get("refusal") if effect else None)
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


async def admitted(request: Request, key: str | None, permission: access.Permission, *, refused: Callable[[Exception], Problem]) -> Operator:
    """Who is behind ``key`` (an operator's key or a staff key), if its roles grant ``permission`` and
    it may do this now; else the API's own answer, via ``refused``."""
    the_note = note(request)
    try:
        operator = await gateway(request).gatekeeper.admit(key, permission)
    except access.WrongKeyError as exc:
        the_note.key_fingerprint = exc.fingerprint
        the_note.outcome = "wrong key"
        raise refused(exc) from None
    except (access.PermissionMissingError, access.RateLimitedError) as exc:
        the_note.operator_id = exc.operator.id
        the_note.outcome = "rate limited" if isinstance(exc, access.RateLimitedError) else f"not allowed: {exc.permission.value}"
        raise refused(exc) from None
    except access.KeyMissingError as exc:
        the_note.outcome = "no key"
        raise refused(exc) from None
    the_note.operator_id = operator.id
    return operator
