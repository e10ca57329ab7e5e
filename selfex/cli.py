"""``selfex``: the one command line."""

import argparse
import asyncio
import importlib
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

from shared.settings import Settings

RESEALED = ("registration", "gateway", "notification", "forwarder")  # the services that keep sealed data, each resealed in its own database
# The services that store identifier hashes, in the order they are re-keyed: those that receive
# hashes first, registration (which makes them) last.
REHASHED = ("blocking", "gateway", "registration")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Delegated commands parse their own arguments, --help included.
    if argv[:1] == ["operator"]:
        return _delegate(OPERATORS, argv[1:])
    if argv[:1] == ["staff"]:
        return importlib.import_module(OPERATORS).staff_main(argv[1:])
    if argv[:1] == ["deadletter"]:
        return _delegate(DEAD_LETTERS, argv[1:])
    if argv[:1] == ["mail"]:
        return _delegate(MAIL, argv[1:])
    if argv[:1] == ["audit"]:
        return _delegate(AUDIT, argv[1:])
    if argv[:1] == ["forwarder"]:
        return _delegate(FORWARDER, argv[1:])
    if argv[:1] == ["bench"] and argv[1:2] and argv[1] in BENCHES:
        return _delegate(BENCHES[argv[1]], argv[2:])
    parser = argparse.ArgumentParser(prog="selfex", description="Selfex, the gambling self-exclusion platform.")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="start the whole stack (embedded servers unless real ones are named)")
    up.add_argument("--partitions", type=int, help="partitions per topic (default: SELFEX_TOPIC_PARTITIONS or 3)")
    up.add_argument("--demo-operator", action="store_true", help="create (or re-key) the demo operator and print its API key")

    infra = commands.add_parser("infra", help="the embedded Kafka-compatible broker and MongoDB-wire server")
    infra.add_argument("action", choices=["up"])

    from selfex.stack import SERVICES

    run = commands.add_parser("run", help="run one service against the servers the settings name")
    run.add_argument("service", choices=sorted(SERVICES))

    secrets = commands.add_parser("secrets", help="fresh secrets for a deployment")
    secrets.add_argument(
        "action",
        choices=["generate", "hash-key"],
        help="generate: every secret, as .env lines; hash-key: one new link for SELFEX_HASH_NEXT_SECRETS",
    )
    reencrypt = commands.add_parser("reencrypt", help="seal every stored secret again with the current encryption key (after a rotation)")
    reencrypt.add_argument("--service", choices=RESEALED, action="append", help="only this service's database (repeatable; default: each)")

    rehash = commands.add_parser("rehash", help="re-key every stored identifier hash with the newest hash key (after a rotation)")
    rehash.add_argument("--service", choices=REHASHED, action="append", help="only this service's database (repeatable; default: each)")

    docs = commands.add_parser("docs", help="generated documentation")
    docs.add_argument("kind", choices=["asyncapi"])
    docs.add_argument("--out", help="write to this file instead of standard output")

    # Subcommands whose arguments belong to the module that owns them (the benches, the gateway's operators).
    bench = commands.add_parser("bench", help="measure speed on the real broker and store", add_help=False)
    bench.add_argument("target", choices=sorted(BENCHES))
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    operator = commands.add_parser("operator", help="operators and their API keys", add_help=False)
    operator.add_argument("rest", nargs=argparse.REMAINDER)
    commands.add_parser("staff", help="register staff's and the regulator's API keys", add_help=False)
    commands.add_parser("audit", help="verify the audit log's chains; write and export signed checkpoints", add_help=False)
    commands.add_parser(
        "deadletter", help="list, show or replay what the dead-letter topic holds (--original opens the bytes with the key)", add_help=False
    )
    commands.add_parser("forwarder", help="deliveries to the register: status (pending, failed, lag), replay", add_help=False)
    commands.add_parser("mail", help="the mail the development stack's SMTP sink kept: list, show N", add_help=False)

    args = parser.parse_args(argv)
    if args.command == "bench":
        return _delegate(BENCHES[args.target], args.rest)
    if args.command == "operator":
        return _delegate(OPERATORS, args.rest)
    if args.command == "docs":
        return _docs(args.out)
    if args.command == "secrets":
        return _secrets() if args.action == "generate" else _hash_key()
    settings = Settings()
    if getattr(args, "partitions", None):
        settings = settings.model_copy(update={"topic_partitions": args.partitions})

    from shared.infra import InfrastructureError
    from shared.logging import configure_logging
    from shared.settings import InsecureSettingsError

    configure_logging(settings.log_level, settings.log_format, service="selfex")
    try:
        if args.command == "up":
            from selfex.stack import Stack

            return Stack(settings, demo_operator=args.demo_operator).run()
        if args.command == "infra":
            return _infra_up(settings)
        if args.command == "reencrypt":
            return asyncio.run(_reencrypt(settings, args.service or RESEALED))
        if args.command == "rehash":
            return asyncio.run(_rehash(settings, args.service or REHASHED))
        return _run_service(args.service, settings)
    except (InfrastructureError, InsecureSettingsError) as exc:
        print(f"selfex: {exc}", file=sys.stderr)
        return 2


# Commands whose module's ``main(argv) -> int`` takes the rest of the command line.
BENCHES = {
    "decisions": "bench.decisions",
    "http": "bench.http",
    "enforcement": "bench.enforcement",
    "audit": "bench.audit",
    "forwarder": "bench.forwarding",  # bench/forwarder.py is the decisions bench's bare forwarder, not this
}
OPERATORS = "services.gateway.operators"
DEAD_LETTERS = "selfex.deadletters"
MAIL = "selfex.mail"
AUDIT = "selfex.audit"
FORWARDER = "selfex.forwarder"


