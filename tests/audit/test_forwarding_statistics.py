"""The forwarder's lag in the statistics, learnt from its forwarding.status events alone: the newest
status of each register as of the period's end, the deliveries and failures in the period, in JSON and
in the query API's CSV; the deployment's own, so an operator's statistics never show it."""

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pydantic import SecretStr

from services.audit.app import create_app as audit_app
from services.audit.queries import AuditQueries, Scope
from services.audit.query import create_app as query_app
from services.audit.repository import LOG, MongoAuditLog
from services.audit.verifier import verify
from shared.events import (
    ExclusionForwarded,
    ForwardingFailed,
    ForwardingPayload,
    ForwardingStatusPayload,
    ForwardingStatusReported,
)
from shared.infra import free_port
from tests.audit.people import Log, excluded, person
from tests.gateway.conftest import serving
from tests.support import Publisher, eventually

pytestmark = pytest.mark.integration

JAN = datetime(2026, 1, 1, tzinfo=UTC)
FEB = datetime(2026, 2, 1, tzinfo=UTC)
TOKEN = "forwarding-statistics-token-0123456789abcdef"


def day(n: int, hour: int = 12) -> datetime:
    return datetime(2026, 1, n, hour, tzinfo=UTC)


def status(at: datetime, register: str | None = "spelpaus", *, pending: int, oldest: timedelta | None, synced: timedelta | None):
    """A status reported at ``at``: ``pending`` waiting, the oldest for ``oldest``, the last sync ``synced`` before."""
    return ForwardingStatusReported(
        occurred_at=at,
        source="forwarder",
        payload=ForwardingStatusPayload(
            to_register=register,
            adapter="native" if register else None,
            pending=pending,
            failed=1,
            oldest_pending_at=at - oldest if oldest is not None else None,
            oldest_pending_age_seconds=oldest.total_seconds() if oldest is not None else None,
            last_delivered_at=at - timedelta(hours=3),
            last_sync_at=at - synced if synced is not None else None,
            last_sync_age_seconds=synced.total_seconds() if synced is not None else None,
            breaker="opened" if register else None,
        ),
    )


def forwarding(kind: type[ExclusionForwarded] | type[ForwardingFailed], at: datetime) -> ExclusionForwarded | ForwardingFailed:
    return kind(
        occurred_at=at,
        source="forwarder",
        subject=str(uuid.uuid4()),
        payload=ForwardingPayload(
            delivery_id=uuid.uuid4().hex,
            exclusion_id=uuid.uuid4(),
            change="exclusion.activated",
            to_register="spelpaus",
            adapter="native",
            attempts=1 if kind is ExclusionForwarded else 10,
            reason=None if kind is ExclusionForwarded else "HTTP 500 (after 10 attempts)",
        ),
    )


@pytest.fixture
async def lagging(database):
    """spelpaus reports on the 10th and 12th January (and in February); a register left in December
    reported last then; the change feed alone (no register) on the 11th. Three deliveries and a failure
    in January, one delivery in December; op-a's exclusion on the 10th."""
    log = await Log(database).open()
    await excluded(log, person("op-a"), day(10))
    for event in (
        status(datetime(2025, 12, 20, tzinfo=UTC), "an-old-register", pending=9, oldest=timedelta(days=2), synced=None),
        forwarding(ExclusionForwarded, datetime(2025, 12, 30, tzinfo=UTC)),
        status(day(10), pending=4, oldest=timedelta(minutes=50), synced=timedelta(hours=1)),
        forwarding(ExclusionForwarded, day(10, 13)),
        status(day(11), None, pending=0, oldest=None, synced=timedelta(minutes=5)),
        forwarding(ExclusionForwarded, day(11, 13)),
        forwarding(ForwardingFailed, day(12, 9)),
        status(day(12), pending=2, oldest=timedelta(minutes=90), synced=timedelta(hours=25)),
        forwarding(ExclusionForwarded, day(13)),
        status(FEB + timedelta(days=1), pending=0, oldest=None, synced=timedelta(minutes=1)),
    ):
        await log.add(event)
    return database


SPELPAUS_ON_THE_12TH = {
    "reported_at": "2026-01-12T12:00:00+00:00",
    "adapter": "native",
    "pending": 2,
    "failed": 1,
    "oldest_pending_at": "2026-01-12T10:30:00Z",
    "oldest_pending_age_seconds": 5400.0,
    "last_delivered_at": "2026-01-12T09:00:00Z",
    "last_sync_at": "2026-01-11T11:00:00Z",
    "last_sync_age_seconds": 90000.0,
    "breaker": "opened",
    "stopping": False,
}


