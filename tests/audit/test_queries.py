"""The compliance queries on the real store, over known people's records: a person's records found
through every link, scopes that never let one operator see another's, cursor paging, and the
statistics' figures counted on known data."""

from datetime import UTC, datetime, timedelta

import pytest

from services.audit.queries import AuditQueries, Criteria, QueryError, Scope
from services.audit.repository import LOG
from services.audit.verifier import verify
from shared.events import ExclusionExpired
from tests.audit.people import Log, blocked, excluded, parked, person

pytestmark = pytest.mark.integration

JAN = datetime(2026, 1, 1, tzinfo=UTC)
FEB = datetime(2026, 2, 1, tzinfo=UTC)


def day(n: int, hour: int = 12) -> datetime:
    return datetime(2026, 1, n, hour, tzinfo=UTC)


@pytest.fixture
async def known(database):
    """a1, a2 of operator op-a and b1 of op-b, excluded on 10, 11 and 12 January; a2's ends on the 20th."""
    log = await Log(database).open()
    a1, a2, b1 = person("op-a"), person("op-a"), person("op-b")
    await excluded(log, a1, day(10), jurisdiction="UK", duration="+6m", year_of_birth=1985, gender="F", enforce_after=timedelta(seconds=1))
    await excluded(
        log,
        a2,
        day(11),
        jurisdiction="SE",
        duration="+30d",
        ends_at=day(20),
        year_of_birth=1992,
        gender="M",
        enforce_after=timedelta(seconds=3),
    )
    await excluded(log, b1, day(12), jurisdiction="UK", duration="+12m", year_of_birth=1975, gender="U", enforce_after=timedelta(seconds=2))
    await blocked(log, a1, day(15))
    await parked(log, "t.exclusion.commands", day(13))
    await parked(log, "t.exclusion.commands", day(14))
    await parked(log, "t.verification.inputs", day(14))
    ended = (await database[LOG].find_one({"type": "exclusion.activated", "facts.exclusion_id": str(a2.exclusion_id)}))["body"]
    import json

    snapshot = json.loads(ended)["event"]["payload"]
    await log.add(
        ExclusionExpired(
            occurred_at=day(20),
            source="registration",
            subject=a2.person_id,
            operator_id="op-a",
            payload={**snapshot, "state": "expired", "version": 2, "ended_at": day(20).isoformat()},
        )
    )
    return {"a1": a1, "a2": a2, "b1": b1, "queries": AuditQueries(database), "database": database}


async def test_a_persons_records_are_found_through_their_subject_exclusion_and_account_events(known):
    a1, queries = known["a1"], known["queries"]

    records = await queries.statement(Scope(None), a1.hashes)

    assert [r["type"] for r in records] == [
        "account.event",
        "decision.made",
        "exclusion.request",
        "exclusion.verified",
        "exclusion.activated",
        "enforcement.commanded",
        "notification.requested",
        "account.event",
        "decision.made",
    ]
    assert all(r["hash"] and r["chain"] and r["seq"] for r in records)


async def test_an_operator_scope_returns_only_that_operators_records_whatever_the_query_names(known):
    a1, b1, queries = known["a1"], known["b1"], known["queries"]

    own = await queries.statement(Scope("op-a"), a1.hashes)
    theirs = await queries.statement(Scope("op-a"), b1.hashes)
    named_other, _ = await queries.page(Scope("op-a"), Criteria(operator_id="op-b"))
    everything, _ = await queries.page(Scope("op-a"), Criteria(), limit=1000)

    assert own and {r["operator_id"] for r in own} == {"op-a"}
    assert theirs == [] and named_other == []
    assert everything and {r["operator_id"] for r in everything} == {"op-a"}


async def test_pages_follow_the_cursor_to_the_end_without_repeats(known):
    queries = known["queries"]
    seen, cursor, pages = [], None, 0
    while True:
        # a login and its decision 100 ms apart: the cursor orders within a second too
        page, cursor = await queries.page(
            Scope("op-a"), Criteria(types=("account.event", "decision.made"), since=JAN), cursor=cursor, limit=1
        )
        seen += page
        pages += 1
        if cursor is None:
            break

    assert pages == 6 and len(seen) == len({r["id"] for r in seen}) == 6
    moments = [datetime.fromisoformat(r["occurred_at"]) for r in seen]
    assert moments == sorted(moments)
    with pytest.raises(QueryError) as bad:
        await queries.page(Scope(None), Criteria(), cursor="not-a-cursor")
    assert bad.value.field == "cursor"


async def test_a_time_range_and_an_event_type_narrow_the_search(known):
    queries = known["queries"]

    found, _ = await queries.page(Scope(None), Criteria(types=("exclusion.activated",), since=day(11, 0), until=day(12, 0)))

    assert [r["event"]["payload"]["exclusion_id"] for r in found] == [str(known["a2"].exclusion_id)]
    with pytest.raises(QueryError):
        await queries.page(Scope(None), Criteria(since=day(12), until=day(11)))
    with pytest.raises(QueryError):
        Scope.parse("operator:")


async def test_the_statistics_count_the_known_figures(known):
    figures = (await known["queries"].statistics(Scope(None), JAN, FEB)).as_json()

    assert figures["exclusions_started"] == {
        "total": 3,
        "by_jurisdiction": {"SE": 1, "UK": 2},
        "by_duration_kind": {"fixed": 1, "until_lifted": 2},
        "by_birth_band": {"1970s": 1, "1980s": 1, "1990s": 1},
        "by_gender": {"F": 1, "M": 1, "U": 1},
    }
    assert figures["exclusions_active"]["total"] == 2 and figures["exclusions_active"]["by_jurisdiction"] == {"UK": 2}
    assert figures["decisions_by_day"] == [
        {"day": "2026-01-10", "ALLOW": 1},
        {"day": "2026-01-11", "ALLOW": 1},
        {"day": "2026-01-12", "ALLOW": 1},
        {"day": "2026-01-15", "BLOCK": 1},
    ]
    assert figures["time_to_enforcement_ms"] == {"count": 3, "p50": 2000.0, "p90": 3000.0, "p95": 3000.0, "p99": 3000.0, "max": 3000.0}
    assert figures["dead_letters_by_topic"] == {"t.exclusion.commands": 2, "t.verification.inputs": 1}


async def test_an_operators_statistics_count_only_its_own_records(known):
    figures = (await known["queries"].statistics(Scope("op-a"), JAN, day(16))).as_json()

    assert figures["exclusions_started"]["total"] == 2
    assert figures["exclusions_active"]["total"] == 2, "a2 ends on the 20th: on the 16th both of op-a's are in force"
    assert [d["day"] for d in figures["decisions_by_day"]] == ["2026-01-10", "2026-01-11", "2026-01-15"]
    assert figures["time_to_enforcement_ms"]["count"] == 2
    assert figures["dead_letters_by_topic"] == {}


async def test_the_query_fields_are_part_of_the_evidence(known):
    database = known["database"]
    assert (await verify(_log(database))).intact
    decision = await database[LOG].find_one({"type": "decision.made"})

    await database[LOG].update_one({"_id": decision["_id"]}, {"$set": {"facts.outcome": "BLOCK"}})

    report = await verify(_log(database))
    assert [(f.record_id, f.what) for f in report.findings] == [(decision["_id"], "modified")]


def _log(database):
    from services.audit.repository import MongoAuditLog

    return MongoAuditLog(database)
