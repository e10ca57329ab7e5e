"""``selfex operator add|list|revoke|rotate``: operators (one legal entity each) and their API keys.

A key is printed once, when it is made; the store keeps only its SHA-256. The store is the one the
settings name (``SELFEX_MONGO_URI``; by default the embedded one ``selfex up`` starts). Adding an
operator also makes its own Kafka topics (``operator.{id}.account_events``, ``.decisions``,
``.enforcement``) on the broker the settings name.
"""

import argparse
import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from shared.broker import ensure_operator_topics
from shared.events import utcnow
from shared.logging import configure_logging
from shared.settings import Settings
from shared.store import open_database

from services.gateway.access import ALL_PERMISSIONS, key_hash, new_key, parse_permissions
from services.gateway.repository import INDEXES, MongoOperators, OperatorExistsError, OperatorRecord, UnknownOperatorError

DEMO_OPERATOR = "demo"
DEMO_KEY_FILE = "demo-operator.key"


@dataclass(frozen=True)
class Issued:
    operator: OperatorRecord
    key: str
    created: bool


async def add(operators: MongoOperators, name: str, scopes) -> Issued:
    key = new_key()
    record = await operators.add(name, (str(s) for s in scopes), key_hash(key), key[:8], utcnow())
    return Issued(record, key, True)


async def rotate(operators: MongoOperators, name: str, scopes=None) -> Issued:
    key = new_key()
    record = await operators.replace_key(name, key_hash(key), key[:8], utcnow(), None if scopes is None else (str(s) for s in scopes))
    return Issued(record, key, False)


async def demo_operator(settings: Settings) -> Issued:
    """The demo operator with every scope: created the first time, its key rotated every time after.

    Each ``make run`` prints a key that works; the one printed before stops working.
    """
    client, database = await open_database(settings, "gateway", INDEXES)
    try:
        operators = MongoOperators(database)
        try:
            issued = await add(operators, DEMO_OPERATOR, ALL_PERMISSIONS)
        except OperatorExistsError:
            issued = await rotate(operators, DEMO_OPERATOR, ALL_PERMISSIONS)
        await ensure_operator_topics(settings, issued.operator.id)
        return issued
    finally:
        await client.close()


def write_demo_key(settings: Settings, key: str) -> Path:
    """The demo key, also in a file, so the README's examples can read it: ``$(cat .selfex/demo-operator.key)``."""
    path = Path(settings.data_dir) / DEMO_KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(key + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="selfex operator", description="Operators and their API keys.")
    commands = parser.add_subparsers(dest="action", required=True)
    add_command = commands.add_parser("add", help="register an operator and print its new API key (once)")
    add_command.add_argument("name")
    add_command.add_argument("--scopes", default="check", help="comma-separated: check, exclude, compliance (default: check)")
    add_command.add_argument("--quiet", action="store_true", help="print only the key (for scripts)")
    commands.add_parser("list", help="every operator: name, id, scopes, key prefix, state")
    revoke_command = commands.add_parser("revoke", help="revoke an operator's key (its record stays, for the audit log)")
    revoke_command.add_argument("name")
    rotate_command = commands.add_parser("rotate", help="a new key for an operator; the old one stops working")
    rotate_command.add_argument("name")
    rotate_command.add_argument("--quiet", action="store_true", help="print only the key (for scripts)")
    args = parser.parse_args(argv)
    if args.action == "add":
        try:
            scopes = parse_permissions(args.scopes)
        except ValueError as exc:
            parser.error(str(exc))
        if not args.name.strip() or len(args.name) > 200:
            parser.error("an operator's name is 1 to 200 characters")
    settings = Settings()
    configure_logging("WARNING", settings.log_format, service="operators")  # to stderr, and quiet: stdout is the key
    try:
        return asyncio.run(_run(args, settings, scopes if args.action == "add" else None))
    except (OperatorExistsError, UnknownOperatorError) as exc:
        print(f"selfex operator: {exc}", file=sys.stderr)
        return 1


async def _run(args: argparse.Namespace, settings: Settings, scopes) -> int:
    client, database = await open_database(settings, "gateway", INDEXES)
    try:
        operators = MongoOperators(database)
        if args.action == "add":
            issued = await add(operators, args.name.strip(), scopes)
            await ensure_operator_topics(settings, issued.operator.id)
            _print_issued(issued, args.quiet)
        elif args.action == "rotate":  # makes its topics too, should they be missing (added before they were made, or the broker was away)
            issued = await rotate(operators, args.name)
            await ensure_operator_topics(settings, issued.operator.id)
            _print_issued(issued, args.quiet)
        elif args.action == "revoke":
            record = await operators.revoke(args.name, utcnow())
            print(f"Operator {record.name!r} ({record.id}): key {record.key_prefix}… revoked.")
        else:
            records = await operators.all()
            print(f"{'NAME':24} {'ID':16} {'SCOPES':28} {'KEY':10} STATE")
            for record in records:
                state = f"revoked {record.revoked_at:%Y-%m-%d}" if record.revoked_at else "active"
                print(f"{record.name[:24]:24} {record.id:16} {','.join(sorted(record.scopes)):28} {record.key_prefix + '…':10} {state}")
        return 0
    finally:
        await client.close()


def _print_issued(issued: Issued, quiet: bool) -> None:
    if quiet:
        print(issued.key)
        return
    record = issued.operator
    verb = "created" if issued.created else "has a new key"
    print(f"Operator {record.name!r} {verb} (id {record.id}, scopes {','.join(sorted(record.scopes))}).")
    print(f"API key (shown once; only its hash is stored): {issued.key}")
