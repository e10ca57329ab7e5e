"""Who may call: API keys (only their SHA-256 is stored), scopes, and a rate limit per key.

A key is 256 random bits, so a plain SHA-256 of it cannot be reversed by guessing; no salt is needed.
Accepted keys are remembered for ``gateway_key_cache_seconds`` (a revocation takes that long to
reach a running gateway); rejected keys are never remembered, so a new key works at once.
"""

import hashlib
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from shared.settings import Settings

from services.gateway.repository import MongoOperators

KEY_PREFIX = "sx_"
MAX_KEY_LENGTH = 200


class Scope(StrEnum):
    CHECK = "check"  # GAMSTOP checks, ChipOut status, native checks, status and history, own decisions
    EXCLUDE = "exclude"  # ChipOut's exclude, native create / extend / lift
    COMPLIANCE = "compliance"  # the document review endpoint


ALL_SCOPES = frozenset(Scope)


def new_key() -> str:
    """A fresh API key: URL-safe, so ChipOut clients can send it in a query string as it is."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def fingerprint(key: str) -> str:
    """What the audit log keeps of a key it did not accept: enough to see repeats, not to use it."""
    # A key that is not even text (a lone surrogate from a JSON escape) is still fingerprinted.
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def parse_scopes(text: str) -> frozenset[Scope]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in {s.value for s in Scope}]
    if unknown or not names:
        raise ValueError(f"scopes are a comma-separated list of {', '.join(s.value for s in Scope)}")
    return frozenset(Scope(name) for name in names)


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


class ScopeMissingError(Exception):
    def __init__(self, operator: Operator, scope: Scope) -> None:
        super().__init__(f"this key does not have the {scope.value!r} scope")
        self.operator = operator
        self.scope = scope


class RateLimitedError(Exception):
    def __init__(self, operator: Operator, retry_after: int) -> None:
        super().__init__(f"rate limit exceeded; retry after {retry_after} s")
        self.operator = operator
        self.retry_after = retry_after


class TokenBuckets:
    """One bucket per operator: ``rate`` tokens a second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, name: str) -> float:
        """0 when a token was taken, else the seconds until one will be there."""
        now = self.clock()
        tokens, then = self._buckets.get(name, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        if tokens >= 1.0:
            self._buckets[name] = (tokens - 1.0, now)
            return 0.0
        self._buckets[name] = (tokens, now)
        return (1.0 - tokens) / self.rate


class Gatekeeper:
    """Admits a request: a known key, a token in its bucket, the scope the route needs."""

    def __init__(self, operators: MongoOperators, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self._operators = operators
        self._ttl = settings.gateway_key_cache_seconds
        self._clock = clock
        self._known: dict[str, tuple[Operator, float]] = {}
        self.buckets = TokenBuckets(settings.gateway_rate_per_second, settings.gateway_rate_burst, clock)

    async def operator(self, key: str | None) -> Operator:
        if not key:
            raise KeyMissingError("no API key")
        if len(key) > MAX_KEY_LENGTH or not key.isascii():
            raise WrongKeyError(key[:MAX_KEY_LENGTH])
        digest = key_hash(key)
        cached = self._known.get(digest)
        now = self._clock()
        if cached is not None and cached[1] > now:
            return cached[0]
        record = await self._operators.by_key_hash(digest)
        if record is None:
            self._known.pop(digest, None)
            raise WrongKeyError(key)
        operator = Operator(record.id, record.name, record.scopes)
        if self._ttl > 0:
            self._known[digest] = (operator, now + self._ttl)
        return operator

    async def admit(self, key: str | None, scope: Scope) -> Operator:
        """The operator behind the key, if it may do this now; otherwise the reason it may not."""
        operator = await self.operator(key)
        wait = self.buckets.take(operator.id)
        if wait > 0:
            raise RateLimitedError(operator, max(1, math.ceil(wait)))
        if scope.value not in operator.scopes:
            raise ScopeMissingError(operator, scope)
        return operator
