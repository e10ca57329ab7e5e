"""``selfex audit verify`` on the real store: each kind of tampering done to the store directly is
found at the record it touched, and a tail rewritten after a checkpoint was exported is caught
against the export."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.audit import verifier
from services.audit.chain import record, tail_of
from services.audit.repository import LOG
from services.audit.verifier import verify
from tests.audit.harness import at, entry, filled

pytestmark = pytest.mark.integration

CHAIN = "t.decisions/1"
SIGNING_KEY = "dGVzdC1hdWRpdC1zaWduaW5nLWtleS0wMTIzNDU2Nzg="  # 32 bytes: the tests' own, not the development key


async def test_an_untouched_log_is_intact_with_its_count(database):
    log = await filled(database)

    report = await verify(log)

    assert report.intact and (report.records, report.chains) == (20, 2)
    assert report.describe().startswith("intact: 20 records in 2 chains verified in ")


async def test_records_stored_out_of_their_order_are_walked_in_seq_order(database, monkeypatch):
    # verify reads the whole log in the store's own order; records that come before the one they
    # follow wait for it, and past the bound on waiting their chain is walked again by query.
    log = await filled(database, chains=2, per_chain=30)
    stored = [d async for d in database[LOG].find({"topic": "t.decisions", "partition": 1})]
    await database[LOG].delete_many({"topic": "t.decisions", "partition": 1})
    await database[LOG].insert_many(sorted(stored, key=lambda d: -d["seq"]))  # newest first

    report = await verify(log)
    assert report.intact and (report.records, report.chains) == (60, 2)

    monkeypatch.setattr(verifier, "MAX_EARLY", 5)
    report = await verify(log)
    assert report.intact and (report.records, report.chains) == (60, 2)

    victim = await at(database, CHAIN, 17)
    await database[LOG].update_one({"_id": victim["_id"]}, {"$set": {"subject": "someone-else"}})
    report = await verify(log)
    assert [(f.chain, f.seq, f.what, f.record_id) for f in report.findings] == [(CHAIN, 17, "modified", victim["_id"])]


async def test_a_modified_record_is_found(database):
    log = await filled(database)
    victim = await at(database, CHAIN, 4)
    body = json.loads(victim["body"])
    body["event"]["payload"]["outcome"] = "BLOCK"
    await database[LOG].update_one({"_id": victim["_id"]}, {"$set": {"body": json.dumps(body)}})

    report = await verify(log)

    assert [(f.chain, f.seq, f.what, f.record_id) for f in report.findings] == [(CHAIN, 4, "modified", victim["_id"])]


async def test_a_deleted_record_is_found(database):
    log = await filled(database)
    await database[LOG].delete_one({"topic": "t.decisions", "partition": 1, "seq": 5})

    report = await verify(log)

    assert [(f.chain, f.seq, f.what) for f in report.findings] == [(CHAIN, 6, "deleted")]


async def test_an_inserted_record_is_found(database):
    log = await filled(database)
    # A forger who knows the algorithm: a record linked to seq 3, hashed correctly, slipped in at 3.5.
    e = entry("t.decisions", 1, 99)
    forged = record(
        tail_of(await at(database, CHAIN, 3)),
        topic=e.topic,
        partition=e.partition,
        offset=e.offset,
        recorded_at=e.recorded_at,
        event=e.event,
    )
    await database[LOG].insert_one({**forged, "seq": 3.5})

    report = await verify(log)

    assert [(f.chain, f.what, f.record_id) for f in report.findings] == [(CHAIN, "inserted", forged["_id"])]


async def test_two_swapped_records_are_found(database):
    log = await filled(database)
    fifth, sixth = await at(database, CHAIN, 5), await at(database, CHAIN, 6)
    await database[LOG].update_one({"_id": fifth["_id"]}, {"$set": {"seq": -1}})
    await database[LOG].update_one({"_id": sixth["_id"]}, {"$set": {"seq": 5}})
    await database[LOG].update_one({"_id": fifth["_id"]}, {"$set": {"seq": 6}})

    report = await verify(log)

    assert [(f.chain, f.seq, f.what, f.record_id) for f in report.findings] == [(CHAIN, 5, "reordered", sixth["_id"])]


def selfex(settings, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **settings.environment(), "SELFEX_AUDIT_SIGNING_KEY": SIGNING_KEY}
    return subprocess.run([sys.executable, "-m", "selfex.cli", "audit", *args], capture_output=True, text=True, timeout=120, env=env)


async def test_a_tail_rewritten_after_an_exported_checkpoint_is_caught_against_the_export(settings, database, tmp_path: Path):
    settings = settings.model_copy(update={"mongo_databases": {"audit": database.name}})
    log = await filled(database)
    assert selfex(settings, "checkpoint", "write").returncode == 0
    exported = tmp_path / "checkpoints.jsonl"
    assert selfex(settings, "checkpoint", "export", "--out", str(exported)).returncode == 0
    # The forger rewrites the chain's last two records consistently: the chain alone cannot tell.
    ninth = await at(database, CHAIN, 9)
    await database[LOG].delete_many({"topic": "t.decisions", "partition": 1, "seq": {"$gte": 9}})
    tail = tail_of(await at(database, CHAIN, 8))
    for offset in (8, 9):
        e = entry("t.decisions", 1, offset, event_id=ninth["_id"] if offset == 8 else None)
        document = record(tail, topic=e.topic, partition=e.partition, offset=e.offset, recorded_at=e.recorded_at, event=e.event)
        await database[LOG].insert_one(document)
        tail = tail_of(document)

    alone = selfex(settings, "verify")
    against = selfex(settings, "verify", "--against", str(exported))

    assert alone.returncode == 0 and alone.stdout.startswith("intact: 20 records in 2 chains"), alone.stdout + alone.stderr
    assert against.returncode == 1, against.stdout + against.stderr
    assert f"rewritten: chain {CHAIN} at seq 10" in against.stdout
    assert (await verify(log)).intact  # the rewrite is self-consistent: only the checkpoint shows it


async def test_a_checkpoint_whose_heads_were_edited_fails_its_signature(settings, database, tmp_path: Path):
    settings = settings.model_copy(update={"mongo_databases": {"audit": database.name}})
    await filled(database)
    assert selfex(settings, "checkpoint", "write").returncode == 0
    exported = tmp_path / "checkpoints.jsonl"
    assert selfex(settings, "checkpoint", "export", "--out", str(exported)).returncode == 0
    [checkpoint] = [json.loads(line) for line in exported.read_text().splitlines()]
    checkpoint["heads"][0]["seq"] = 3  # pointing at an earlier head, to hide what came after
    exported.write_text(json.dumps(checkpoint) + "\n")

    against = selfex(settings, "verify", "--against", str(exported))

    assert against.returncode == 1 and "is not signed by the deployment's key" in against.stdout, against.stdout + against.stderr


def test_the_development_signing_key_is_refused_outside_development(settings):
    from services.audit.checkpoints import DEVELOPMENT_SIGNING_KEY

    done = subprocess.run(
        [sys.executable, "-m", "selfex.cli", "audit", "checkpoint", "write"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **settings.environment(), "SELFEX_AUDIT_SIGNING_KEY": DEVELOPMENT_SIGNING_KEY},
    )
    assert done.returncode == 2 and "public development key" in done.stderr
