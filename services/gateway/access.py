"""Who may call: API keys (only their SHA-256 is stored), the roles a key carries (and so what it may
do), and a rate limit per key.

Roles: ``operator`` (check and exclude, for its own customers), ``operator-compliance`` (its own
records: exclusions, decisions), ``register-staff`` (document reviews, cancellation of an exclusion
made in error, every operator's records for casework), ``regulator`` (read-only, everything). A
route names the ``Permission`` it needs; ``ROLE_PERMISSIONS`` says which roles grant it. Operator
keys act for one operator; staff keys for none.

A key is 256 random bits, so a plain SHA-256 of it cannot be reversed by guessing; no salt is needed.
Accepted keys are remembered for ``gateway_key_cache_seconds`` (a revocation takes that long to
reach a running gateway); rejected keys are never remembered, so a new key works at once.

The rate limit is the deployment's: ``limits``' in-memory moving window, each replica allowing a key
its share of the burst (``gateway_replicas``), so a key whose requests the load balancer spreads over
the replicas gets the configured limit in all.
"""

import asyncio
import hashlib
import math
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property

from cachetools import TTLCache
from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.storage.memory import Entry
from limits.strategies import MovingWindowRateLimiter

from services.gateway.repository import LEGACY_SCOPE_ROLES, MongoOperators, OperatorRecord
from shared.settings import Settings

KEY_PREFIX = "sx_"
MAX_KEY_LENGTH = 200
KEYS_REMEMBERED = 10_000


class Role(StrEnum):
    """What a key is for (stored with the key as its ``roles``)."""

    OPERATOR = "operator"
    OPERATOR_COMPLIANCE = "operator-compliance"
    REGISTER_STAFF = "register-staff"
    REGULATOR = "regulator"


OPERATOR_ROLES = frozenset({Role.OPERATOR, Role.OPERATOR_COMPLIANCE})  # keys of one operator
STAFF_ROLES = frozenset({Role.REGISTER_STAFF, Role.REGULATOR})  # keys of the register, tied to no operator
# Keys stored before roles carried scopes; each still reads as the role that took its place.
LEGACY_SCOPES = {scope: Role(role) for scope, role in LEGACY_SCOPE_ROLES.items()}


class Permission(StrEnum):
    """What a route needs."""

    CHECK = "check"  # screen a person: GAMSTOP, ChipOut status, native checks, a person's status and history
    EXCLUDE = "exclude"  # ChipOut's exclude, native create / extend / lift relay
    READ = "read"  # an exclusion by id, decisions: its operator's own, unless CASEWORK
    CASEWORK = "casework"  # every operator's records, not only its own
    REVIEW = "review"  # approve or reject an identity document
    CANCEL = "cancel"  # cancel an exclusion made in error
    COMPLIANCE = "compliance"  # the audit log's compliance queries: its operator's records, or every one's with CASEWORK
    SYNC = "sync"  # read the register's change feed (every exclusion's keyed hashes, paged: /v1/register/changes)


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.OPERATOR: frozenset({Permission.CHECK, Permission.EXCLUDE, Permission.READ, Permission.SYNC}),
    Role.OPERATOR_COMPLIANCE: frozenset({Permission.READ, Permission.COMPLIANCE}),
    Role.REGISTER_STAFF: frozenset(
        {Permission.CHECK, Permission.READ, Permission.CASEWORK, Permission.REVIEW, Permission.CANCEL, Permission.COMPLIANCE}
    ),
    Role.REGULATOR: frozenset({Permission.CHECK, Permission.READ, Permission.CASEWORK, Permission.COMPLIANCE}),  # reads only, never a write
}
# Every role an operator's key may carry (what the demo operator and the benches get).
ALL_PERMISSIONS = OPERATOR_ROLES


