"""``selfex audit``: check the audit log and keep its checkpoints.

- ``selfex audit verify [--against FILE]`` walks every chain and prints the first record modified,
  deleted, inserted or reordered in each, or "intact" with the count and time (exit 1 if not);
  with ``--against``, each checkpoint in FILE must be signed by the deployment's key and each
  chain must still reach the head it names, unchanged.
- ``selfex audit checkpoint write`` signs the heads of every chain now (needs the signing key).
- ``selfex audit checkpoint export --out FILE`` writes every stored checkpoint, one JSON line each,
  for a regulator to keep.
- ``selfex audit key`` prints a fresh signing key.
- ``selfex audit retain [--dry-run]`` removes the records past their class's retention period
  (``SELFEX_AUDIT_RETENTION_DAYS``): the run is itself appended to the log and each cut chain is
  anchored with a signature first, so ``verify`` still walks every chain (services/audit/retention.py).
"""

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from services.audit.checkpoints import Signer, generate_key
from services.audit.repository import MongoAuditLog
from services.audit.retention import RetentionError, apply, periods, plan
from services.audit.verifier import verify
from shared.events import utcnow
from shared.settings import InsecureSettingsError, Settings
from shared.store import create_client


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="selfex audit", description="Check the audit log and keep its checkpoints.")
    actions = parser.add_subparsers(dest="action", required=True)
    check = actions.add_parser("verify", help="walk every chain; exit 1 on the first record tampered with")
    check.add_argument("--against", type=Path, help="checkpoints exported earlier (JSON lines): the heads must still be there")
    check.add_argument("--public-key", help="the deployment's public key (base64) the checkpoints must be signed with")
    checkpoint = actions.add_parser("checkpoint", help="write or export the signed checkpoints of the chains' heads")
    checkpoint.add_argument("what", choices=["write", "export"])
    checkpoint.add_argument("--out", type=Path, help="export: the file to write (default: standard output)")
    actions.add_parser("key", help="print a fresh signing key, as SELFEX_AUDIT_SIGNING_KEY takes it")
    retain = actions.add_parser(
        "retain", help="remove the records past their class's retention period (audited, anchored; needs a store user that may delete)"
    )
    retain.add_argument("--dry-run", action="store_true", help="say what is due, remove nothing")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.action == "key":
        print(f"SELFEX_AUDIT_SIGNING_KEY={generate_key()}")
        return 0
    settings = Settings()
    try:
        if args.action == "verify":
            kept = [json.loads(line) for line in args.against.read_text().splitlines() if line.strip()] if args.against else []
            return asyncio.run(_verify(settings, kept, args.public_key))
        if args.action == "retain":
            return asyncio.run(_retain(settings, dry_run=args.dry_run))
        if args.what == "write":
            return asyncio.run(_write(settings))
        text = asyncio.run(_export(settings))
        if args.out is None:
            sys.stdout.write(text)
        else:
            args.out.write_text(text)
            print(f"{text.count(chr(10))} checkpoints written to {args.out}", file=sys.stderr)
        return 0
    except (InsecureSettingsError, RetentionError) as error:
        print(f"selfex audit: {error}", file=sys.stderr)
        return 2


async def _with_log(settings: Settings, work) -> Any:
    client = create_client(settings)
    try:
        return await work(MongoAuditLog(client[settings.database_for("audit")]))
    finally:
        await client.close()


async def _verify(settings: Settings, kept: list[dict[str, Any]], public_key: str | None) -> int:
    report = await _with_log(settings, lambda log: verify(log, against=kept, public_key=public_key))
    print(report.describe(), flush=True)
    return 0 if report.intact else 1


async def _write(settings: Settings) -> int:
    signer = Signer.from_settings(settings, "selfex audit checkpoint")
    if signer is None:
        print("selfex audit: SELFEX_AUDIT_SIGNING_KEY is not set: nothing to sign with", file=sys.stderr)
        return 2

    async def write(log: MongoAuditLog) -> int:
        tails = {chain: await log.tail(chain) for chain in await log.chains()}
        await log.save_checkpoint(signer.checkpoint(tails, utcnow(), "selfex audit checkpoint write"))
        return len(tails)

    print(f"checkpoint written: {await _with_log(settings, write)} chain heads, key {signer.key_id}", flush=True)
    return 0


async def _export(settings: Settings) -> str:
    """Every stored checkpoint, one JSON line each, oldest first."""
    checkpoints = await _with_log(settings, lambda log: log.checkpoints())
    return "".join(json.dumps(c, sort_keys=True, default=str) + "\n" for c in checkpoints)


async def _retain(settings: Settings, *, dry_run: bool) -> int:
    """Remove what is due: audited in the log, each cut anchored with a signature, then deleted."""
    periods(settings.audit_retention_days)  # a class that does not exist stops it before anything is read
    signer = Signer.from_settings(settings, "selfex audit retain")
    if signer is None and not dry_run:
        raise RetentionError("SELFEX_AUDIT_SIGNING_KEY is not set: a cut must be anchored with a signature, so nothing is removed")
    client = create_client(settings)
    try:
        database = client[settings.database_for("audit")]
        run = await plan(database, settings.audit_retention_days, utcnow(), settings.topic_prefix)
        if not dry_run and signer is not None:
            await apply(database, run, signer, prefix=settings.topic_prefix, writer="selfex audit retain")
    finally:
        await client.close()
    print(run.describe(dry_run=dry_run), flush=True)
    return 1 if run.refused else 0
