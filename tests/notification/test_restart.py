"""The service killed between handing a message to the SMTP server and recording that it did: started
again, it finds the attempt begun and not ended, records it unconfirmed and sends nothing twice."""

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from shared import topics
from shared.broker import ensure_topics
from shared.crypto import Sealer
from shared.events import ContactsRecorded, ContactsRecordedPayload, NotificationRequested, NotificationRequestedPayload
from shared.store import create_client
from tests.notification.conftest import notification_settings
from tests.support import Publisher, TopicReader, eventually

pytestmark = pytest.mark.integration

SELFEX = str(Path(sys.executable).parent / "selfex")


def start(env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen([SELFEX, "run", "notification"], env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


async def test_a_crash_between_sending_and_recording_sends_no_second_mail(settings, smtp, sms, tmp_path):
    configured = notification_settings(settings, smtp, sms)
    env = {**os.environ, **configured.environment()}
    log = tmp_path / "notification.log"
    sealer = Sealer.from_settings(configured)
    subject, address = f"person-{uuid.uuid4().hex[:8]}", f"crash-{uuid.uuid4().hex[:6]}@example.se"
    contacts = ContactsRecordedPayload(email=sealer.seal_text(address, ContactsRecordedPayload.sealing_context(subject)), locale="en")
    request = NotificationRequested(
        source="verification",
        subject=subject,
        payload=NotificationRequestedPayload(template="document_required", params={"exclusion_id": str(uuid.uuid4())}),
    )
    await ensure_topics(configured)
    first = start(env, log)
    smtp.on_message = lambda _message: os.kill(first.pid, signal.SIGKILL)  # the mail is kept; its sender dies before the 250
    client = create_client(configured)
    notifications = client[configured.database_for("notification")]["notifications"]
    second = None
    try:
        async with Publisher(configured) as publisher, TopicReader(configured, topics.NOTIFICATION_DELIVERIES) as deliveries:
            await publisher.event(ContactsRecorded(source="registration", subject=subject, payload=contacts))
            await publisher.event(request)
            await eventually(lambda: _async(first.poll() is not None), timeout=90, what="the service to be killed mid-send")
            assert first.returncode == -signal.SIGKILL
            assert len(smtp.messages) == 1
            stored = await notifications.find_one({"_id": f"{request.id}/0"})
            assert stored["state"] == "sending", "the attempt was recorded before the send, its outcome never"

            smtp.on_message = None
            second = start(env, log)
            [final] = await deliveries.wait_for(lambda m: m["payload"]["final"], timeout=90)

            assert (final["payload"]["outcome"], final["payload"]["attempt"]) == ("unconfirmed", 1)
            assert len(smtp.messages) == 1 and smtp.data_commands == 1, "no second mail"
            assert (await notifications.find_one({"_id": f"{request.id}/0"}))["state"] == "unconfirmed"
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(30)
        await client.drop_database(configured.database_for("notification"))
        await client.close()


async def _async(value):
    return value
