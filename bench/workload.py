"""The decisions bench's data: N excluded people, a pool of operator accounts, account events.

Deterministic (seeded), so runs compare. One account in ten belongs to an excluded person; the
others to people who are not excluded. Identities carry a national id (ChipOut uid), an e-mail and
a device fingerprint; exclusions hold the keyed hashes of the uid and e-mail, as registration's do.
"""

import hashlib
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.blocking.repository import EXCLUSIONS, exclusion_document
from shared.events import (
    SCOPE_ALL,
    AccountEventKind,
    AccountEventOccurred,
    AccountEventPayload,
    ExclusionSnapshot,
    ExclusionType,
    Game,
    Scope,
)
from shared.identity import Hasher, Identity

OPERATOR = "op-bench"
SLOTS = Scope(types=frozenset({ExclusionType.GAMES}), games=frozenset({Game.SLOTS}))
KINDS = [
    (AccountEventKind.LOGIN, {}),
    (AccountEventKind.BET, {"game": Game.SLOTS}),
    (AccountEventKind.DEPOSIT, {}),
    (AccountEventKind.BET, {"game": Game.POKER}),
    (AccountEventKind.BONUS, {}),
]


def uid(person: int) -> str:
    return hashlib.sha256(f"{person:012d}".encode()).hexdigest()


def identity(person: int, device: str | None = None) -> Identity:
    return Identity(uid=uid(person), email=f"p{person}@bench.example", device_fingerprint=device)


@dataclass
class Workload:
    hasher: Hasher
    exclusions: int
    accounts: int = 10_000
    seed: int = 5
    now: datetime = field(default_factory=lambda: datetime.now().astimezone())

    def excluded_person(self, n: int) -> int:
        return (n * 7919) % self.exclusions

    def person_of_account(self, account: int) -> int:
        """Every tenth account is an excluded person's; the rest are people with no exclusion."""
        return self.excluded_person(account) if account % 10 == 0 else self.exclusions + account

    def exclusion_documents(self, chunk: int = 5000) -> Iterator[list[dict]]:
        """Blocking's projection documents for N active exclusions (nine in ten of all games, one of slots)."""
        templates = [
            exclusion_document(
                ExclusionSnapshot(
                    exclusion_id=uuid.UUID(int=0),
                    identifiers=[],
                    scope=scope,
                    jurisdiction="SE",
                    starts_at=self.now - timedelta(days=1),
                    ends_at=self.now + timedelta(days=365),
                    version=2,
                )
            )
            for scope in (SCOPE_ALL, SLOTS)
        ]
        documents = []
        for person in range(self.exclusions):
            hashes = sorted(self.hasher.identifiers(Identity(uid=uid(person), email=f"p{person}@bench.example")).values())
            template = templates[1] if person % 10 == 9 else templates[0]
            documents.append({**template, "_id": str(uuid.UUID(int=(self.seed << 64) + person)), "identifiers": hashes})
            if len(documents) == chunk:
                yield documents
                documents = []
        if documents:
            yield documents

    def events(self, count: int, tag: str, *, every_account: bool = False) -> list[tuple[bytes, bytes, str]]:
        """``count`` account events as (key, value, operator event id), ready to send: of random
        accounts, or of each account in turn (``every_account``)."""
        rng = random.Random(f"{self.seed}/{tag}")
        identities: dict[int, Identity] = {}
        out = []
        for n in range(count):
            account = n % self.accounts if every_account else rng.randrange(self.accounts)
            if account not in identities:
                identities[account] = identity(self.person_of_account(account), device=f"dev-{account}")
            kind, detail = KINDS[n % len(KINDS)]
            event = AccountEventOccurred(
                source="bench",
                operator_id=OPERATOR,
                payload=AccountEventPayload(
                    operator_event_id=f"{tag}-{n}",
                    account_id=f"acc-{account}",
                    kind=kind,
                    identity=identities[account],
                    **detail,
                ),
            )
            out.append((event.key(), event.model_dump_json().encode(), event.payload.operator_event_id))
        return out

    def probes(self, count: int) -> list[tuple[AccountEventOccurred, dict]]:
        """Parsed, hashed account events for timing the lookup alone: one in ten of an excluded person."""
        rng = random.Random(f"{self.seed}/probes")
        out = []
        for n in range(count):
            person = self.excluded_person(rng.randrange(self.exclusions)) if n % 10 == 0 else self.exclusions + rng.randrange(10**9)
            who = identity(person, device=f"dev-probe-{n}")
            event = AccountEventOccurred(
                source="bench",
                operator_id=OPERATOR,
                payload=AccountEventPayload(
                    operator_event_id=f"probe-{n}", account_id=f"acc-{n}", kind=AccountEventKind.LOGIN, identity=who
                ),
            )
            out.append((event, self.hasher.identifiers(who)))
        return out


async def insert_exclusion_documents(database, documents: list[dict]) -> None:
    """Bulk load of ready-made projection documents into blocking's collection (the benches' way to
    start with a million exclusions; tests/bench/test_workload.py holds them to what blocking reads)."""
    if documents:
        await database[EXCLUSIONS].insert_many(documents, ordered=False)
