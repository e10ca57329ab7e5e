"""The hash chains, as plain functions: how a record is written down and hashed, and how a chain is
walked to find the first record modified, deleted, inserted or reordered.

Each Kafka partition is a chain of its own (``chain`` = ``topic/partition``), so replicas and
partitions append in parallel. A record's ``body`` is the canonical JSON of what it says (chain,
position, when it was recorded, the redacted event); its ``hash`` is SHA-256 over the previous
record's hash and the body, so anyone with the records can check them: no key is needed.
"""

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from services.audit.summaries import query_fields

GENESIS = "0" * 64
# What a record repeats of its event outside its body, flat (the store reads a flat document
# fastest), for queries; the walk checks that they agree with the body.
SUMMARY_FIELDS = ("type", "occurred_at", "subject", "operator_id")


@dataclass(frozen=True)
class Tail:
    """Where a chain ends: the last record's position in the chain, its Kafka offset and hash."""

    seq: int = 0
    offset: int = -1
    hash: str = GENESIS


def chain_of(topic: str, partition: int) -> str:
    return f"{topic}/{partition}"


def position_of(chain: str) -> tuple[str, int]:
    """(topic, partition) of a chain's name (a Kafka topic name has no '/')."""
    topic, _, partition = chain.rpartition("/")
    return topic, int(partition)


def canonical(content: dict[str, Any]) -> str:
    """Sorted keys, no spaces, ASCII only: the same text from the same content, wherever it is made."""
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def record_hash(previous: str, body: str) -> str:
    return hashlib.sha256(f"{previous}{body}".encode()).hexdigest()


def record(tail: Tail, *, topic: str, partition: int, offset: int, recorded_at: str, event: dict[str, Any]) -> dict[str, Any]:
    """The next record of the chain that ends at ``tail``; ``event`` is already redacted."""
    chain = chain_of(topic, partition)
    body = canonical({"chain": chain, "topic": topic, "partition": partition, "offset": offset, "recorded_at": recorded_at, "event": event})
    return {
        "_id": str(event["id"]),
        "topic": topic,
        "partition": partition,
        "seq": tail.seq + 1,
        "offset": offset,
        **{name: event.get(name) for name in SUMMARY_FIELDS},
        **query_fields(event),
        "body": body,
        "prev_hash": tail.hash,
        "hash": record_hash(tail.hash, body),
    }


def tail_of(document: dict[str, Any] | None) -> Tail:
    return Tail(document["seq"], document["offset"], document["hash"]) if document else Tail()


@dataclass(frozen=True)
class Finding:
    """The first thing wrong with a chain: which record, and what was done to it."""

    chain: str
    seq: int
    record_id: str
    what: str  # modified | deleted | inserted | reordered
    detail: str

    def describe(self) -> str:
        return f"{self.what}: chain {self.chain} at seq {self.seq} (record {self.record_id}): {self.detail}"


def _consistent(document: dict[str, Any]) -> bool:
    """The record's hash is its body's, and what it repeats outside the body is what the body says."""
    body = document.get("body")
    if not isinstance(body, str) or record_hash(str(document.get("prev_hash")), body) != document.get("hash"):
        return False
    try:
        said = json.loads(body)
    except ValueError:
        return False
    event = said.get("event") or {}
    return (
        document.get("_id") == str(event.get("id"))
        and all(document.get(name) == said.get(name) for name in ("topic", "partition", "offset"))
        and all(document.get(name) == event.get(name) for name in SUMMARY_FIELDS)
        and _queried_as_said(document, event)
    )


def _queried_as_said(document: dict[str, Any], event: dict[str, Any]) -> bool:
    """The query fields (``refs``, ``facts``) are what the body gives; a record written before they
    existed has neither, and is checked by its body alone."""
    if "refs" not in document:
        return "facts" not in document and "at" not in document
    expected = query_fields(event)
    return all(document.get(name) == expected.get(name) for name in ("at", "refs", "facts"))


class Walk:
    """One chain's records, fed in ``seq`` order, checked as they come: the first finding, or None.

    A record whose content no longer gives its hash was modified; a record the next one does not
    link to, while it links to the one before, was inserted; two neighbours each linking to the
    other's place were reordered; a link to nothing present means records were deleted (a gap in
    ``seq``), or, with no gap, that the record before was rewritten with a hash of its own.
    """

    def __init__(self, chain: str, anchor: Tail | None = None) -> None:
        self.chain = chain
        # Where the chain starts after retention cut its oldest records: the last record removed
        # (its seq and hash, from a signed anchor); None: from the genesis hash.
        self.anchor = anchor
        self.count = 0
        self.finding: Finding | None = None
        self._previous: dict[str, Any] | None = None
        self._current: dict[str, Any] | None = None

    def feed(self, document: dict[str, Any]) -> Finding | None:
        """Take the next record; returns the first finding once there is one."""
        if self.finding is None:
            if self._current is not None:
                self.finding = self._check(self._current, document)
                self._previous = self._current
            self._current = document
            self.count += 1
        return self.finding

    def end(self) -> Finding | None:
        if self.finding is None and self._current is not None:
            self.finding = self._check(self._current, None)
            self._previous, self._current = self._current, None
        return self.finding

    def _check(self, current: dict[str, Any], following: dict[str, Any] | None) -> Finding | None:
        previous = self._previous
        anchor = self.anchor
        expected = previous["hash"] if previous else anchor.hash if anchor else GENESIS
        seq = current.get("seq")

        def found(what: str, detail: str, at: dict[str, Any] = current) -> Finding:
            return Finding(self.chain, at.get("seq", -1), str(at.get("_id")), what, detail)

        if current.get("prev_hash") != expected:
            if following is not None and current.get("prev_hash") == following.get("hash") and following.get("prev_hash") == expected:
                return found("reordered", f"it links to the record after it (seq {following.get('seq')}), which links to the one before")
            if following is not None and following.get("prev_hash") == expected:
                return found("inserted", "the record after it links past it, to the one before")
            if previous is None and anchor is not None:
                if isinstance(seq, int) and seq > anchor.seq + 1:
                    return found("deleted", f"seq {anchor.seq + 1} to {seq - 1}, after the retention anchor at seq {anchor.seq}, are gone")
                return found("modified", f"the chain's first record does not link to the retention anchor at seq {anchor.seq}")
            if previous is None:
                return found("deleted", "the chain's first record does not start from the genesis hash: records before it are gone")
            if isinstance(seq, int) and seq > previous["seq"] + 1:
                return found("deleted", f"it links to no record present; seq {previous['seq'] + 1} to {seq - 1} are gone")
            return found("modified", "its hash was rewritten: the next record does not link to it", at=previous)
        if following is not None and following.get("prev_hash") == expected and following.get("prev_hash") != current.get("hash"):
            return found("inserted", "the record after it links past it, to the one before")
        if not _consistent(current):
            return found("modified", "its content no longer gives its hash, or its summary differs from its content")
        return None


def walk(chain: str, documents: Iterable[dict[str, Any]], anchor: Tail | None = None) -> tuple[int, Finding | None]:
    """Walk one chain's records in ``seq`` order (after ``anchor``, if retention cut the chain there):
    (records seen, the first finding or None)."""
    checker = Walk(chain, anchor)
    for document in documents:
        if checker.feed(document) is not None:
            break
    return checker.count, checker.end()
