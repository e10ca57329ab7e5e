"""Retention on the real store: ``selfex audit retain`` removes only what is due (the oldest records of
a class past its period, never a chain's newest, never a class kept for ever), audits the run in the
log itself, anchors every cut with a signature, and ``selfex audit verify`` stays intact, against an
older exported checkpoint too; tampering after an anchor, a forged anchor and a tampered prefix are
still named."""

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.audit.checkpoints import Signer
from services.audit.repository import ANCHORS, LOG, MongoAuditLog
from services.audit.retention import RETENTION_TYPE, apply, class_of, plan
from services.audit.verifier import verify
from shared.events import RequestHandled, RequestHandledPayload
from shared.settings import Settings
from tests.audit.people import PREFIX, Log, blocked, excluded, person
from tests.audit.test_verify import SIGNING_KEY, selfex

pytestmark = pytest.mark.integration

NOW = datetime(2026, 6, 1, tzinfo=UTC)
OLD = NOW - timedelta(days=800)  # past the periods below
PERIODS = {"decisions": 365, "requests": 30, "exclusions": 0}
SIGNER = Signer.from_settings(Settings(audit_signing_key=SIGNING_KEY, development=False))


def request_handled(at: datetime) -> RequestHandled:
    return RequestHandled(
        occurred_at=at,
        source="gateway",
        operator_id="op-a",
        payload=RequestHandledPayload(request_id=str(uuid.uuid4()), method="POST", route="/v1/checks", api="native", status=200),
    )


async def seqs(database, topic: str) -> list[int]:
    return [d["seq"] async for d in database[LOG].find({"topic": PREFIX + topic}, {"seq": 1}, sort=[("seq", 1)])]


@pytest.fixture
async def aged(database):
    """op-a's person excluded 800 days ago with two logins then (decisions and account events, all old),
    one login now; gateway requests: three old, one now."""
    log = await Log(database).open()
    someone = person("op-a")
    await excluded(log, someone, OLD)
    await blocked(log, someone, OLD + timedelta(days=1))
    await blocked(log, someone, NOW - timedelta(days=2))
    for at in (OLD, OLD, OLD + timedelta(days=3), NOW - timedelta(days=1)):
        await log.add(request_handled(at))
    return database


def test_every_topic_belongs_to_its_record_class():
    assert class_of("t.operator.op-a.decisions", "t.") == class_of("t.operator.op-a.account_events", "t.") == "decisions"
    assert class_of("t.exclusion.lifecycle", "t.") == "exclusions"
    assert class_of("t.gateway.requests", "t.") == "requests"
    assert class_of("t.audit.retention", "t.") == class_of("t.something.new", "t.") == "kept"


async def test_retention_removes_only_what_is_due_audits_itself_and_verify_stays_intact(aged):
    database = aged
    log = MongoAuditLog(database)
    before = await verify(log)
    tails = {chain: await log.tail(chain) for chain in await log.chains()}
    exported = SIGNER.checkpoint(tails, NOW, "test")  # what a regulator kept before the run
    lifecycle_before = await seqs(database, "exclusion.lifecycle")

    run = await apply(database, await plan(database, PERIODS, NOW, PREFIX), SIGNER, prefix=PREFIX, writer="test")

    # decisions: two old, one recent; account events likewise: the old go. Requests: three old go.
    assert await seqs(database, "operator.op-a.decisions") == [3]
    assert await seqs(database, "operator.op-a.account_events") == [3]
    assert await seqs(database, "gateway.requests") == [4]
    assert await seqs(database, "exclusion.lifecycle") == lifecycle_before, "exclusions are kept for ever"
    assert await seqs(database, "operator.op-a.enforcement") == [1], "a chain whose only record is due keeps its newest"
    assert run.deleted == 2 + 2 + 3 and not run.refused
    [audited] = [d async for d in database[LOG].find({"type": RETENTION_TYPE})]
    said = json.loads(audited["body"])["event"]["payload"]
    assert said["records"] == 7 and {c["chain"] for c in said["cuts"]} == {c.chain for c in run.cuts}
    assert await database[ANCHORS].count_documents({}) == 3

    after = await verify(log, against=[exported])
    assert before.intact and after.intact, after.describe()
    assert after.records == before.records - 7 + 1 and after.anchored == 3 and after.heads_retired == 0
    assert "chains walked from a retention anchor" in after.describe()

    again = await plan(database, PERIODS, NOW, PREFIX)
    assert again.cuts == [], "nothing more is due"


