"""Retention: the audit log's oldest records of a class removed once they are due, by an explicit
command only (``selfex audit retain``), never by the service, and never silently.

Every chain is one topic's partition, so it holds one class of record (``CLASSES``). A run cuts, in
each chain whose class has a retention period, the oldest records that are all past it: a prefix of
the chain, never its newest record (the service goes on appending from it). Before anything goes:

1. the prefix is walked: a chain whose prefix was tampered with is not cut, and is named;
2. the run is itself appended to the log, in a chain of its own (``audit.retention``, never cut):
   who ran it, when, the periods, and per chain the last seq removed;
3. each cut is anchored: the last removed record's seq and hash, signed with the deployment's key
   (``audit_anchors``), so ``selfex audit verify`` walks the chain from there and still finds any
   record modified, deleted, inserted or reordered after it, and no one without the key can make a
   chain look cut on purpose.

Only then are the records deleted. A run cut short leaves records the anchor already covers; the
next run deletes them.
"""

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from services.audit.chain import Tail, Walk, chain_of, position_of, tail_of
from services.audit.checkpoints import Signer
from services.audit.repository import ANCHORS, LOG, Entry, MongoAuditLog
from services.audit.verifier import Report, signed_anchors
from shared import topics

RETENTION_TOPIC = "audit.retention"  # the runs themselves: a chain of their own, kept for ever
RETENTION_TYPE = "audit.retention_applied"

# Each record class and the topics whose records it holds (operators' own topics by kind).
CLASSES: dict[str, tuple[str, ...]] = {
    "exclusions": (
        topics.EXCLUSION_COMMANDS,
        topics.EXCLUSION_LIFECYCLE,
        topics.VERIFICATION_INPUTS,
        topics.VERIFICATION_EVENTS,
        topics.PERSON_CONTACTS,
    ),
    "decisions": topics.PER_OPERATOR,
    "notifications": (topics.NOTIFICATION_REQUESTS, topics.NOTIFICATION_DELIVERIES),
    "requests": (topics.GATEWAY_REQUESTS,),
    "dead_letters": (topics.DEAD_LETTER,),
    "forwarding": (topics.FORWARDING_EVENTS,),
}
# Records of a topic no class names (and the runs themselves) are kept for ever.
KEPT = "kept"


class RetentionError(ValueError):
    """A retention setting that names no class, or a run that cannot be signed."""


def class_of(topic: str, prefix: str) -> str:
    """The record class of a full topic name (with the deployment's prefix)."""
    name = topic.removeprefix(prefix)
    if (per_operator := re.fullmatch(r"operator\.[A-Za-z0-9_-]+\.([a-z_]+)", name)) is not None:
        name = per_operator.group(1)
    return next((cls for cls, names in CLASSES.items() if name in names), KEPT)


def periods(days: Mapping[str, int]) -> dict[str, int]:
    """The retention period (days; 0: for ever) of each class, checked."""
    if unknown := sorted(set(days) - set(CLASSES)):
        raise RetentionError(f"SELFEX_AUDIT_RETENTION_DAYS names no record class: {', '.join(unknown)} (classes: {', '.join(CLASSES)})")
    if negative := sorted(cls for cls, n in days.items() if n < 0):
        raise RetentionError(f"SELFEX_AUDIT_RETENTION_DAYS: a period is 0 (kept for ever) or more days: {', '.join(negative)}")
    return {cls: int(days.get(cls, 0)) for cls in CLASSES}


@dataclass
class Cut:
    """One chain's prefix that is due: its records through ``through`` (seq) go."""

    chain: str
    record_class: str
    after: int  # the seq the chain started after (its previous anchor; 0: its first record)
    through: Tail
    count: int

    def describe(self) -> dict[str, Any]:
        return {
            "chain": self.chain,
            "class": self.record_class,
            "from_seq": self.after + 1,
            "through_seq": self.through.seq,
            "records": self.count,
        }


@dataclass
class Run:
    """What a retention run found due, what it refused to cut and why, and what it removed."""

    run_id: str
    at: datetime
    periods: dict[str, int]
    cuts: list[Cut] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    deleted: int = 0
    # Records an earlier run anchored (and audited) but was stopped before deleting: chain -> anchor seq.
    leftovers: dict[str, int] = field(default_factory=dict)

    def describe(self, *, dry_run: bool = False) -> str:
        due = sum(c.count for c in self.cuts)
        lines = [
            f"{'would remove' if dry_run else 'removed'} {due if dry_run else self.deleted} records in {len(self.cuts)} chains"
            f" (run {self.run_id}; periods in days, 0 = kept: " + ", ".join(f"{cls} {days}" for cls, days in self.periods.items()) + ")"
        ]
        lines += [f"  {c.chain} ({c.record_class}): seq {c.after + 1} to {c.through.seq}, {c.count} records" for c in self.cuts]
        lines += [
            f"  {chain}: records through seq {seq}, anchored by an earlier run, still to delete" for chain, seq in self.leftovers.items()
        ]
        lines += [f"  NOT CUT: {reason}" for reason in self.refused]
        return "\n".join(lines)