def roles_of(names: Iterable[str]) -> frozenset[Role]:
    """Roles from role names, or from the scope names keys carried before roles (check, exclude, compliance)."""
    roles = set()
    for name in names:
        name = str(name)
        if name in LEGACY_SCOPES:
            roles.add(LEGACY_SCOPES[name])
        elif name in {r.value for r in Role}:
            roles.add(Role(name))
        else:
            raise ValueError(f"unknown role {name!r}: roles are {', '.join(r.value for r in Role)}")
    return frozenset(roles)


def permissions_of(roles: Iterable[Role]) -> frozenset[Permission]:
    return frozenset(p for role in roles for p in ROLE_PERMISSIONS.get(role, ()))


def new_key() -> str:
    """A fresh API key: URL-safe, so ChipOut clients can send it in a query string as it is."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def fingerprint(key: str) -> str:
    """What the audit log keeps of a key it did not accept: enough to see repeats, not to use it."""
    # A key that is not even text (a lone surrogate from a JSON escape) is still fingerprinted.
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def parse_roles(text: str, allowed: frozenset[Role] = OPERATOR_ROLES) -> frozenset[Role]:
    """Roles from a comma-separated list (the old scope names are read as their roles), each one ``allowed``."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    choices = ", ".join(sorted(r.value for r in allowed))
    try:
        roles = roles_of(names)
    except ValueError:
        raise ValueError(f"roles are a comma-separated list of {choices}") from None
    if not roles or not roles <= allowed:
        raise ValueError(f"roles are a comma-separated list of {choices}")
    return roles


@dataclass(frozen=True)
class Operator:
    """Who is calling: an operator's key (``id`` the operator's) or a staff key (``staff``; ``id`` the key's own)."""

    id: str
    name: str
    roles: frozenset[Role]
    staff: bool = False

    @cached_property
    def permissions(self) -> frozenset[Permission]:
        return permissions_of(self.roles)

    def may(self, permission: Permission) -> bool:
        return permission in self.permissions

    @property
    def sees_every_operator(self) -> bool:
        """Register staff and the regulator see every operator's records; an operator's keys its own."""
        return Permission.CASEWORK in self.permissions


class KeyMissingError(Exception):
    """No key was sent."""


class WrongKeyError(Exception):
    """A key was sent that belongs to no (unrevoked) operator."""

    def __init__(self, key: str) -> None:
        super().__init__("wrong API key")
        self.fingerprint = fingerprint(key)


class PermissionMissingError(Exception):
    def __init__(self, operator: Operator, permission: Permission) -> None:
        roles = ", ".join(sorted(r.value for r in operator.roles)) or "none"
        super().__init__(f"this key's roles ({roles}) do not allow this ({permission.value!r})")
        self.operator = operator
        self.permission = permission


class RateLimitedError(Exception):
    def __init__(self, operator: Operator, retry_after: int) -> None:
        super().__init__(f"rate limit exceeded; retry after {retry_after} s")
        self.operator = operator
        self.retry_after = retry_after


class WindowStorage(MemoryStorage):
    """``limits``' memory storage with each key's moving window in a bounded deque, and no expiry thread.

    The stock storage starts a ``threading.Timer`` every 10 ms while requests arrive, to drop old
    entries (each start holds the event loop), and keeps a key's entries in a list it inserts each
    new one at the front of: a hit costs time in proportion to the limit (README, Performance). Here the
    newest entry goes to the left of a deque that keeps at most ``limit`` entries, the ``limit``-th
    (the one a moving window checks) is its right end, and entries past their expiry are dropped from
    the right as hits come: a hit costs the same whatever the limit, and a key keeps only the entries
    its window still counts.
    """

    def __init__(self) -> None:
        super().__init__()
        # The parent starts one expiry timer as it is made; its expiry slices each key's entries,
        # which a deque cannot be (a hit in its first 10 ms raised in that thread). Nothing else starts one.
        self.timer.cancel()

    def _MemoryStorage__schedule_expiry(self) -> None:  # the parent's private hook, by its mangled name
        pass

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        if amount > limit:
            return False
        with self.locks[key]:
            found = self.events.get(key)
            if isinstance(found, deque) and found.maxlen == limit:
                events: deque[Entry] = found
            else:
                events = deque(found or (), maxlen=limit)
                self.events[key] = events  # type: ignore[assignment]  # the parent's get_moving_window reads any sequence
            entry = Entry(expiry)  # stamped now, by the clock the parent's other methods read
            now = entry.atime
            while events and events[-1].expiry <= now:
                events.pop()
            if len(events) > limit - amount and events[limit - amount].atime >= now - expiry:
                return False
            events.extendleft([entry] * amount)
            return True


