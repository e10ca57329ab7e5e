"""Bad input on the real broker: parked once on the dead-letter topic (bounded, sealed), and the
consumer goes on with the next record of the same partition."""

import base64
import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.audit.app import create_app as create_audit
from services.blocking.app import create_app as create_blocking
from services.registration.app import create_app as create_registration
from services.verification.app import create_app as create_verification
from shared import topics
from shared.broker import ensure_operator_topics
from shared.events import (
    SCOPE_ALL,
    AccountEventKind,
    AccountEventOccurred,
    AccountEventPayload,
    CodeResendPayload,
    ExclusionActivated,
    ExclusionRequestedPayload,
    ExclusionSnapshot,
    RequestExclusion,
    ResendCode,
)
from shared.identity import Identity, uid_from_personnummer
from shared.settings import Settings
from tests.support import Publisher, TopicReader, committed_offset, dead_letter_original, eventually

pytestmark = pytest.mark.integration

SELFEX = str(Path(sys.executable).parent / "selfex")
KEY = b"one-partition"
NOT_JSON = b"\xff\xfe this is not JSON {"
BREAKS_CONTRACT = json.dumps({"type": "exclusion.request", "payload": {"duration": 30}}).encode()
# Under Kafka's default 1 MB record limit, but its dead letter with the bytes in base64 was over the
# producer's 1 MB request limit: it could not be published and the consumer retried it for ever.
BIG_NOT_JSON = b"\xff" + b'{"national_id": "19900101-1234", ' * 25_000  # ~825 KB
NOW = datetime.now(UTC)


@pytest.fixture(autouse=True)
async def operator_topics(settings):
    """op-1's topics exist before a consumer of every operator's topics starts, as `selfex operator add` makes them."""
    await ensure_operator_topics(settings, "op-1")


def fast_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"consumer_retry_first_seconds": 0.05, "consumer_retry_longest_seconds": 0.5, "registration_timer_seconds": 0.0}
    )


def request_exclusion() -> RequestExclusion:
    uid = uid_from_personnummer(f"19{uuid.uuid4().int % 10**10:010d}")
    return RequestExclusion(source="test", payload=ExclusionRequestedPayload(identity=Identity(uid=uid), duration="+30d", attested=True))


def activation() -> ExclusionActivated:
    snapshot = ExclusionSnapshot(
        exclusion_id=uuid.uuid4(), identifiers=[uuid.uuid4().hex], scope=SCOPE_ALL, jurisdiction="SE", starts_at=NOW
    )
    return ExclusionActivated(source="test", subject=uuid.uuid4().hex, payload=snapshot)


def account_event() -> AccountEventOccurred:
    payload = AccountEventPayload(
        operator_event_id=uuid.uuid4().hex, account_id="acc-1", kind=AccountEventKind.LOGIN, identity=Identity(email="kim@example.se")
    )
    return AccountEventOccurred(source="test", operator_id="op-1", payload=payload)


def version_99(event: Any) -> bytes:
    data = json.loads(event.model_dump_json())
    data["version"] = 99
    return json.dumps(data).encode()


OP_1_ACCOUNT_EVENTS = topics.of_operator("op-1", topics.ACCOUNT_EVENTS)


@dataclass
class Consumer:
    create_app: Callable[..., Any]
    service: str
    topic: str
    good: Callable[[], Any]
    group_topic: str | None = None  # the subscriber's first topic, which names its group

    def group(self, settings: Settings) -> str:
        return f"{settings.topic_prefix}{self.service}.{self.group_topic or self.topic}"


CONSUMERS = {
    "registration-commands": Consumer(create_registration, "registration", topics.EXCLUSION_COMMANDS, request_exclusion),
    "blocking-account-events": Consumer(create_blocking, "blocking", OP_1_ACCOUNT_EVENTS, account_event, group_topic=topics.ACCOUNT_EVENTS),
    "blocking-lifecycle": Consumer(create_blocking, "blocking", topics.EXCLUSION_LIFECYCLE, activation),
    "verification-lifecycle": Consumer(create_verification, "verification", topics.EXCLUSION_LIFECYCLE, activation),
    "verification-inputs": Consumer(
        create_verification,
        "verification",
        topics.VERIFICATION_INPUTS,
        lambda: ResendCode(source="test", payload=CodeResendPayload(exclusion_id=uuid.uuid4())),
    ),
    "audit-account-events": Consumer(create_audit, "audit", OP_1_ACCOUNT_EVENTS, account_event, group_topic="operator_topics"),
}


async def passed(settings: Settings, consumer: Consumer, partition: int, offset: int) -> bool:
    committed = await committed_offset(settings, consumer.group(settings), consumer.topic, partition)
    return committed is not None and committed > offset


