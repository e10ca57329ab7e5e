"""The whole stack as separate processes: ``selfex up`` against the session's servers."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from selfex.stack import SERVICES
from shared.infra import free_port
from shared.settings import Settings
from shared.store import create_client


@dataclass
class RunningStack:
    settings: Settings
    process: subprocess.Popen
    base_url: str
    log_path: Path

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


def selfex_command() -> list[str]:
    return [str(Path(sys.executable).parent / "selfex")]


def wait_for_health(base_url: str, process: subprocess.Popen, log_path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"selfex up exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the gateway did not answer /healthz within {timeout:.0f}s:\n{log_path.read_text()[-4000:]}")


def stop(process: subprocess.Popen, timeout: float = 30.0) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


@pytest.fixture
def stack(settings: Settings, tmp_path: Path):
    """``selfex up`` in its own process, pointed at the session's broker and store."""
    port = free_port()
    env = {
        **os.environ,
        "SELFEX_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "SELFEX_MONGO_URI": settings.mongo_uri,
        "SELFEX_MONGO_DB": settings.mongo_db,
        "SELFEX_TOPIC_PREFIX": settings.topic_prefix,
        "SELFEX_KAFKA_IDEMPOTENCE": str(settings.kafka_idempotence).lower(),
        "SELFEX_KAFKA_SESSION_TIMEOUT_MS": str(settings.kafka_session_timeout_ms),
        "SELFEX_KAFKA_LEAVE_GROUP_ON_STOP": str(settings.kafka_leave_group_on_stop).lower(),
        "SELFEX_HASH_SECRET": settings.hash_secret.get_secret_value(),
        "SELFEX_ENCRYPTION_KEYS": settings.encryption_keys.get_secret_value(),
        "SELFEX_ENCRYPTION_KEY_ID": settings.encryption_key_id,
        "SELFEX_GATEWAY_PORT": str(port),
        "SELFEX_LOG_FORMAT": "json",
    }
    log_path = tmp_path / "selfex-up.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(selfex_command() + ["up"], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(base_url, process, log_path)
        yield RunningStack(settings.model_copy(update={"gateway_port": port}), process, base_url, log_path)
    finally:
        stop(process)


@pytest_asyncio.fixture
async def databases(settings: Settings):
    """Each service's own database, by service name, where the stack's processes open it by default
    (``Settings.database_for``); dropped afterwards."""
    client = create_client(settings)
    try:
        yield {name: client[settings.database_for(name)] for name in SERVICES}
    finally:
        for name in SERVICES:
            await client.drop_database(settings.database_for(name))
        await client.close()
