"""The sync's own decisions, without servers: a register that hashes with another key is refused, and
a change that began here is never imported back."""

from datetime import UTC, datetime

import httpx
import pytest

from services.forwarder.app import MissingRegisterSettingError, check_register_settings
from services.forwarder.sync import ChangeFeedSync, HashKeyMismatchError, Importer
from shared.events import SCOPE_ALL, RegisterChange
from shared.identity import Hasher
from shared.settings import Settings

SETTINGS = Settings(deployment_name="platform-a", forwarder_register="register-b", forwarder_sync_url="http://register-b.invalid")


def page(check: str) -> httpx.MockTransport:
    body = {"register": "register-b", "changes": [], "next": "", "more": False, "hash_key_id": "k1", "hash_key_check": check}
    return httpx.MockTransport(lambda request: httpx.Response(200, json=body))


async def test_a_register_that_hashes_with_another_key_is_refused_before_anything_is_imported():
    ours = Hasher(b"our-federation-key-0123456789")
    theirs = Hasher(b"another-key-entirely-98765432")
    sync = ChangeFeedSync(SETTINGS, deliveries=None, importer=None, hasher=ours, clock=lambda: datetime.now(UTC))  # type: ignore[arg-type]
    async with httpx.AsyncClient(base_url=SETTINGS.forwarder_sync_url, transport=page(sync.key_check)) as http:
        assert (await sync._page(http, ""))["changes"] == []
    wrong = ChangeFeedSync(SETTINGS, deliveries=None, importer=None, hasher=theirs, clock=lambda: datetime.now(UTC))  # type: ignore[arg-type]
    async with httpx.AsyncClient(base_url=SETTINGS.forwarder_sync_url, transport=page(sync.key_check)) as http:
        with pytest.raises(HashKeyMismatchError):
            await wrong._page(http, "")


def change(origin: str) -> RegisterChange:
    return RegisterChange(
        exclusion_id="x-1",
        version=1,
        change="activated",
        in_force=True,
        identifiers=["email:" + "a" * 64],
        scope=SCOPE_ALL,
        jurisdiction="SE",
        starts_at=datetime(2026, 12, 1, tzinfo=UTC),
        origin=origin,
    )


async def test_a_change_that_began_here_is_not_imported_and_one_from_elsewhere_is_with_its_origin():
    sent = []

    async def publish(event):
        sent.append(event)

    importer = Importer(SETTINGS, publish)
    assert not await importer.take(change("platform-a"), "register-b")
    assert await importer.take(change("register-b"), "register-b")
    [command] = sent
    assert command.type == "exclusion.import" and command.payload.origin == "register-b"
    assert command.payload.from_register == "register-b" and command.subject == "email:" + "a" * 64
    assert command.id == change("register-b").imported("register-b", None).id  # a page read twice imports nothing twice


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"forwarder_register": "b", "forwarder_register_url": "https://b.example"}, "SELFEX_FORWARDER_REGISTER_KEY"),
        ({"forwarder_register": "b", "forwarder_register_key": "sx_key"}, "SELFEX_FORWARDER_REGISTER_URL"),
        (
            {
                "forwarder_register": "b",
                "forwarder_adapter": "kafka",
                "forwarder_kafka_bootstrap": "k:9092",
                "forwarder_kafka_topic": "t",
                "forwarder_kafka_security_protocol": "SASL_SSL",
            },
            "SELFEX_FORWARDER_KAFKA_PASSWORD",
        ),
        ({"forwarder_sync_url": "https://b.example"}, "SELFEX_FORWARDER_SYNC_KEY"),
    ],
)
def test_a_register_named_without_its_key_or_address_stops_the_start_naming_the_setting(settings, named):
    with pytest.raises(MissingRegisterSettingError, match=named):
        check_register_settings(Settings(**settings))
    check_register_settings(Settings())  # no register: the forwarder idles