@pytest.mark.parametrize("name", sorted(CONSUMERS))
async def test_a_record_too_big_to_dead_letter_whole_is_parked_once_and_the_next_record_is_handled(settings, database, name):
    consumer, settings = CONSUMERS[name], fast_settings(settings)
    good = consumer.good()
    app = consumer.create_app(settings, database=database)
    async with app, Publisher(settings) as publish, TopicReader(settings, topics.DEAD_LETTER) as dead_letters:
        bad = await publish.raw(consumer.topic, BIG_NOT_JSON, key=KEY)
        after = await publish.raw(consumer.topic, good.model_dump_json().encode(), key=KEY)
        assert after.partition == bad.partition

        await eventually(lambda: passed(settings, consumer, after.partition, after.offset), what="the good record to be handled")

        parked = [m for m in await dead_letters.read_to_end() if m["payload"]["topic"] == settings.topic(consumer.topic)]
        assert [(m["payload"]["partition"], m["payload"]["offset"]) for m in parked] == [(bad.partition, bad.offset)]
        [letter] = parked
        assert letter["version"] == 2 and letter["payload"]["consumer"] == consumer.service
        assert letter["payload"]["original_size"] == len(BIG_NOT_JSON)
        assert letter["payload"]["original_sha256"] == hashlib.sha256(BIG_NOT_JSON).hexdigest()
        assert letter["payload"]["original_truncated"] is True
        assert dead_letter_original(settings, letter) == BIG_NOT_JSON[: settings.dead_letter_max_original_bytes]
        assert b"19900101-1234" not in json.dumps(letter).encode(), "nothing personal in clear"
        if consumer.service == "audit":
            assert await database["audit_log"].find_one({"_id": str(good.id)}), "the good event is audited"


async def test_an_exclusion_accepted_after_a_huge_bad_command_takes_effect(settings, database):
    settings = fast_settings(settings)
    good = request_exclusion()
    async with create_registration(settings, database=database), Publisher(settings) as publish:
        async with (
            TopicReader(settings, topics.EXCLUSION_LIFECYCLE) as lifecycle,
            TopicReader(settings, topics.DEAD_LETTER) as dead_letters,
        ):
            bad = await publish.raw(topics.EXCLUSION_COMMANDS, BIG_NOT_JSON, key=KEY)
            await publish.raw(topics.EXCLUSION_COMMANDS, good.model_dump_json().encode(), key=KEY)

            [activated] = await lifecycle.wait_for(lambda m: m["causation_id"] == str(good.id))

            assert activated["type"] == "exclusion.activated"
            parked = [m for m in await dead_letters.read_to_end() if m["payload"]["offset"] == bad.offset]
            assert len(parked) == 1


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("registration-commands", request_exclusion),
        ("blocking-account-events", account_event),
        ("blocking-lifecycle", activation),
        ("verification-lifecycle", activation),
        ("audit-account-events", account_event),
    ],
)
async def test_a_message_of_a_contract_version_the_consumer_does_not_know_is_dead_lettered_not_read_as_version_1(
    settings, database, name, make
):
    consumer, settings = CONSUMERS[name], fast_settings(settings)
    unknown, good = make(), consumer.good()
    async with consumer.create_app(settings, database=database), Publisher(settings) as publish:
        async with TopicReader(settings, topics.DEAD_LETTER) as dead_letters:
            bad = await publish.raw(consumer.topic, version_99(unknown), key=KEY)
            after = await publish.raw(consumer.topic, good.model_dump_json().encode(), key=KEY)

            await eventually(lambda: passed(settings, consumer, after.partition, after.offset), what="the good record to be handled")

            parked = [m for m in await dead_letters.read_to_end() if m["payload"]["topic"] == settings.topic(consumer.topic)]
            assert [m["payload"]["offset"] for m in parked] == [bad.offset]
            assert "version 99" in parked[0]["payload"]["error"]
            assert json.loads(dead_letter_original(settings, parked[0]))["id"] == str(unknown.id)
        if consumer.service == "registration":
            async with TopicReader(settings, topics.EXCLUSION_LIFECYCLE) as lifecycle:
                lifecycle_events = await lifecycle.read_to_end()
            assert not [m for m in lifecycle_events if m["causation_id"] == str(unknown.id)], "not read as version 1"


@pytest.mark.parametrize(
    ("create_app", "topic"),
    [
        (create_registration, topics.EXCLUSION_COMMANDS),
        (create_blocking, OP_1_ACCOUNT_EVENTS),
        (create_blocking, topics.EXCLUSION_LIFECYCLE),
    ],
    ids=["registration-commands", "blocking-account-events", "blocking-lifecycle"],
)
async def test_small_bad_messages_are_dead_lettered_with_their_bytes_sealed_and_the_consumer_goes_on(settings, database, create_app, topic):
    settings = fast_settings(settings)
    async with (
        create_app(settings, database=database),
        Publisher(settings) as publish,
        TopicReader(settings, topics.DEAD_LETTER) as dead_letters,
    ):
        await publish.raw(topic, NOT_JSON, key=b"k")
        await publish.raw(topic, BREAKS_CONTRACT, key=b"k")
        parked = await dead_letters.wait_for(lambda m: m["payload"]["topic"] == settings.topic(topic), count=2)

        assert {dead_letter_original(settings, m) for m in parked} == {NOT_JSON, BREAKS_CONTRACT}
        for message in parked:
            assert message["type"] == "message.dead_lettered"
            assert message["payload"]["error"], "the reason is recorded"
            assert message["payload"]["offset"] is not None
            assert message["payload"]["original_truncated"] is False
            assert "original" not in message["payload"] or message["payload"]["original"] is None


