"""``selfex up`` on the embedded servers, as ``make run`` starts it: up, healthy, and down cleanly."""

import hashlib
import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

from selfex.stack import Backoff
from shared.infra import free_port, port_is_open
from tests.e2e.conftest import selfex_command, stop, wait_for_health
from tests.support import eventually

pytestmark = pytest.mark.e2e


def test_selfex_up_starts_the_embedded_stack_and_stops_it_cleanly(tmp_path: Path):
    kafka_port, mongo_port, gateway_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SELFEX_")}
    env |= {
        "SELFEX_EMBEDDED_KAFKA_PORT": str(kafka_port),
        "SELFEX_EMBEDDED_MONGO_PORT": str(mongo_port),
        "SELFEX_GATEWAY_PORT": str(gateway_port),
    }
    log_path = tmp_path / "up.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(selfex_command() + ["up"], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_health(f"http://127.0.0.1:{gateway_port}", process, log_path, timeout=60)
        assert httpx.get(f"http://127.0.0.1:{gateway_port}/healthz").json() == {"status": "ok"}
        assert port_is_open(kafka_port) and port_is_open(mongo_port)
        assert f"Gateway: http://127.0.0.1:{gateway_port}" in log_path.read_text()
    finally:
        code = stop(process)
    assert code == 0, log_path.read_text()[-3000:]
    assert _closed_within(10, kafka_port, mongo_port, gateway_port), "the broker, store and gateway are down"
    kept = sorted(path.name for path in (tmp_path / ".selfex" / "mongo").glob("selfex_*.db"))
    assert {"selfex_gateway.db", "selfex_registration.db"} <= set(kept), f"each service's data is kept under .selfex/: {kept}"


def test_selfex_up_refuses_a_taken_port_with_a_clear_message(tmp_path: Path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SELFEX_")}
        env |= {"SELFEX_EMBEDDED_KAFKA_PORT": str(port), "SELFEX_EMBEDDED_MONGO_PORT": str(free_port())}
        result = subprocess.run(selfex_command() + ["up"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert f"port {port} for the embedded kafka is taken: set SELFEX_EMBEDDED_KAFKA_PORT" in result.stderr + result.stdout


# --- supervision: a service that dies is started again; the rest of the stack keeps running ----------


def _log_events(log_path: Path, event: str) -> list[dict]:
    found = []
    for line in log_path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == event:
            found.append(record)
    return found


def _person() -> dict:
    return {"uid": hashlib.sha256(uuid.uuid4().bytes).hexdigest()}


async def test_a_killed_service_is_restarted_and_the_stack_keeps_its_topics(tmp_path: Path):
    kafka_port, mongo_port, gateway_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SELFEX_")}
    env |= {
        "SELFEX_EMBEDDED_KAFKA_PORT": str(kafka_port),
        "SELFEX_EMBEDDED_MONGO_PORT": str(mongo_port),
        "SELFEX_GATEWAY_PORT": str(gateway_port),
        "SELFEX_LOG_FORMAT": "json",
    }
    base_url = f"http://127.0.0.1:{gateway_port}"
    log_path = tmp_path / "up.log"
    with open(log_path, "wb") as log:  # noqa: ASYNC230 — before the loop has anything to do
        process = subprocess.Popen(  # noqa: ASYNC220 — the stack under test, started once
            selfex_command() + ["up", "--demo-operator"], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_for_health(base_url, process, log_path, timeout=90)
        key = (tmp_path / ".selfex" / "demo-operator.key").read_text().strip()
        started = {r["service"]: r for r in _log_events(log_path, "service_started")}
        assert set(started) == {"registration", "blocking", "audit", "verification", "notification", "forwarder", "gateway", "audit-query"}
        # Every stream service serves its readiness on a port of its own, and the stack says where.
        text = log_path.read_text()
        for name in ("registration", "blocking", "audit", "verification"):
            assert started[name]["readyz"].startswith("http://127.0.0.1:")
            assert f"{name} readiness: {started[name]['readyz']}" in text
        registration = started["registration"]

        async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=10) as client:

            async def ready(url: str) -> bool:
                try:
                    return (await client.get(url)).status_code == 200
                except httpx.HTTPError:
                    return False

            async def excluded(identity: dict) -> bool:
                answer = await client.post("/v1/checks", json={"identity": identity})
                return answer.status_code == 200 and answer.json()["excluded"]

            async def exclude(identity: dict) -> None:
                answer = await client.post("/v1/exclusions", json={"identity": identity, "duration": "+30d", "jurisdiction": "SE"})
                assert answer.status_code in (201, 202), answer.text
                await eventually(lambda: excluded(identity), timeout=60, what="the gateway to answer the exclusion")

            await eventually(lambda: ready(registration["readyz"]), timeout=60, what="registration to be ready")
            before = _person()
            await exclude(before)

            os.kill(registration["pid"], signal.SIGKILL)

            async def restarted():
                assert process.poll() is None, f"selfex up exited with {process.returncode}:\n{log_path.read_text()[-4000:]}"
                return [r for r in _log_events(log_path, "service_restarted") if r["service"] == "registration"]

            [again] = await eventually(restarted, timeout=30, what="registration to be started again")
            [died] = [r for r in _log_events(log_path, "service_died") if r["service"] == "registration"]
            assert died["pid"] == registration["pid"] and died["code"] == -signal.SIGKILL
            assert again["pid"] != registration["pid"]
            await eventually(lambda: ready(again["readyz"]), timeout=60, what="the new registration to be ready")

            # Nothing else went down: the same processes, the same broker and store, the same topics.
            assert process.poll() is None
            assert [r["service"] for r in _log_events(log_path, "service_restarted")] == ["registration"]
            for name in ("blocking", "audit", "verification", "gateway"):
                os.kill(started[name]["pid"], 0)  # still alive
            assert port_is_open(kafka_port) and port_is_open(mongo_port)
            assert await excluded(before), "an exclusion made before the crash is still answered"
            after = _person()
            await exclude(after)  # the new registration consumes the commands topic
            assert not await excluded(_person())
    finally:
        code = stop(process)
    assert code == 0, log_path.read_text()[-3000:]
    assert _closed_within(10, kafka_port, mongo_port, gateway_port), "the broker, store and gateway are down"


def test_a_service_that_keeps_dying_waits_longer_each_time_and_one_that_ran_well_starts_over():
    backoff = Backoff(first=0.5, cap=4.0, stable_after=60.0)
    assert [backoff.after_death(ran_for=0.1) for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff.after_death(ran_for=120.0) == 0.5
    assert backoff.after_death(ran_for=1.0) == 1.0


def _closed_within(seconds: float, *ports: int) -> bool:
    """Polled with a deadline, not read once: a connect to a free port in the ephemeral range can,
    rarely, meet itself (TCP simultaneous open) or a server another test has just started there."""
    deadline = time.monotonic() + seconds
    while any(port_is_open(port) for port in ports):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