class RateLimits:
    """Per key: at most ``burst`` requests in any window of ``burst / rate`` seconds, deployment-wide;
    this replica allows its share, ``burst / replicas`` (at least one)."""

    def __init__(self, rate: float, burst: int, replicas: int = 1) -> None:
        window = max(1, math.ceil(burst / rate))
        self.item = RateLimitItemPerSecond(max(1, burst // replicas), window)
        self._limiter = MovingWindowRateLimiter(WindowStorage())

    def take(self, name: str) -> int:
        """0 when the request is within the limit, else the whole seconds until it would be (at least 1)."""
        if self._limiter.hit(self.item, name):
            return 0
        reset_at, _ = self._limiter.get_window_stats(self.item, name)
        return max(1, math.ceil(reset_at - time.time()))


class Gatekeeper:
    """Admits a request: a known key, room in its rate limit, the permission the route needs."""

    def __init__(self, operators: MongoOperators, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self._operators = operators
        ttl = settings.gateway_key_cache_seconds
        # Accepted keys only; a bounded number of them (a key is one per operator).
        self._known: TTLCache[str, Operator] | None = TTLCache(maxsize=KEYS_REMEMBERED, ttl=ttl, timer=clock) if ttl > 0 else None
        self._reading: dict[str, asyncio.Future[OperatorRecord | None]] = {}  # key digest → the store read under way
        self.limits = RateLimits(settings.gateway_rate_per_second, settings.gateway_rate_burst, settings.gateway_replicas)

    async def operator(self, key: str | None) -> Operator:
        if not key:
            raise KeyMissingError("no API key")
        if len(key) > MAX_KEY_LENGTH or not key.isascii():
            raise WrongKeyError(key[:MAX_KEY_LENGTH])
        digest = key_hash(key)
        known = self._known
        if known is not None:
            cached = known.get(digest)
            if cached is not None:
                return cached
        record = await self._read(digest)
        if record is None:
            raise WrongKeyError(key)
        operator = Operator(record.operator_id, record.name, _known_roles(record.roles), staff=record.staff)
        if known is not None:
            known[digest] = operator
        return operator

    async def _read(self, digest: str) -> OperatorRecord | None:
        """The key's record from the store: one read however many requests ask for it at once (when a
        remembered key expires, every request then in flight with it would otherwise read it too)."""
        reading = self._reading.get(digest)
        if reading is None:
            reading = self._reading[digest] = asyncio.ensure_future(self._operators.by_key_hash(digest))
            reading.add_done_callback(lambda done: self._read_done(digest, done))
        return await asyncio.shield(reading)  # one caller's cancellation leaves the read to the others

    def _read_done(self, digest: str, done: asyncio.Future) -> None:
        if self._reading.get(digest) is done:
            del self._reading[digest]
        if not done.cancelled():
            done.exception()  # retrieved here too: every caller may have gone

    async def admit(self, key: str | None, permission: Permission) -> Operator:
        """The operator behind the key, if it may do this now; otherwise the reason it may not."""
        operator = await self.operator(key)
        wait = self.limits.take(operator.id)
        if wait:
            raise RateLimitedError(operator, wait)
        if not operator.may(permission):
            raise PermissionMissingError(operator, permission)
        return operator


def _known_roles(names: Iterable[str]) -> frozenset[Role]:
    """The roles a stored key carries; a name this code does not know grants nothing."""
    known = {r.value for r in Role}
    return frozenset(Role(name) for name in names if name in known)
