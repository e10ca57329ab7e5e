"""What the gateway's routes work with, built once in the app's lifespan: ``gateway(request)``."""

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from services.gateway import access
from services.gateway.access import Gatekeeper, Operator
from services.gateway.coalescing import CoalescingLookup
from services.gateway.domain import Summary, unique
from services.gateway.edge import note
from services.gateway.feed import LifecycleFeed
from services.gateway.problems import Problem, Unavailable
from services.gateway.repository import MongoCommandEffects, MongoDecisions, MongoLookup, MongoViews
from shared.events import Event
from shared.identity import Hasher, Identity
from shared.policies import Policy
from shared.service import Clock
from shared.settings import Settings

# A write waits for its effect woken by this replica's own lifecycle consumer (``Arrivals``); it also
# reads the store, seldom, for an effect another replica's consumer wrote. Reading every 10-100 ms
# instead loaded the store so much under a steady flow of writes that the consumer fell behind and
# most answers became 202s (measured with ``selfex bench enforcement``).
FIRST_POLL_SECONDS = 0.05
LAST_POLL_SECONDS = 0.25


class Arrivals:
    """The commands whose effect this replica's lifecycle consumer has just written, for the writes
    waiting on them. Each replica consumes a share of the lifecycle topic's partitions, so another
    replica may write it instead: a waiting write still reads the store now and then."""

    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Event] = {}

    @contextmanager
    def awaited(self, command_id: object) -> Iterator[asyncio.Event]:
        """An event set once the command's effect is noted here; registered before the command is published."""
        key = str(command_id)
        arrived = self._waiting[key] = asyncio.Event()
        try:
            yield arrived
        finally:
            self._waiting.pop(key, None)

    def noted(self, command_id: object) -> None:
        """The command's effect is written (lookup, view, then effect): wake whoever waits for it."""
        if (arrived := self._waiting.get(str(command_id))) is not None:
            arrived.set()


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
    arrivals: Arrivals = field(default_factory=Arrivals)

    async def summaries_of(self, identity: Identity, region: str = "GB") -> list[Summary]:
        """Every exclusion any of the identity's identifiers belongs to."""
        identifiers = self.hasher.lookup_forms(identity, region)  # every form, until the store is re-keyed
        return unique(await self.checks.summaries(identifiers)) if identifiers else []

    async def published_and_read(self, command: Event) -> Written | None:
        """Publish the command, then wait (bounded) until the gateway's own views hold its effect.

        The lifecycle consumer notes the command that caused each event after it has written the
        lookup and the view, so once the note is there a check sees the exclusion too. Both reads are
        by ``_id``. None when the bound passed.
        """
        with self.arrivals.awaited(command.id) as arrived:
            await self.publish(command)
            deadline = time.monotonic() + self.settings.gateway_read_your_write_seconds
            pause = FIRST_POLL_SECONDS
            while True:
                arrived.clear()
                effect = await self.effects.get(command.id)
                view = await self.views.get(effect["exclusion_id"]) if effect is not None else None
                if view is not None:
                    return Written(view, effect.get("refusal") if effect else None)
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrived.wait(), min(pause, left))
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


async def admitted(
    request: Request, key: str | None, permission: access.Permission, *, refused: Callable[[Exception], Problem]
) -> Operator:
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