async def test_a_command_with_a_header_that_is_not_utf8_is_handled_not_skipped(settings, database):
    settings = fast_settings(settings)
    good = request_exclusion()
    async with create_registration(settings, database=database), Publisher(settings) as publish:
        async with TopicReader(settings, topics.EXCLUSION_LIFECYCLE) as lifecycle:
            await publish.raw(topics.EXCLUSION_COMMANDS, good.model_dump_json().encode(), key=KEY, headers=[("trace", b"\xff\xfe")])

            [activated] = await lifecycle.wait_for(lambda m: m["causation_id"] == str(good.id))

    assert activated["type"] == "exclusion.activated"


async def test_selfex_deadletter_show_names_each_dead_letter_and_opens_its_bytes_only_when_asked_with_the_key(settings, database, tmp_path):
    settings = fast_settings(settings)
    secret = b'{"identity": {"email": "kim.secret@example.se"}, not JSON'
    async with (
        create_registration(settings, database=database),
        Publisher(settings) as publish,
        TopicReader(settings, topics.DEAD_LETTER) as dead_letters,
    ):
        await publish.raw(topics.EXCLUSION_COMMANDS, secret, key=b"k")
        [parked] = await dead_letters.wait_for(lambda m: m["payload"]["topic"] == settings.topic(topics.EXCLUSION_COMMANDS))

    env = {**os.environ, **settings.environment()}

    def show(*options: str, environment: dict[str, str] = env) -> list[dict]:
        done = subprocess.run(
            [SELFEX, "deadletter", "show", *options], env=environment, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True
        )
        return [json.loads(line) for line in done.stdout.splitlines()]

    [shown] = show("--consumer", "registration")
    assert (shown["id"], shown["topic"], shown["offset"]) == (
        parked["id"],
        settings.topic(topics.EXCLUSION_COMMANDS),
        parked["payload"]["offset"],
    )
    assert shown["original_sha256"] == hashlib.sha256(secret).hexdigest() and shown["error"]
    assert "kim.secret" not in json.dumps(shown), "nothing personal without --original"
    [opened] = show("--consumer", "registration", "--original")
    assert opened["original"] == secret.decode()
    assert show("--consumer", "no-such-consumer") == []

    elsewhere = {**env, "SELFEX_ENCRYPTION_KEYS": "x1:" + base64.b64encode(b"x" * 32).decode(), "SELFEX_ENCRYPTION_KEY_ID": "x1"}
    [unopened] = show("--original", environment=elsewhere)
    assert "original" not in unopened and "not among SELFEX_ENCRYPTION_KEYS" in unopened["original_unopened"]


async def test_selfex_deadletter_lists_counts_and_replays_a_fixed_command_which_then_takes_effect(settings, database, tmp_path):
    settings = fast_settings(settings)
    good = request_exclusion()
    broken = good.model_dump_json().encode()[:-1]  # one brace short: refused until a person fixes it
    env = {**os.environ, **settings.environment()}

    def selfex(*arguments: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [SELFEX, "deadletter", *arguments], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=check
        )

    async with (
        create_registration(settings, database=database),
        Publisher(settings) as publish,
        TopicReader(settings, topics.DEAD_LETTER) as dead_letters,
        TopicReader(settings, topics.EXCLUSION_LIFECYCLE) as lifecycle,
    ):
        await publish.raw(topics.EXCLUSION_COMMANDS, broken, key=KEY)
        [parked] = await dead_letters.wait_for(lambda m: m["payload"]["topic"] == settings.topic(topics.EXCLUSION_COMMANDS))

        listed = [json.loads(line) for line in selfex("list").stdout.splitlines()]
        mine = [g for g in listed if (g["topic"], g["consumer"]) == (settings.topic(topics.EXCLUSION_COMMANDS), "registration")]
        assert len(mine) == 1 and mine[0]["count"] >= 1 and mine[0]["oldest"] <= mine[0]["newest"]

        unknown = selfex("replay", str(uuid.uuid4()), "--file", "-", check=False)
        assert unknown.returncode == 2 and "no dead letter" in unknown.stderr
        assert selfex("replay", parked["id"], check=False).returncode == 2, "neither --file nor --original"

        fixed = tmp_path / "fixed.json"
        fixed.write_bytes(good.model_dump_json().encode())
        [sent] = [json.loads(line) for line in selfex("replay", parked["id"], "--file", str(fixed)).stdout.splitlines()]
        [activated] = await lifecycle.wait_for(lambda m: m["causation_id"] == str(good.id))

    assert sent["replayed"] == parked["id"] and sent["topic"] == settings.topic(topics.EXCLUSION_COMMANDS)
    assert activated["type"] == "exclusion.activated"
