"""The whole stack (``selfex up``) with a real SMTP server: a portal request, the code read from the
mail, submitted, the exclusion in force, and the start letter in the person's mailbox."""

import os
import re
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from selfex.stack import SERVICES
from shared.infra import free_port
from shared.store import create_client
from tests.e2e.conftest import selfex_command, stop, wait_for_health
from tests.notification.sinks import SmtpSink, text_of
from tests.support import eventually

pytestmark = pytest.mark.e2e


def selfex_up(env: dict[str, str], cwd: Path, log_path: Path) -> subprocess.Popen:
    with open(log_path, "wb") as log:
        return subprocess.Popen(selfex_command() + ["up"], env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)


async def test_a_portal_request_is_confirmed_with_the_mailed_code_and_the_start_letter_arrives(settings, smtp: SmtpSink, tmp_path: Path):
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
        "SELFEX_SMTP_PORT": str(smtp.port),
        "SELFEX_NOTIFICATION_QUIET_HOURS": "{}",  # the letter goes out whatever the hour the test runs at
        "SELFEX_LOG_FORMAT": "json",
    }
    log_path = tmp_path / "selfex-up.log"
    process = selfex_up(env, tmp_path, log_path)
    base_url = f"http://127.0.0.1:{port}"
    client = create_client(settings)
    try:
        wait_for_health(base_url, process, log_path)
        email = f"lova.{uuid.uuid4().hex[:8]}@example.se"
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
            request = {"national_id": "198503152384", "email": email, "duration": "+30d", "jurisdiction": "SE", "verify_by": "email"}
            requested = await http.post("/v1/portal/exclusions", json=request)
            assert requested.status_code == 202, requested.text
            exclusion_id = requested.json()["exclusion_id"]

            [code_mail] = await eventually(lambda: _async(smtp.to(email)), timeout=90, what="the code's mail")
            found = re.search(r"Din engångskod är (\d{6})\.", text_of(code_mail))
            assert found, text_of(code_mail)
            confirmed = await http.post(f"/v1/portal/exclusions/{exclusion_id}/code", json={"code": found.group(1)})
            assert confirmed.status_code == 200 and confirmed.json()["status"] == "verified", confirmed.text

            async def active():
                body = (await http.get(f"/v1/portal/exclusions/{exclusion_id}")).json()
                return body if body["state"] == "active" else None

            await eventually(active, timeout=60, what="the confirmed request to be in force")
            letters = await eventually(lambda: _async(smtp.to(email)[1:]), timeout=90, what="the start letter")

        [letter] = letters
        assert letter["Subject"] == "Din självavstängning från spel har börjat"
        text = text_of(letter)
        assert "kan inte hävas i förtid" in text and "Stödlinjen" in text and exclusion_id in text
        assert email not in log_path.read_text(), "the address is never logged"
    finally:
        stop(process)
        for name in SERVICES:
            await client.drop_database(settings.database_for(name))
        await client.close()


async def _async(value):
    return value
