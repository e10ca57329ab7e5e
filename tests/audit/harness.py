"""What the audit tests share: records appended as the service appends them, and the store tampered with directly."""

import uuid

from services.audit.chain import position_of
from services.audit.repository import INDEXES, LOG, Entry, MongoAuditLog
from shared.store import ensure_indexes

RECORDED_AT = "2026-01-31T12:00:00.000+00:00"


def entry(topic: str, partition: int, offset: int, event_id: str | None = None) -> Entry:
    event = {
        "id": event_id or str(uuid.uuid4()),
        "type": "decision.made",
        "version": 1,
        "occurred_at": RECORDED_AT,
        "source": "blocking",
        "subject": None,
        "operator_id": "op-1",
        "correlation_id": None,
        "payload": {"outcome": "ALLOW", "n": offset},
    }
    return Entry(topic, partition, offset, RECORDED_AT, event)


async def filled(database, *, chains: int = 2, per_chain: int = 10) -> MongoAuditLog:
    """A log of ``chains`` partitions of ``per_chain`` records each, appended in batches of a few."""
    await ensure_indexes(database, INDEXES)
    log = MongoAuditLog(database)
    entries = [entry("t.decisions", partition, offset) for offset in range(per_chain) for partition in range(chains)]
    for start in range(0, len(entries), 7):
        await log.append(entries[start : start + 7])
    return log


async def at(database, chain: str, seq: int) -> dict:
    topic, partition = position_of(chain)
    return await database[LOG].find_one({"topic": topic, "partition": partition, "seq": seq})
