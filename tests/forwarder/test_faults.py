"""The forwarder against a register that fails: away for a while, failing one record, killed
mid-delivery, and a response lost after the register stored the record. Real HTTP throughout: A's
forwarder reaches register B's gateway through a TCP proxy the test cuts, or a fault-injecting proxy."""

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from selfex.forwarder import replay, status
from shared import topics
from tests.forwarder.conftest import FaultProxy, delivered, deployments, person
from tests.support import TcpProxy, TopicReader, eventually

pytestmark = pytest.mark.integration


async def excluded_at(register, email_person) -> bool:
    return await register.gamstop(register.world.keys["checker"], email_person) == "Y"


async def test_register_away_deliveries_pend_the_breaker_opens_and_all_arrive_once_when_it_returns(servers):
    async with deployments(servers, "B", "A") as (b, a):
        port = b.url.rsplit(":", 1)[1]
        async with TcpProxy(f"127.0.0.1:{port}") as proxy:
            await a.start_forwarder(
                forwarder_register="B",
                forwarder_register_url=f"http://127.0.0.1:{proxy.port}",
                forwarder_register_key=await b.key_for("platform-a"),
                forwarder_attempts=50,
            )
            await proxy.cut()  # B is away
            people = [person() for _ in range(5)]
            for someone in people:
                await a.exclude(a.world.keys["excluder"], someone)

            async def breaker_open():
                state = await a.forwarder_db["forwarder_state"].find_one({"_id": "breaker"}) or {}
                return state.get("state") == "opened"

            await eventually(breaker_open, what="the breaker to open while B is away")

            async def all_pending():
                return len(await a.deliveries(status="pending")) == 5

            await eventually(all_pending, what="every delivery to be recorded, pending")
            assert not await a.deliveries(status="delivered")
            await proxy.resume()  # B is back
            await delivered(a, 5)
            for someone in people:
                await eventually(lambda someone=someone: excluded_at(b, someone), what="B to hold each exclusion")
                [only] = await b.exclusions_of(someone["email"])
                assert len(only["request_ids"]) == 1  # delivered once: nothing twice
            assert not await a.deliveries(status="failed")
            breaker = await a.forwarder_db["forwarder_state"].find_one({"_id": "breaker"})
            assert breaker["state"] == "closed" and breaker["times_opened"] >= 1  # a probe got through: closed again


async def test_a_record_the_register_fails_ends_failed_with_an_alert_and_replay_delivers_it_once_fixed(servers):
    async with deployments(servers, "B", "A") as (b, a):
        async with FaultProxy(b.url).running() as faults:
            await a.start_forwarder(
                forwarder_register="B", forwarder_register_url=faults.url, forwarder_register_key=await b.key_for("platform-a")
            )
            victim, other = person(), person()
            faults.fail_for.add(victim["email"])
            async with TopicReader(a.world.settings, topics.FORWARDING_EVENTS) as alerts:
                await a.exclude(a.world.keys["excluder"], victim)
                await a.exclude(a.world.keys["excluder"], other)
                [alert] = await alerts.wait_for(lambda m: m["type"] == "forwarding.failed")
            assert alert["payload"]["attempts"] == 4 and "HTTP 500" in alert["payload"]["reason"]
            [failed] = await a.deliveries(status="failed")
            assert failed["_id"] == alert["payload"]["delivery_id"]
            assert len(faults.posts_for(victim["email"])) == 4  # the budget, and no more
            await eventually(lambda: excluded_at(b, other), what="the other record to arrive")

            lines = await status(a.forwarder_settings, 5)
            assert "failed: 1" in lines[1] and "oldest pending: none" in lines[2], lines
            assert any(failed["_id"] in line and "HTTP 500" in line for line in lines), lines

            faults.fail_for.clear()  # B is fixed
            replay_settings = a.forwarder_settings
            assert await replay(replay_settings, []) == 1
            await delivered(a, 2)
            await eventually(lambda: excluded_at(b, victim), what="the replayed record to arrive")
            [only] = await b.exclusions_of(victim["email"])
            assert len(only["request_ids"]) == 1


async def test_a_response_lost_after_the_register_stored_the_record_is_recognised_by_its_idempotency_key(servers):
    async with deployments(servers, "B", "A") as (b, a):
        async with FaultProxy(b.url).running() as faults:
            await a.start_forwarder(
                forwarder_register="B",
                forwarder_register_url=faults.url,
                forwarder_register_key=await b.key_for("platform-a"),
                forwarder_timeout_seconds=1.0,
            )
            someone = person()
            faults.lose_after_store.add(someone["email"])
            await a.exclude(a.world.keys["excluder"], someone)
            [sent] = await delivered(a, 1)
            first, second = faults.posts_for(someone["email"])[:2]
            assert first["lost"] and first["status"] == 201  # B stored it; its answer never came back
            assert second["idempotency_key"] == first["idempotency_key"] == sent["_id"]
            assert second["replayed"] == "true"  # B recognised the retry
            [only] = await b.exclusions_of(someone["email"])
            assert len(only["request_ids"]) == 1


async def test_a_forwarder_killed_mid_delivery_loses_nothing_and_duplicates_nothing(servers, tmp_path: Path):
    async with deployments(servers, "B", "A") as (b, a):
        async with FaultProxy(b.url).running() as faults:
            key = await b.key_for("platform-a")
            options = dict(
                forwarder_register="B", forwarder_register_url=faults.url, forwarder_register_key=key, forwarder_timeout_seconds=1.0
            )
            someone = person()
            faults.lose_after_store.add(someone["email"])  # the first attempt hangs after B stored it: kill then
            settings = a.world.settings.model_copy(update=options)
            env = {**os.environ, **settings.environment(), "SELFEX_FORWARDER_REGISTER_KEY": key, "SELFEX_LOG_FORMAT": "json"}
            env.update(
                {
                    k: str(v)
                    for k, v in {
                        "SELFEX_FORWARDER_RETRY_FIRST_SECONDS": 0.05,
                        "SELFEX_FORWARDER_POLL_SECONDS": 0.1,
                    }.items()
                }
            )
            process = _spawn_forwarder(env, tmp_path / "forwarder.log")
            try:
                await a.exclude(a.world.keys["excluder"], someone)
                await eventually(
                    lambda: _async(any(r.get("lost") for r in faults.posts_for(someone["email"]))),
                    timeout=60,
                    what="the delivery to be in flight",
                )
            finally:
                process.send_signal(signal.SIGKILL)  # no shutdown: the attempt is cut off where it stands
                await asyncio.to_thread(process.wait, 10)
            # A new forwarder on the same store: the delivery is still pending, taken once its lease lapses.
            await a.start_forwarder(**options)
            [sent] = await delivered(a, 1)
            posts = faults.posts_for(someone["email"])
            assert {p["idempotency_key"] for p in posts} == {sent["_id"]}
            assert posts[-1]["replayed"] == "true"
            [only] = await b.exclusions_of(someone["email"])
            assert len(only["request_ids"]) == 1


def _spawn_forwarder(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """``selfex run forwarder`` in a process of its own, as ``selfex up`` runs it."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "selfex"), "run", "forwarder"], env=env, stdout=log, stderr=subprocess.STDOUT
        )


async def _async(value):
    await asyncio.sleep(0)
    return value
