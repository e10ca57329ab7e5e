"""``selfex operator add|list|revoke|rotate``: operators (one legal entity each) and their API keys;
``selfex staff add|list|revoke|rotate``: register staff's and the regulator's keys (tied to no operator).

A key carries roles (``access.Role``): an operator's keys ``operator`` and/or ``operator-compliance``
(``add NAME --roles operator-compliance --for OPERATOR`` gives an existing operator another key, e.g.
one for its compliance team alone); a staff key ``register-staff`` or ``regulator``. A key is printed
once, when it is made; the store keeps only its SHA-256. The store is the one the
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

from services.gateway.access import OPERATOR_ROLES, STAFF_ROLES, Role, key_hash, new_key, parse_roles, roles_of
from services.gateway.repository import INDEXES, MongoOperators, OperatorExistsError, OperatorRecord, UnknownOperatorError
from shared.broker import ensure_operator_topics
from shared.events import utcnow
from shared.logging import configure_logging
from shared.settings import Settings
from shared.store import open_database

DEMO_OPERATOR = "demo"
DEMO_KEY_FILE = "demo-operator.key"


@dataclass(frozen=True)
class Issued:
    operator: OperatorRecord
    key: str
    created: bool


async def add(operators: MongoOperators, name: str, roles, *, of: str | None = None) -> Issued:
    """A new operator and its key carrying ``roles`` (role names, or the scope names keys had before
    roles: check, exclude, compliance); ``of``: another key of that existing operator (its name) instead."""
    granted = roles_of(roles)
    if not granted or not granted <= OPERATOR_ROLES:
        raise ValueError(f"an operator's key carries {' and/or '.join(sorted(OPERATOR_ROLES))}")
    operator_id = None
    if of is not None:
        owner = await operators.by_name(of)
        if owner is None or owner.staff:
            raise UnknownOperatorError(f"no operator named {of!r}")
        operator_id = owner.operator_id
    key = new_key()
    record = await operators.add(name, (r.value for r in granted), key_hash(key), key[:8], utcnow(), operator_id=operator_id)
    return Issued(record, key, True)


async def add_staff(operators: MongoOperators, name: str, role: Role | str) -> Issued:
    """A register staff or regulator key, tied to no operator."""
    granted = roles_of([role])
    if len(granted) != 1 or not granted <= STAFF_ROLES:
        raise ValueError(f"a staff key carries one of {', '.join(sorted(STAFF_ROLES))}")
    key = new_key()
    record = await operators.add(name, (r.value for r in granted), key_hash(key), key[:8], utcnow(), staff=True)
    return Issued(record, key, True)


async def rotate(operators: MongoOperators, name: str, roles=None) -> Issued:
    key = new_key()
    record = await operators.replace_key(
        name, key_hash(key), key[:8], utcnow(), None if roles is None else (r.value for r in roles_of(roles))
    )
    return Issued(record, key, False)


async def demo_operator(settings: Settings) -> Issued:
    """The demo operator with both operator roles: created the first time, its key rotated every time after.

    Each ``make run`` prints a key that works; the one printed before stops working.
    """
    client, database = await open_database(settings, "gateway", INDEXES)
    try:
        operators = MongoOperators(database)
        try:
            issued = await add(operators, DEMO_OPERATOR, OPERATOR_ROLES)
        except OperatorExistsError:
            issued = await rotate(operators, DEMO_OPERATOR, OPERATOR_ROLES)
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


def main(argv: list[str] | None = None, *, staff: bool = False) -> int:
    """``selfex operator …``, or (``staff``) ``selfex staff …``."""
    kind = "staff" if staff else "operator"
    parser = argparse.ArgumentParser(
        prog=f"selfex {kind}",
        description="Register staff's and the regulator's API keys." if staff else "Operators and their API keys.",
    )
    commands = parser.add_subparsers(dest="action", required=True)
    if staff:
        add_command = commands.add_parser("add", help="a register staff or regulator key, printed once")
        add_command.add_argument("name")
        add_command.add_argument("--role", required=True, choices=sorted(STAFF_ROLES), help="register-staff or regulator")
    else:
        add_command = commands.add_parser("add", help="register an operator (or another key of one) and print its new API key (once)")
        add_command.add_argument("name")
        add_command.add_argument("--roles", default=None, help="comma-separated: operator, operator-compliance (default: operator)")
        add_command.add_argument(
            "--scopes", default=None, help=argparse.SUPPRESS
        )  # the names before roles: check,exclude → operator, compliance → operator-compliance
        add_command.add_argument(
            "--for", dest="of", metavar="OPERATOR", help="another key of this existing operator (by name), e.g. for its compliance team"
        )
    add_command.add_argument("--quiet", action="store_true", help="print only the key (for scripts)")
    commands.add_parser("list", help=f"every {kind} key: name, id, roles, key prefix, state")
    revoke_command = commands.add_parser("revoke", help="revoke a key (its record stays, for the audit log)")
    revoke_command.add_argument("name")
    rotate_command = commands.add_parser("rotate", help="a new key; the old one stops working")
    rotate_command.add_argument("name")
    rotate_command.add_argument("--quiet", action="store_true", help="print only the key (for scripts)")
    args = parser.parse_args(argv)
    roles: frozenset[Role] | None = None
    if args.action == "add":
        try:
            roles = frozenset({Role(args.role)}) if staff else parse_roles(args.roles or args.scopes or Role.OPERATOR.value)
        except ValueError as exc:
            parser.error(str(exc))
        if not args.name.strip() or len(args.name) > 200:
            parser.error("a key's name is 1 to 200 characters")
    settings = Settings()
    configure_logging("WARNING", settings.log_format, service="operators")  # to stderr, and quiet: stdout is the key
    try:
        return asyncio.run(_run(args, settings, roles, staff=staff))
    except (OperatorExistsError, UnknownOperatorError) as exc:
        print(f"selfex {kind}: {exc}", file=sys.stderr)
        return 1


def staff_main(argv: list[str] | None = None) -> int:
    """``selfex staff add NAME --role register-staff|regulator`` (and list, revoke, rotate)."""
    return main(argv, staff=True)


async def _run(args: argparse.Namespace, settings: Settings, roles, *, staff: bool = False) -> int:
    client, database = await open_database(settings, "gateway", INDEXES)
    try:
        operators = MongoOperators(database)
        if args.action in ("revoke", "rotate"):
            found = await operators.by_name(args.name)
            if found is not None and found.staff != staff:  # each command keeps to its own kind of key
                raise UnknownOperatorError(f"no {'staff key' if staff else 'operator'} named {args.name!r}")
        if args.action == "add" and staff:
            issued = await add_staff(operators, args.name.strip(), next(iter(roles)))
            _print_issued(issued, args.quiet)
        elif args.action == "add":
            issued = await add(operators, args.name.strip(), roles, of=args.of)
            if args.of is None:
                await ensure_operator_topics(settings, issued.operator.operator_id)
            _print_issued(issued, args.quiet)
        elif args.action == "rotate":  # makes its topics too, should they be missing (added before they were made, or the broker was away)
            issued = await rotate(operators, args.name)
            if not issued.operator.staff:
                await ensure_operator_topics(settings, issued.operator.operator_id)
            _print_issued(issued, args.quiet)
        elif args.action == "revoke":
            record = await operators.revoke(args.name, utcnow())
            print(f"{'Staff key' if staff else 'Operator'} {record.name!r} ({record.id}): key {record.key_prefix}… revoked.")
        else:
            records = [r for r in await operators.all() if r.staff == staff]
            print(f"{'NAME':24} {'ID':18} {'OPERATOR':18} {'ROLES':30} {'KEY':10} STATE")
            for record in records:
                state = f"revoked {record.revoked_at:%Y-%m-%d}" if record.revoked_at else "active"
                operator = "-" if record.staff else record.operator_id
                roles_text = ",".join(sorted(record.roles))
                print(f"{record.name[:24]:24} {record.id:18} {operator:18} {roles_text:30} {record.key_prefix + '…':10} {state}")
        return 0
    finally:
        await client.close()


def _print_issued(issued: Issued, quiet: bool) -> None:
    if quiet:
        print(issued.key)
        return
    record = issued.operator
    verb = "created" if issued.created else "has a new key"
    kind = "Staff key" if record.staff else "Operator"
    of = f", a key of operator {record.operator_id}" if not record.staff and record.operator_id != record.id else ""
    print(f"{kind} {record.name!r} {verb} (id {record.id}{of}, roles {','.join(sorted(record.roles))}).")
    print(f"API key (shown once; only its hash is stored): {issued.key}")
