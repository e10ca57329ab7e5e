"""The forwarder's lag as an event: while the register is away, forwarding.status says what pends and
since when, every SELFEX_FORWARDER_STATUS_SECONDS and once more as the forwarder stops. Real broker,
store and HTTP: A's forwarder reaches register B through a TCP proxy the test cuts."""

from datetime import UTC, datetime, timedelta

import pytest

from services.forwarder.repository import Status
from services.forwarder.status import status_event
from shared import topics
from shared.settings import Settings
from tests.forwarder.conftest import deployment, deployments, person
from tests.support import TcpProxy, TopicReader, eventually

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def statuses(reader: TopicReader) -> list[dict]:
    return [m for m in reader.messages() if m["type"] == "forwarding.status"]


@pytest.mark.integration
async def test_a_delivery_pending_on_a_register_that_is_away_is_reported_with_its_age_and_once_more_on_stop(servers):
    async with deployments(servers, "B", "A") as (b, a):
        port = b.url.rsplit(":", 1)[1]
        async with TcpProxy(f"127.0.0.1:{port}") as proxy, TopicReader(a.world.settings, topics.FORWARDING_EVENTS) as reader:
            await proxy.cut()  # B is away from the start
            forwarder = await a.start_forwarder(
                forwarder_register="B",
                forwarder_register_url=f"http://127.0.0.1:{proxy.port}",
                forwarder_register_key=await b.key_for("platform-a"),
                forwarder_attempts=50,
                forwarder_status_seconds=0.2,
            )
            await a.exclude(a.world.keys["excluder"], person())
            [pending] = await eventually(lambda: a.deliveries(status="pending"), what="the delivery to be recorded, pending")

            def opened_and_pending(m: dict) -> bool:
                return m["type"] == "forwarding.status" and m["payload"]["pending"] == 1 and m["payload"]["breaker"] == "opened"

            await reader.wait_for(opened_and_pending, count=2)
            first, later = [m for m in statuses(reader) if opened_and_pending(m)][-2:]
            for status in (first, later):
                figures = status["payload"]
                reported_at = datetime.fromisoformat(status["occurred_at"])
                oldest = datetime.fromisoformat(figures["oldest_pending_at"])
                assert oldest == pending["created_at"]
                assert figures["oldest_pending_age_seconds"] == pytest.approx((reported_at - oldest).total_seconds(), abs=0.06)
                assert figures | {"oldest_pending_at": None, "oldest_pending_age_seconds": None} == {
                    "to_register": "B",
                    "adapter": "native",
                    "pending": 1,
                    "failed": 0,
                    "oldest_pending_at": None,
                    "oldest_pending_age_seconds": None,
                    "last_delivered_at": None,
                    "last_sync_at": None,
                    "last_sync_age_seconds": None,
                    "breaker": "opened",
                    "stopping": False,
                }
                assert status["source"] == "forwarder" and status["subject"] is None and status["operator_id"] is None
            assert later["payload"]["oldest_pending_age_seconds"] > first["payload"]["oldest_pending_age_seconds"]
            keys = {r.key for r in reader.records if b'"forwarding.status"' in r.value}
            assert keys == {b"B"}, "keyed by the register"

            await forwarder.stop()
            [last] = await reader.wait_for(lambda m: m["type"] == "forwarding.status" and m["payload"]["stopping"])
            assert last["payload"]["pending"] == 1 and last["payload"]["oldest_pending_at"] == first["payload"]["oldest_pending_at"]
            assert last["payload"]["oldest_pending_age_seconds"] >= later["payload"]["oldest_pending_age_seconds"]


@pytest.mark.integration
async def test_a_forwarder_that_neither_forwards_nor_syncs_reports_no_status(servers):
    async with deployment(servers, "A") as a:
        forwarder = await a.start_forwarder(forwarder_status_seconds=0.1)
        assert await forwarder.status.report() is None


def test_a_status_gives_ages_at_its_own_time_and_the_breaker_only_of_its_own_register():
    settings = Settings(forwarder_register="spelpaus", forwarder_adapter="chipout")
    status = Status(
        pending=2,
        failed=1,
        delivered=7,
        oldest_pending_at=NOW - timedelta(minutes=5),
        last_delivered_at=NOW - timedelta(minutes=6),
        last_sync_at=(NOW - timedelta(hours=2)).replace(tzinfo=None),  # as a store without tz_aware gives it
        breaker="opened",
        register="an-earlier-register",
    )

    event = status_event(status, settings, NOW)

    assert event.occurred_at == NOW and event.key() == b"spelpaus"
    figures = event.payload
    assert (figures.pending, figures.failed, figures.oldest_pending_age_seconds, figures.last_sync_age_seconds) == (2, 1, 300.0, 7200.0)
    assert figures.last_sync_at == NOW - timedelta(hours=2)
    assert figures.breaker == "closed", "the stored breaker was another register's"
    assert status_event(Status(**{**status.__dict__, "register": "spelpaus"}), settings, NOW).payload.breaker == "opened"
    idle = status_event(status, Settings(forwarder_sync_url="http://register.invalid"), NOW, stopping=True).payload
    assert (idle.to_register, idle.adapter, idle.breaker, idle.stopping) == (None, None, None, True)