def _docs(out: str | None) -> int:
    import json

    from selfex.asyncapi import build

    text = json.dumps(build(), indent=2, sort_keys=True) + "\n"
    if out:
        with open(out, "w") as handle:
            handle.write(text)
    else:
        sys.stdout.write(text)
    return 0


def _hash_key() -> int:
    """A new hash key as a link of the chain ("id:secret"), to append to SELFEX_HASH_NEXT_SECRETS."""
    import secrets
    from datetime import date

    print(f"k{date.today():%Y%m%d}:{secrets.token_urlsafe(48)}")
    return 0


def _secrets() -> int:
    """Fresh values for every secret, as lines for ``.env`` (shown once: keep them in a secret store)."""
    import base64
    import secrets
    from datetime import date

    key_id = f"e{date.today():%Y%m%d}"
    print(f"SELFEX_HASH_SECRET={secrets.token_urlsafe(48)}")
    print(f"SELFEX_HASH_KEY_ID=k{date.today():%Y%m%d}")
    print(f"SELFEX_ENCRYPTION_KEYS={key_id}:{base64.b64encode(secrets.token_bytes(32)).decode()}")
    print(f"SELFEX_ENCRYPTION_KEY_ID={key_id}")
    print(f"SELFEX_AUDIT_QUERY_TOKEN={secrets.token_urlsafe(48)}")
    return 0


async def _reencrypt(settings: Settings, services: Sequence[str] = RESEALED) -> int:
    """Each service's own sealed data, sealed again with the current key, in that service's own
    database: run it once every replica has the new key (SELFEX_ENCRYPTION_KEYS lists old and new,
    SELFEX_ENCRYPTION_KEY_ID names the new); then the old key can leave the list."""
    from services.forwarder.repository import Deliveries
    from services.gateway.repository import MongoIdentityDocuments
    from services.notification.repository import MongoContacts
    from services.registration.repository import MongoExclusions
    from shared.crypto import Sealer
    from shared.store import create_client

    settings.require_secrets("selfex reencrypt")
    sealer = Sealer.from_settings(settings)
    resealers: dict[str, Any] = {
        "registration": MongoExclusions,
        "gateway": MongoIdentityDocuments,
        "notification": MongoContacts,
        "forwarder": Deliveries,
    }
    client = create_client(settings)
    try:
        counts = {service: await resealers[service](client[settings.database_for(service)]).reseal(sealer) for service in services}
    finally:
        await client.close()
    print(f"resealed with key {sealer.current}: " + ", ".join(f"{service} {count}" for service, count in counts.items()), flush=True)
    return 0


async def _rehash(settings: Settings, services: Sequence[str] = REHASHED) -> int:
    """Each service's stored identifier hashes carried on to the newest key of the chain, in that
    service's own database: run it once every replica holds the new key (SELFEX_HASH_NEXT_SECRETS).
    Until it has run, lookups ask for every form; after, the old forms are gone from the store."""
    from services.blocking.repository import MongoExclusionProjection, MongoSeenAccounts
    from services.gateway.repository import MongoLookup, MongoViews
    from services.registration.repository import MongoExclusions
    from shared.identity import Hasher
    from shared.store import create_client

    settings.require_secrets("selfex rehash")
    hasher = Hasher.from_settings(settings)
    if not hasher.rotating:
        print("selfex rehash: SELFEX_HASH_NEXT_SECRETS names no newer key: nothing to re-key", file=sys.stderr)
        return 2
    owners: dict[str, tuple[Any, ...]] = {
        "registration": (MongoExclusions,),
        "gateway": (MongoLookup, MongoViews),
        "blocking": (MongoExclusionProjection, MongoSeenAccounts),
    }
    client = create_client(settings)
    try:
        counts = {}
        for service in sorted(set(services), key=REHASHED.index):
            database = client[settings.database_for(service)]
            counts[service] = sum([await repository(database).rehash(hasher) for repository in owners[service]])
    finally:
        await client.close()
    print(f"re-keyed with hash key {hasher.key_id}: " + ", ".join(f"{service} {count}" for service, count in counts.items()), flush=True)
    return 0


def _delegate(module_name: str, argv: list[str]) -> int:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != "bench":
            raise
        print("selfex: the benchmarks are not installed here (the image leaves bench/ out); run them from a clone", file=sys.stderr)
        return 2
    return module.main(argv)


def _infra_up(settings: Settings) -> int:
    from shared.broker import ensure_topics
    from shared.infra import embedded_from_settings

    stop: list[int] = []
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda signum, _frame: stop.append(signum))
    with embedded_from_settings(settings) as infra:
        asyncio.run(ensure_topics(settings.model_copy(update={"kafka_bootstrap": infra.kafka_bootstrap})))
        print(f"Kafka (Tansu): {infra.kafka_bootstrap}\nMongoDB (nx-27017): {infra.mongo_uri}", flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        while not stop and infra.alive():
            time.sleep(0.2)
        return 0 if stop else 1


def _run_service(name: str, settings: Settings) -> int:
    from selfex.stack import SERVICES

    settings.require_secrets(name)
    module_name, kind = SERVICES[name]
    module = importlib.import_module(module_name)
    if kind == "http":
        import uvicorn

        host, port = module.address(settings) if hasattr(module, "address") else (settings.gateway_host, settings.gateway_port)
        uvicorn.run(
            module.create_app(settings),
            host=host,
            port=port,
            log_config=None,
            access_log=False,
        )
        return 0
    asyncio.run(module.create_app(settings).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
