"""``selfex forwarder status`` and ``selfex forwarder replay``: how far behind the register is, and
failed deliveries sent again.

    selfex forwarder status [--json] [--failed N]
    selfex forwarder replay [DELIVERY_ID ...]
"""

import argparse
import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from services.forwarder.repository import INDEXES, Deliveries, Status
from shared.settings import Settings
from shared.store import open_database


def _age(moment: datetime | None, now: datetime) -> float | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round((now - moment).total_seconds(), 1)


def report(status: Status, settings: Settings, now: datetime) -> dict[str, Any]:
    return {
        "register": settings.forwarder_register or None,
        "adapter": settings.forwarder_adapter if settings.forwarder_register else None,
        "pending": status.pending,
        "failed": status.failed,
        "delivered": status.delivered,
        "oldest_pending_age_seconds": _age(status.oldest_pending_at, now),
        "last_delivered_age_seconds": _age(status.last_delivered_at, now),
        "last_sync_age_seconds": _age(status.last_sync_at, now),
        "breaker": status.breaker,
    }


def _seconds(value: float | None) -> str:
    if value is None:
        return "never"
    if value < 120:
        return f"{value:.0f} s ago"
    if value < 7200:
        return f"{value / 60:.0f} min ago"
    return f"{value / 3600:.1f} h ago"


async def status(settings: Settings, failed: int) -> list[str]:
    client, database = await open_database(settings, "forwarder", INDEXES)
    try:
        deliveries = Deliveries(database)
        now = datetime.now(UTC)
        figures = report(await deliveries.status(), settings, now)
        failures = await deliveries.failures(failed) if failed else []
    finally:
        await client.close()
    lines = [
        f"register: {figures['register'] or 'none configured (SELFEX_FORWARDER_REGISTER): nothing is forwarded'}"
        + (f" ({figures['adapter']})" if figures["adapter"] else ""),
        f"pending: {figures['pending']}  failed: {figures['failed']}  delivered: {figures['delivered']}",
        "oldest pending: "
        + ("none" if figures["oldest_pending_age_seconds"] is None else f"{figures['oldest_pending_age_seconds']:.0f} s old"),
        f"last delivery: {_seconds(figures['last_delivered_age_seconds'])}",
        f"last successful sync: {_seconds(figures['last_sync_age_seconds'])}",
        f"circuit breaker: {figures['breaker'] or 'closed'}",
    ]
    lines += [
        f"failed {f['_id']} exclusion {f['exclusion_id']} after {f.get('attempts', 0)} attempts: {f.get('last_error')}" for f in failures
    ]
    return lines


async def replay(settings: Settings, delivery_ids: list[str]) -> int:
    client, database = await open_database(settings, "forwarder", INDEXES)
    try:
        return await Deliveries(database).replay(datetime.now(UTC), delivery_ids or None)
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="selfex forwarder", description="the forwarder's deliveries to the register, and its sync")
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("status", help="pending and failed deliveries, the oldest pending's age, the last successful sync's")
    show.add_argument("--json", action="store_true", help="one JSON object (ages in seconds)")
    show.add_argument("--failed", type=int, default=0, metavar="N", help="list up to N failed deliveries, with why")
    again = commands.add_parser(
        "replay", help="failed deliveries pending again with a fresh retry budget (the running forwarder sends them)"
    )
    again.add_argument("delivery_ids", nargs="*", help="only these (default: every failed delivery)")
    args = parser.parse_args(argv)
    settings = Settings()
    if args.command == "status":
        if args.json:

            async def figures() -> dict[str, Any]:
                client, database = await open_database(settings, "forwarder", INDEXES)
                try:
                    return report(await Deliveries(database).status(), settings, datetime.now(UTC))
                finally:
                    await client.close()

            print(json.dumps(asyncio.run(figures())))
        else:
            print("\n".join(asyncio.run(status(settings, args.failed))))
        return 0
    count = asyncio.run(replay(settings, args.delivery_ids))
    print(f"{count} failed deliveries pending again; the forwarder sends them now")
    return 0
