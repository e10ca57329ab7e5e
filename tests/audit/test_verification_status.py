"""The audit service's periodic verification on the real store: soon after the start it walks every
chain and inserts the result (counts, intact), a record tampered with afterwards is named in the next
period's result (chain, seq, record id, kind) with nothing of the record's content, a tail cut off
after a kept checkpoint is named too, and a period is verified by the first instance to claim it.
What the query API makes of the newest result (intact, tampered, never verified, stale) is pure logic."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from services.audit.app import create_app, period_of
from services.audit.checkpoints import Signer
from services.audit.query import verification_status
from services.audit.repository import LOG, VERIFICATION_CLAIMS, VERIFICATIONS, MongoVerifications
from tests.audit.harness import at, filled
from tests.audit.test_verify import CHAIN, SIGNING_KEY
from tests.support import eventually

pytestmark = pytest.mark.integration

FINDING_FIELDS = {"chain", "seq", "record_id", "kind", "detail"}


async def test_each_period_s_result_is_kept_and_a_record_tampered_with_is_named_in_the_next(settings, database):
    await filled(database)  # 20 records in 2 chains
    verifications = MongoVerifications(database)
    async with create_app(settings.model_copy(update={"audit_verify_seconds": 0.5}), database=database):
        first = await eventually(verifications.newest, what="the first verification, soon after the start")
        victim = await at(database, CHAIN, 4)
        body = json.loads(victim["body"])
        body["event"]["payload"]["outcome"] = "BLOCK"
        await database[LOG].update_one({"_id": victim["_id"]}, {"$set": {"body": json.dumps(body)}})

        async def broken():
            newest = await verifications.newest()
            return newest if newest and not newest["intact"] else None

        result = await eventually(broken, what="a verification after the tampering")

    assert first is not None and result is not None
    assert first["intact"] and (first["records"], first["chains"], first["findings"], first["problems"]) == (20, 2, [], [])
    assert first["interval_seconds"] == 0.5 and first["started_at"] <= first["ended_at"]
    assert [(f["chain"], f["seq"], f["record_id"], f["kind"]) for f in result["findings"]] == [(CHAIN, 4, victim["_id"], "modified")]
    assert set(result["findings"][0]) == FINDING_FIELDS and (result["findings_total"], result["problems_total"]) == (1, 0)
    assert result["_id"] != first["_id"] and result["started_at"] > first["ended_at"], "a later period's result, inserted anew"
    assert await database[VERIFICATIONS].count_documents({"_id": first["_id"], "intact": True}) == 1, "the earlier result is kept as it was"
    kept = json.dumps(result)
    assert "BLOCK" not in kept and "ALLOW" not in kept and "op-1" not in kept, "nothing of the record's content is in the result"


async def test_a_tail_cut_off_after_a_kept_checkpoint_is_a_problem_of_the_result(settings, database):
    settings = settings.model_copy(update={"audit_signing_key": SecretStr(SIGNING_KEY), "audit_verify_seconds": 0.5})
    log = await filled(database)
    tails = {chain: await log.tail(chain) for chain in await log.chains()}
    await log.save_checkpoint(Signer.from_settings(settings).checkpoint(tails, datetime.now(UTC), "test"))  # type: ignore[union-attr]
    await database[LOG].delete_one({"topic": "t.decisions", "partition": 1, "seq": 10})  # the walk alone finds nothing wrong

    async with create_app(settings, database=database):
        result = await eventually(MongoVerifications(database).newest, what="a verification")

    assert result is not None and not result["intact"] and result["findings"] == [] and result["problems_total"] == 1
    assert result["problems"][0].startswith(f"rewritten: chain {CHAIN} no longer has seq 10")


async def test_a_period_is_verified_by_the_first_instance_to_claim_it(database):
    verifications = MongoVerifications(database)
    now = datetime(2026, 5, 4, 10, 0, 1, tzinfo=UTC)
    period = period_of(now, 3600)

    assert await verifications.claim(period, "host-a:1", now) is True
    assert await verifications.claim(period, "host-b:2", now + timedelta(seconds=1)) is False
    assert await verifications.claim(period_of(now + timedelta(hours=1), 3600), "host-b:2", now) is True
    assert await database[VERIFICATION_CLAIMS].find_one({"_id": period}) == {
        "_id": period,
        "writer": "host-a:1",
        "at": "2026-05-04T10:00:01.000+00:00",
    }


def test_periods_follow_the_interval_from_the_epoch():
    start = datetime(2026, 5, 4, 10, 0, 0, tzinfo=UTC)
    assert period_of(start, 3600) == period_of(start + timedelta(minutes=59, seconds=59), 3600)
    assert period_of(start, 3600) != period_of(start + timedelta(hours=1), 3600)
    assert period_of(start, 2) != period_of(start, 3600), "another interval, other periods"


def result(ended: datetime, *, intact: bool = True, every: float = 3600) -> dict:
    return {"_id": "p", "ended_at": ended.isoformat(), "intact": intact, "interval_seconds": every, "findings": []}


def test_the_newest_result_is_intact_tampered_never_verified_or_stale():
    now = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)

    never = verification_status(None, now, 3600)
    fresh = verification_status(result(now - timedelta(minutes=50)), now, 3600)
    tampered = verification_status(result(now - timedelta(minutes=5), intact=False), now, 3600)
    old = verification_status(result(now - timedelta(hours=2, seconds=1)), now, 3600)
    old_by_its_own_interval = verification_status(result(now - timedelta(seconds=5), every=2), now, 3600)

    assert (never["status"], never["verification"], never["every_seconds"]) == ("never_verified", None, 3600)
    assert (fresh["status"], fresh["stale"], fresh["verification"]["id"]) == ("intact", False, "p")
    assert (tampered["status"], tampered["stale"]) == ("tampered", False)
    assert (old["status"], old["stale"]) == ("intact", True), "more than twice the interval ago: stale"
    assert old_by_its_own_interval["stale"] is True, "judged by the interval the result was made with"
