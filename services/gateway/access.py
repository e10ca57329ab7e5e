"""Who may call: API keys (only their SHA-256 is stored), the permissions a key holds, and a rate
limit per key.

A key is 256 random bits, so a plain SHA-256 of it cannot be reversed by guessing; no salt is needed.
Accepted keys are remembered for ``gateway_key_cache_seconds`` (a revocation takes that long to
reach a running gateway); rejected keys are never remembered, so a new key works at once.

The rate limit is the deployment's: ``limits``' in-memory moving window, each replica allowing a key
its share of the burst (``gateway_replicas``), so a key whose requests the load balancer spreads over
the replicas gets the configured limit in all.
"""

import hashlib
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from cachetools import TTLCache
from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from shared.settings import Settings

from services.gateway.repository import MongoOperators

KEY_PREFIX = "sx_"
MAX_KEY_LENGTH = 200
KEYS_REMEMBERED = 10_000


class Permission(StrEnum):
    """What a key may do (stored with the operator as its ``scopes``)."""

    CHECK = "check"  # GAMSTOP checks, ChipOut status, native checks, status and history, own decisions
    EXCLUDE = "exclude"  # ChipOut's exclude, native create / extend / lift
    COMPLIANCE = "compliance"  # the document review endpoint


ALL_PERMISSIONS = frozenset(Permission)


def new_key() -> str:
    """A fresh API key: URL-safe, so ChipOut clients can send it in a query string as it is."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def fingerprint(key: str) -> str:
    """What the audit log keeps of a key it did not accept: enough to see repeats, not to use it."""
    # A key that is not even text (a lone surrogate from a JSON escape) is still fingerprinted.
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def parse_permissions(text: str) -> frozenset[Permission]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in {p.value for p in Permission}]
    if unknown or not names:
        raise ValueError(f"scopes are a comma-separated list of {', '.join(p.value for p in Permission)}")
    return frozenset(Permission(name) for name in names)


@dataclass(frozen=True)
class Operator:
    id: str
    name: str
    scopes: frozenset[str]


class KeyMissingError(Exception):
    """No key was sent."""


class WrongKeyError(Exception):
    """A key was sent that belongs to no (unrevoked) operator."""

    def __init__(self, key: str) -> None:
        super().__init__("wrong API key")
        self.fingerprint = fingerprint(key)


class PermissionMissingError(Exception):
    def __init__(self, operator: Operator, permission: Permission) -> None:
        super().__init__(f"this key does not have the {permission.value!r} scope")
        self.operator = operator
        self.permission = permission


class RateLimitedError(Exception):
    def __init__(self, operator: Operator, retry_after: int) -> None:
        super().__init__(f"rate limit exceeded; retry after {retry_after} s")
        self.operator = operator
        self.retry_after = retry_after


class RateLimits:
    """Per key: at most ``burst`` requests in any window of ``burst / rate`` seconds, deployment-wide;
    this replica allows its share, ``burst / replicas`` (at least one)."""

    def __init__(self, rate: float, burst: int, replicas: int = 1) -> None:
        window = max(1, math.ceil(burst / rate))
        self.item = RateLimitItemPerSecond(max(1, burst // replicas), window)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

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
        record = await self._operators.by_key_hash(digest)
        if record is None:
            raise WrongKeyError(key)
        operator = Operator(record.id, record.name, record.scopes)
        if known is not None:
            known[digest] = operator
        return operator

    async def admit(self, key: str | None, permission: Permission) -> Operator:
        """The operator behind the key, if it may do this now; otherwise the reason it may not."""
        operator = await self.operator(key)
        wait = self.limits.take(operator.id)
        if wait:
            raise RateLimitedError(operator, wait)
        if permission.value not in operator.scopes:
            raise PermissionMissingError(operator, permission)
        return operator
