"""How a delivery reaches the register: Selfex's native API, the ChipOut-compatible API, or a Kafka topic.

Each adapter takes the delivery as stored (the exclusion's terms, and what identifies the person,
still sealed) and either returns (the register has it) or raises ``PermanentDeliveryError`` /
``TransientDeliveryError``. The person's identifying fields are opened here, in memory, for the
request only; they are never logged nor stored open.
"""

import json
from datetime import datetime
from typing import Any, Protocol

import httpx
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from services.forwarder.domain import PermanentDeliveryError, TransientDeliveryError, chipout_duration, ended_as
from shared.crypto import Sealer
from shared.events import ExclusionCancelled, ExclusionLifted, ExclusionSnapshot, ForwardingIdentity, RegisterChange
from shared.identity import uid_from_personnummer
from shared.settings import Settings

RETRIED_STATUSES = {408, 409, 425, 429}
ENDS = {ExclusionLifted.model_fields["type"].default, ExclusionCancelled.model_fields["type"].default}
log = structlog.get_logger("forwarder")


class Adapter(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def deliver(self, delivery: dict[str, Any], now: datetime) -> None: ...


def snapshot_of(delivery: dict[str, Any]) -> ExclusionSnapshot:
    return ExclusionSnapshot.model_validate(delivery["snapshot"])


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        answer = response.json()
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _outcome(response: httpx.Response, what: str) -> None:
    if response.is_success:
        return
    reason = f"{what}: HTTP {response.status_code}"
    try:
        detail = response.json()
        if isinstance(detail, dict) and detail.get("field"):
            reason += f" ({detail['field']})"  # the field at fault, never the value
    except ValueError:
        pass
    if response.status_code >= 500 or response.status_code in RETRIED_STATUSES:
        raise TransientDeliveryError(reason)
    raise PermanentDeliveryError(reason)


class _Http:
    name = "http"

    def __init__(self, settings: Settings, sealer: Sealer, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self.sealer = sealer
        self._transport = transport
        self.client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self.client = httpx.AsyncClient(
            base_url=self.settings.forwarder_register_url.rstrip("/"),
            timeout=self.settings.forwarder_timeout_seconds,
            transport=self._transport,
            # An idle connection is let go before a register's server would close it (uvicorn: 5 s),
            # so a delivery is not sent on one being closed (a ReadError, and a retry for nothing).
            limits=httpx.Limits(keepalive_expiry=2.0),
        )

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.aclose()

    def identity(self, delivery: dict[str, Any]) -> ForwardingIdentity:
        token = delivery.get("sealed_identity")
        if not token:
            raise PermanentDeliveryError("nothing identifies the person to the register (no sealed identity was kept)")
        text = self.sealer.open_text(token, ForwardingIdentity.sealing_context(delivery["exclusion_id"]))
        return ForwardingIdentity.model_validate_json(text)

    async def post(self, path: str, **options: Any) -> httpx.Response:
        assert self.client is not None, "the adapter starts with the forwarder"
        try:
            return await self.client.post(path, **options)
        except httpx.TimeoutException as exc:
            raise TransientDeliveryError(f"the register did not answer in time ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise TransientDeliveryError(f"the register cannot be reached ({type(exc).__name__})") from None


class NativeAdapter(_Http):
    """A register that is Selfex: ``POST /v1/exclusions`` with the operator's key, an Idempotency-Key (the
    delivery's id: a retry after a lost answer is recognised, never registered twice) and this
    deployment's name as the origin (the register never forwards it back). A lift or cancellation here
    goes as ``POST /v1/register/ended`` the same way: the register's copy ends, if nothing else made it."""

    name = "native"

    def headers(self, delivery: dict[str, Any]) -> dict[str, str]:
        return {
            "X-API-Key": self.settings.forwarder_register_key.get_secret_value(),
            "Idempotency-Key": delivery["_id"],
            "X-Selfex-Origin": self.settings.deployment_name,
        }

    async def deliver(self, delivery: dict[str, Any], now: datetime) -> None:
        if delivery["change"] in ENDS:
            await self.deliver_end(delivery)
            return
        snapshot = snapshot_of(delivery)
        forwarding = self.identity(delivery)
        identity = forwarding.identity.model_dump(mode="json", exclude_none=True)
        body: dict[str, Any] = {
            "identity": identity,
            "duration": snapshot.duration,
            "jurisdiction": snapshot.jurisdiction,
            "scope": {"types": sorted(snapshot.scope.types), "games": sorted(snapshot.scope.games)},
        }
        if forwarding.year_of_birth is not None:
            body["year_of_birth"] = forwarding.year_of_birth
        if forwarding.gender is not None:
            body["gender"] = forwarding.gender
        _outcome(await self.post("/v1/exclusions", json=body, headers=self.headers(delivery)), "POST /v1/exclusions")

    async def deliver_end(self, delivery: dict[str, Any]) -> None:
        """The person as they were forwarded, how the exclusion ended here and when. A register with
        nothing of ours for them (a 404: it was never forwarded, say) has nothing to end: done."""
        snapshot = snapshot_of(delivery)
        forwarding = self.identity(delivery)
        ended_at = snapshot.ended_at or delivery["created_at"]
        body = {
            "identity": forwarding.identity.model_dump(mode="json", exclude_none=True),
            "ended_as": ended_as(delivery["change"]),
            "ended_at": ended_at.isoformat(),
        }
        response = await self.post("/v1/register/ended", json=body, headers=self.headers(delivery))
        if response.status_code == 404:
            log.info("origin_end_found_nothing", delivery_id=delivery["_id"], exclusion_id=delivery["exclusion_id"])
            return
        _outcome(response, "POST /v1/register/ended")
        answer = _json(response)
        if answer.get("status") == "kept":  # the register's copy runs on: another source made it too
            log.info("origin_end_kept", delivery_id=delivery["_id"], exclusion_id=delivery["exclusion_id"], reason=answer.get("reason"))


class ChipOutAdapter(_Http):
    """A ChipOut-style register: ``POST /api/v1.3/exclude-customers`` with the operator's key in the body.

    It sends what the protocol has fields for and nothing more: the ``uid`` (SHA-256 of the
    personnummer: an exclusion that names no national id cannot be forwarded this way), the scope,
    a duration it knows (+Nd/+Nm; until further notice as +12m), year of birth and gender. Never a
    name, address, e-mail or phone number. ChipOut has no idempotency key: a repeated delivery
    reaches the register as the same exclusion again, which extends nothing."""

    name = "chipout"

    async def deliver(self, delivery: dict[str, Any], now: datetime) -> None:
        snapshot = snapshot_of(delivery)
        forwarding = self.identity(delivery)
        identity = forwarding.identity
        uid = identity.uid or (uid_from_personnummer(identity.national_id) if identity.national_id else None)
        if uid is None:
            raise PermanentDeliveryError("ChipOut identifies a person only by uid (the personnummer's SHA-256); this exclusion names none")
        year = forwarding.year_of_birth or (identity.date_of_birth.year if identity.date_of_birth else None)
        body = {
            "key": self.settings.forwarder_register_key.get_secret_value(),
            "uid": uid,
            "type": sorted(t.value for t in snapshot.scope.types),
            "games": sorted(g.value for g in snapshot.scope.games) or ["ALL"],
            "duration": chipout_duration(snapshot, now),
            "year": str(year) if year else "",
            "gender": forwarding.gender or "U",
        }
        _outcome(await self.post("/api/v1.3/exclude-customers", json=body), "POST exclude-customers")


class KafkaAdapter:
    """A register's topic on another cluster: each change as the change feed shows it (keyed hashes
    only, ``RegisterChange``), keyed by the exclusion, with the delivery's id in a header."""

    name = "kafka"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        settings = self.settings
        options: dict[str, Any] = {"security_protocol": settings.forwarder_kafka_security_protocol}
        if settings.forwarder_kafka_security_protocol.startswith("SASL"):
            options |= {
                "sasl_mechanism": settings.forwarder_kafka_sasl_mechanism,
                "sasl_plain_username": settings.forwarder_kafka_username,
                "sasl_plain_password": settings.forwarder_kafka_password.get_secret_value(),
            }
        self.producer = AIOKafkaProducer(
            bootstrap_servers=settings.forwarder_kafka_bootstrap,
            acks="all",
            request_timeout_ms=int(settings.forwarder_timeout_seconds * 1000),
            enable_idempotence=settings.kafka_idempotence,
            **options,
        )
        await self.producer.start()

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()

    async def deliver(self, delivery: dict[str, Any], now: datetime) -> None:
        assert self.producer is not None, "the adapter starts with the forwarder"
        change = RegisterChange.of(delivery["change"], snapshot_of(delivery), self.settings.deployment_name, delivery["created_at"])
        if change is None:
            return
        value = json.dumps(change.model_dump(mode="json")).encode()
        try:
            await self.producer.send_and_wait(
                self.settings.forwarder_kafka_topic,
                value,
                key=change.exclusion_id.encode(),
                headers=[("selfex-delivery-id", delivery["_id"].encode()), ("selfex-origin", self.settings.deployment_name.encode())],
            )
        except KafkaError as exc:
            raise TransientDeliveryError(f"the register's topic cannot be written ({type(exc).__name__})") from None


def adapter_for(settings: Settings, sealer: Sealer, transport: httpx.AsyncBaseTransport | None = None) -> Adapter:
    if settings.forwarder_adapter == "kafka":
        return KafkaAdapter(settings)
    if settings.forwarder_adapter == "chipout":
        return ChipOutAdapter(settings, sealer, transport)
    return NativeAdapter(settings, sealer, transport)