async def test_after_retention_tampering_is_still_found_and_a_forged_anchor_is_named(aged):
    database = aged
    log = MongoAuditLog(database)
    await apply(database, await plan(database, PERIODS, NOW, PREFIX), SIGNER, prefix=PREFIX, writer="test")
    remaining = await database[LOG].find_one({"topic": PREFIX + "gateway.requests"})
    await database[LOG].delete_one({"_id": remaining["_id"]})  # the first record after the anchor, gone

    report = await verify(log)
    assert not report.intact and [f.what for f in report.findings] == ["deleted"]

    anchor = await database[ANCHORS].find_one({"chain": PREFIX + "operator.op-a.decisions/0"})
    await database[ANCHORS].update_one({"_id": anchor["_id"]}, {"$set": {"seq": anchor["seq"] + 5}})
    forged = await verify(log)
    assert any("retention anchor" in p and "not signed" in p for p in forged.problems)


async def test_a_tampered_prefix_is_not_cut_and_is_named(aged):
    database = aged
    victim = await database[LOG].find_one({"topic": PREFIX + "gateway.requests", "seq": 2})
    body = json.loads(victim["body"])
    body["event"]["payload"]["status"] = 500
    await database[LOG].update_one({"_id": victim["_id"]}, {"$set": {"body": json.dumps(body)}})

    run = await apply(database, await plan(database, PERIODS, NOW, PREFIX), SIGNER, prefix=PREFIX, writer="test")

    assert await seqs(database, "gateway.requests") == [1, 2, 3, 4], "evidence of tampering is never removed"
    assert [r.split(":")[0] for r in run.refused] == [PREFIX + "gateway.requests/0"] and "modified" in run.refused[0]
    assert await seqs(database, "operator.op-a.decisions") == [3], "the other chains are cut as due"


async def test_selfex_audit_retain_says_what_is_due_then_removes_it(settings, aged, tmp_path: Path):
    database = aged
    settings = settings.model_copy(
        update={"mongo_databases": {"audit": database.name}, "topic_prefix": PREFIX, "audit_retention_days": {"requests": 30}}
    )

    dry = selfex(settings, "retain", "--dry-run")
    assert dry.returncode == 0 and dry.stdout.startswith("would remove 3 records in 1 chains"), dry.stdout + dry.stderr
    assert await seqs(database, "gateway.requests") == [1, 2, 3, 4]

    done = selfex(settings, "retain")
    verified = selfex(settings, "verify")

    assert done.returncode == 0 and done.stdout.startswith("removed 3 records in 1 chains"), done.stdout + done.stderr
    assert await seqs(database, "gateway.requests") == [4]
    assert verified.returncode == 0 and verified.stdout.startswith("intact:"), verified.stdout
    unknown = selfex(settings.model_copy(update={"audit_retention_days": {"everything": 1}}), "retain")
    assert unknown.returncode == 2 and "names no record class: everything" in unknown.stderr


async def test_a_run_stopped_after_its_anchors_leaves_what_the_next_run_deletes(aged):
    database = aged
    chain = PREFIX + "operator.op-a.decisions/0"
    first = await database[LOG].find_one({"topic": PREFIX + "operator.op-a.decisions", "seq": 1})
    await apply(database, await plan(database, PERIODS, NOW, PREFIX), SIGNER, prefix=PREFIX, writer="test")
    await database[LOG].insert_one(first)  # as if the run had stopped between its anchor and the delete

    assert (await verify(MongoAuditLog(database))).intact, "what an anchor covers is not walked"
    again = await plan(database, PERIODS, NOW, PREFIX)
    assert again.leftovers == {chain: 2} and again.cuts == []
    await apply(database, again, SIGNER, prefix=PREFIX, writer="test")
    assert again.deleted == 1 and await seqs(database, "operator.op-a.decisions") == [3]
