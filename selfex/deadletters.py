"""``selfex deadletter list | show | replay``: what the dead-letter topic holds, and sending a fixed
message back.

``list``: a JSON line per topic and consumer, with how many were parked there and when the oldest
and newest were. ``show``: one JSON line per dead letter. ``replay ID``: the message, fixed by a
person (``--file``, ``-`` for standard input) or as it was (``--original``, after the consumer's bug
was fixed), sent back to the topic it was refused on, under its key, with a header naming the dead
letter; the line printed says where it went.

Each line names where the refused message was, which consumer refused it and why, and the digest
and size of its bytes; nothing personal is in it. ``--original`` adds the bytes themselves, opened
with the deployment's encryption key: on the entry topics they hold raw names, e-mails and ids, so
read them only to fix and replay a message, on the machine that holds the key, and keep them nowhere.
"""

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import ValidationError

from shared import topics
from shared.broker import DeadLetters
from shared.crypto import SealError
from shared.events import MessageDeadLettered
from shared.settings import Settings

METADATA_SECONDS = 10.0
REPLAY_HEADER = "selfex-replay-of"  # on a replayed message: the dead letter it came from


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="selfex deadletter", description="Read the dead-letter topic.")
    parser.add_argument("action", choices=["list", "show", "replay"])
    parser.add_argument("id", nargs="?", help="replay: the dead letter's id (as show prints it)")
    replayed = parser.add_mutually_exclusive_group()
    replayed.add_argument("--file", help="replay: the fixed message's bytes from this file (- for standard input)")
    replayed.add_argument(
        "--original", action="store_true", help="show: open each refused message's bytes with the key; replay: send them as they were"
    )
    parser.add_argument("--consumer", help="only what this consumer refused (e.g. registration)")
    parser.add_argument("--limit", type=int, default=1000, help="at most this many, the newest (default 1000)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    settings = Settings()
    if args.action == "replay":
        if not args.id or not (args.file or args.original):
            parser.error("replay needs the dead letter's id and either --file FILE or --original")
        if args.original:
            settings.require_secrets("selfex deadletter replay --original")
        fixed = None
        if args.file:
            fixed = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
        try:
            lines = [asyncio.run(replay(settings, args.id, fixed))]
        except ReplayError as error:
            print(f"selfex deadletter replay: {error}", file=sys.stderr)
            return 2
    elif args.action == "list":
        lines = asyncio.run(counts(settings))
    else:
        if args.original:
            settings.require_secrets("selfex deadletter show --original")
        lines = asyncio.run(show(settings, original=args.original, consumer=args.consumer, limit=args.limit))
    for line in lines:
        print(json.dumps(line, sort_keys=True), flush=True)
    return 0


class ReplayError(Exception):
    """The dead letter named cannot be replayed (not found, or its sealed bytes are not whole)."""


async def counts(settings: Settings) -> list[dict[str, Any]]:
    """Per topic and consumer: how many dead letters, the oldest's and the newest's time."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for dead_letter in await _dead_letters(settings):
        if dead_letter is None:
            continue
        payload, at = dead_letter.payload, dead_letter.occurred_at.isoformat()
        group = groups.setdefault((payload.topic, payload.consumer), {"topic": payload.topic, "consumer": payload.consumer, "count": 0})
        group["count"] += 1
        group["oldest"] = min(group.get("oldest", at), at)
        group["newest"] = max(group.get("newest", at), at)
    return sorted(groups.values(), key=lambda group: (group["topic"], group["consumer"]))


async def replay(settings: Settings, dead_letter_id: str, fixed: bytes | None) -> dict[str, Any]:
    """Send ``fixed`` (or, when None, the original as it was) back to the dead letter's topic."""
    found = [d for d in await _dead_letters(settings) if d is not None and str(d.id) == dead_letter_id]
    if not found:
        raise ReplayError(f"no dead letter {dead_letter_id} on {settings.topic(topics.DEAD_LETTER)}")
    payload = found[0].payload
    if fixed is None:
        if payload.original_truncated:
            raise ReplayError("only the start of the original was kept: replay a fixed copy with --file")
        try:
            fixed = DeadLetters(settings, consumer="selfex-deadletter").open_original(found[0])
        except (SealError, KeyError, ValueError) as error:
            raise ReplayError(f"{type(error).__name__}: the key it was sealed with is not among SELFEX_ENCRYPTION_KEYS") from None
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka, acks="all")
    await producer.start()
    try:
        sent = await producer.send_and_wait(
            payload.topic,
            fixed,
            key=payload.key.encode() if payload.key is not None else None,
            headers=[(REPLAY_HEADER, dead_letter_id.encode())],
        )
    finally:
        await producer.stop()
    return {"replayed": dead_letter_id, "topic": sent.topic, "partition": sent.partition, "offset": sent.offset, "size": len(fixed)}


async def _dead_letters(settings: Settings) -> list[MessageDeadLettered | None]:
    """Every dead letter on the topic now; None for a record that is not one."""
    letters: list[MessageDeadLettered | None] = []
    for value in await _read_to_end(settings, settings.topic(topics.DEAD_LETTER)):
        try:
            letters.append(MessageDeadLettered.model_validate_json(value))
        except ValidationError:
            letters.append(None)
    return letters


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
