"""``selfex deadletter show``: what the dead-letter topic holds, one JSON line per dead letter.

Each line names where the refused message was, which consumer refused it and why, and the digest
and size of its bytes; nothing personal is in it. ``--original`` adds the bytes themselves, opened
with the deployment's encryption key: on the entry topics they hold raw names, e-mails and ids, so
read them only to fix and replay a message, on the machine that holds the key, and keep them nowhere.
"""

import argparse
import asyncio
import json
import sys
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from shared import topics
from shared.broker import DeadLetters
from shared.crypto import SealError
from shared.events import MessageDeadLettered
from shared.settings import Settings

METADATA_SECONDS = 10.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="selfex deadletter", description="Read the dead-letter topic.")
    parser.add_argument("action", choices=["show"])
    parser.add_argument("--original", action="store_true", help="open each refused message's bytes with the encryption key")
    parser.add_argument("--consumer", help="only what this consumer refused (e.g. registration)")
    parser.add_argument("--limit", type=int, default=1000, help="at most this many, the newest (default 1000)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    settings = Settings()
    if args.original:
        settings.require_secrets("selfex deadletter show --original")
    for line in asyncio.run(show(settings, original=args.original, consumer=args.consumer, limit=args.limit)):
        print(json.dumps(line, sort_keys=True), flush=True)
    return 0


async def show(settings: Settings, *, original: bool = False, consumer: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
    """The dead letters on the topic now (up to its end as it stands at the call), oldest first."""
    opener = DeadLetters(settings, consumer="selfex-deadletter") if original else None
    lines = []
    for value in await _read_to_end(settings, settings.topic(topics.DEAD_LETTER)):
        try:
            dead_letter = MessageDeadLettered.model_validate_json(value)
        except ValidationError:
            lines.append({"unreadable": True, "size": len(value)})
            continue
        if consumer is not None and dead_letter.payload.consumer != consumer:
            continue
        lines.append(_line(dead_letter, opener))
    lines.sort(key=lambda line: line.get("at", ""))  # the partitions' letters, in the order they were parked
    return lines[-limit:] if limit > 0 else lines


def _line(dead_letter: MessageDeadLettered, opener: DeadLetters | None) -> dict[str, Any]:
    payload = dead_letter.payload
    line: dict[str, Any] = {
        "id": str(dead_letter.id),
        "at": dead_letter.occurred_at.isoformat(),
        **payload.model_dump(mode="json", include={"consumer", "topic", "partition", "offset", "error", "original_sha256"}),
        "original_size": payload.original_size,
        "original_truncated": payload.original_truncated,
    }
    if opener is not None:
        try:
            line["original"] = opener.open_original(dead_letter).decode("utf-8", errors="replace")
        except (SealError, KeyError, ValueError) as error:
            line["original_unopened"] = f"{type(error).__name__}: the key it was sealed with is not among SELFEX_ENCRYPTION_KEYS"
    return line


async def _read_to_end(settings: Settings, topic: str) -> list[bytes]:
    reader = AIOKafkaConsumer(bootstrap_servers=settings.kafka, enable_auto_commit=False)
    await reader.start()
    try:
        partitions = None
        deadline = asyncio.get_running_loop().time() + METADATA_SECONDS
        while not partitions:
            if topic in await reader.topics():  # asks the broker for fresh metadata
                partitions = reader.partitions_for_topic(topic)
            if not partitions:
                if asyncio.get_running_loop().time() > deadline:
                    return []  # no dead-letter topic: nothing was ever parked
                await asyncio.sleep(0.2)
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        reader.assign(assigned)
        await reader.seek_to_beginning(*assigned)
        ends = await reader.end_offsets(assigned)
        values: list[bytes] = []

        async def behind() -> bool:
            return any([await reader.position(p) < ends[p] for p in assigned])

        while await behind():
            for records in (await reader.getmany(timeout_ms=500, max_records=1000)).values():
                values += [r.value for r in records if r.offset < ends[TopicPartition(r.topic, r.partition)] and r.value is not None]
        return values
    finally:
        await reader.stop()