def _moment(value: object) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None  # no offset: not a moment to judge by


async def _due(log: MongoAuditLog, chain: str, anchor: Tail | None, cutoff: datetime) -> tuple[Tail | None, int, str | None]:
    """The last record of the chain's due prefix (its oldest records, all before ``cutoff``, never
    its newest), how many there are, and what is wrong with the prefix if it was tampered with."""
    walk = Walk(chain, anchor)
    last: dict[str, Any] | None = None  # the newest record that may go
    held: dict[str, Any] | None = None  # the newest due record seen: it goes only if a record follows it
    count = 0
    newer_stays = False
    async for document in log.records(chain, after=anchor.seq if anchor else 0):
        if walk.feed(document) is not None:
            break
        moment = _moment(document.get("occurred_at"))
        if moment is None or moment >= cutoff:
            newer_stays = True  # fed to the walk too: the prefix must link to what stays
            break
        if held is not None:
            last, count = held, count + 1
        held = document
    else:
        walk.end()
    if walk.finding is not None:
        return None, 0, walk.finding.describe()
    if newer_stays and held is not None:
        last, count = held, count + 1
    return (tail_of(last), count, None) if last is not None else (None, 0, None)


async def plan(database: AsyncDatabase, days: Mapping[str, int], now: datetime, prefix: str, public_key: str | None = None) -> Run:
    """What is due now (nothing is removed): each chain's due prefix, checked."""
    log = MongoAuditLog(database)
    run = Run(run_id=str(uuid.uuid4()), at=now, periods=periods(days))
    report = Report()
    anchors = await signed_anchors(log, public_key, report)
    run.refused += report.problems
    for chain in await log.chains():
        topic, _ = position_of(chain)
        record_class = class_of(topic, prefix)
        keep_days = run.periods.get(record_class, 0)
        if record_class == KEPT or keep_days == 0:
            continue
        anchor = anchors.get(chain)
        if anchor is not None:
            topic_name, partition = position_of(chain)
            if await database[LOG].count_documents({"topic": topic_name, "partition": partition, "seq": {"$lte": anchor.seq}}, limit=1):
                run.leftovers[chain] = anchor.seq
        through, count, problem = await _due(log, chain, anchor, now - timedelta(days=keep_days))
        if problem is not None:
            run.refused.append(f"{chain}: {problem}")
        elif through is not None:
            run.cuts.append(Cut(chain, record_class, anchor.seq if anchor else 0, through, count))
    return run


async def apply(database: AsyncDatabase, run: Run, signer: Signer, *, prefix: str, writer: str) -> Run:
    """Audit the run, anchor each cut with a signature, then delete what is due."""
    log = MongoAuditLog(database)
    for chain, seq in run.leftovers.items():  # audited and anchored by the run that was stopped
        chain_topic, partition = position_of(chain)
        gone = await database[LOG].delete_many({"topic": chain_topic, "partition": partition, "seq": {"$lte": seq}})
        run.deleted += gone.deleted_count
    if run.cuts:
        topic = f"{prefix}{RETENTION_TOPIC}"
        tail = await log.tail(chain_of(topic, 0))
        at = run.at.isoformat(timespec="milliseconds")
        event = {
            "id": run.run_id,
            "type": RETENTION_TYPE,
            "version": 1,
            "occurred_at": at,
            "source": writer,
            "correlation_id": None,
            "causation_id": None,
            "subject": None,
            "operator_id": None,
            "payload": {
                "periods_days": run.periods,
                "cuts": [c.describe() for c in run.cuts],
                "records": sum(c.count for c in run.cuts),
                "key_id": signer.key_id,
            },
        }
        await log.append([Entry(topic, 0, tail.offset + 1, at, event)])
        anchors = database[ANCHORS]
        for cut in run.cuts:
            await anchors.insert_one(signer.anchor(cut.chain, cut.through, run.at, writer, run.run_id))
        for cut in run.cuts:
            chain_topic, partition = position_of(cut.chain)
            gone = await database[LOG].delete_many({"topic": chain_topic, "partition": partition, "seq": {"$lte": cut.through.seq}})
            run.deleted += gone.deleted_count
    return run
