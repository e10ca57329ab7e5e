"""``selfex up`` on the embedded servers, as ``make run`` starts it: up, healthy, and down cleanly."""

import os
import subprocess
from pathlib import Path

import httpx
import pytest

from shared.infra import free_port, port_is_open
from tests.e2e.conftest import selfex_command, stop, wait_for_health

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
    assert not port_is_open(kafka_port) and not port_is_open(mongo_port) and not port_is_open(gateway_port)
    assert (tmp_path / ".selfex" / "mongo" / "selfex.db").exists(), "MongoDB data is kept under .selfex/"


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