async def test_the_statistics_show_each_registers_newest_status_and_the_deliveries_in_the_period(lagging):
    figures = (await AuditQueries(lagging).statistics(Scope(None), JAN, FEB)).as_json()

    assert figures["forwarding"] == {
        "deliveries": {"delivered": 3, "failed": 1},
        "status_by_register": {
            "none": {
                "reported_at": "2026-01-11T12:00:00+00:00",
                "adapter": None,
                "pending": 0,
                "failed": 1,
                "oldest_pending_at": None,
                "oldest_pending_age_seconds": None,
                "last_delivered_at": "2026-01-11T09:00:00Z",
                "last_sync_at": "2026-01-11T11:55:00Z",
                "last_sync_age_seconds": 300.0,
                "breaker": None,
                "stopping": False,
            },
            "spelpaus": SPELPAUS_ON_THE_12TH,
        },
    }
    assert (await verify(MongoAuditLog(lagging))).intact, "the statuses' query fields are what their bodies give"


async def test_a_period_without_a_status_shows_the_last_one_before_its_end_and_counts_only_its_own_deliveries(lagging):
    figures = (await AuditQueries(lagging).statistics(Scope(None), day(20), FEB)).as_json()
    before = (await AuditQueries(lagging).statistics(Scope(None), None, day(10, 13))).as_json()

    assert figures["forwarding"] == {"deliveries": {"delivered": 0, "failed": 0}, "status_by_register": {"spelpaus": SPELPAUS_ON_THE_12TH}}
    assert before["forwarding"]["deliveries"] == {"delivered": 1, "failed": 0}
    assert before["forwarding"]["status_by_register"]["spelpaus"]["pending"] == 4
    assert set(before["forwarding"]["status_by_register"]) == {"spelpaus", "an-old-register"}


async def test_an_operators_statistics_hold_no_forwarding_section(lagging):
    statistics = await AuditQueries(lagging).statistics(Scope("op-a"), JAN, FEB)

    assert statistics.as_json()["exclusions_started"]["total"] == 1, "op-a's own figures are there"
    assert "forwarding" not in statistics.as_json()
    assert not [row for row in statistics.rows() if row[0].startswith("forwarding")]


async def test_the_query_apis_csv_carries_the_forwarding_figures_and_not_for_an_operator(settings, lagging):
    port = free_port()
    query_settings = settings.model_copy(update={"audit_query_token": SecretStr(TOKEN), "audit_query_port": port})
    async with (
        serving(query_app(query_settings, database=lagging), port),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {TOKEN}"}) as client,
    ):
        period = {"since": JAN.isoformat(), "until": FEB.isoformat()}
        everyone = await client.post("/v1/statistics", params={"format": "csv"}, json={"scope": "all", **period})
        operator = await client.post("/v1/statistics", params={"format": "csv"}, json={"scope": "operator:op-a", **period})

    assert everyone.status_code == 200 and operator.status_code == 200
    rows = list(csv.reader(io.StringIO(everyone.text)))
    forwarding = [row for row in rows if row[0].startswith("forwarding")]
    assert ["forwarding.deliveries", "", "delivered", "3"] in forwarding
    assert ["forwarding.deliveries", "", "failed", "1"] in forwarding
    spelpaus = {key: value for section, register, key, value in forwarding if register == "spelpaus"}
    assert spelpaus == {
        "reported_at": "2026-01-12T12:00:00+00:00",
        "adapter": "native",
        "pending": "2",
        "failed": "1",
        "oldest_pending_at": "2026-01-12T10:30:00Z",
        "oldest_pending_age_seconds": "5400.0",
        "last_delivered_at": "2026-01-12T09:00:00Z",
        "last_sync_at": "2026-01-11T11:00:00Z",
        "last_sync_age_seconds": "90000.0",
        "breaker": "opened",
        "stopping": "false",
    }
    assert {row[0] for row in forwarding} == {"forwarding.deliveries", "forwarding.status_by_register"}
    assert ["exclusions_started", "total", "", "1"] in list(csv.reader(io.StringIO(operator.text)))
    assert "forwarding" not in operator.text


async def test_a_status_the_forwarder_publishes_reaches_the_statistics_through_the_audit_service(settings, database):
    now = datetime.now(UTC).replace(microsecond=0)
    reported = status(now, pending=3, oldest=timedelta(minutes=7), synced=timedelta(minutes=30))
    async with audit_app(settings, database=database), Publisher(settings) as publish:
        await publish.event(reported)
        await eventually(lambda: database[LOG].find_one({"_id": str(reported.id)}), what="the status to be audited")

    figures = (await AuditQueries(database).statistics(Scope(None), now - timedelta(hours=1), now + timedelta(seconds=1))).as_json()
    spelpaus = figures["forwarding"]["status_by_register"]["spelpaus"]
    assert spelpaus["reported_at"] == now.isoformat()
    assert (spelpaus["pending"], spelpaus["oldest_pending_age_seconds"], spelpaus["last_sync_age_seconds"]) == (3, 420.0, 1800.0)
