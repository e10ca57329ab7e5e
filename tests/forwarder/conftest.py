"""Federated Selfex deployments in one test: each its own gateway (uvicorn on a free port), registration,
databases and topic prefix on the session's real broker and store, plus a forwarder (and blocking
where a test needs a login decided); and a fault-injecting HTTP proxy in front of a register."""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.forwarder.app import create_app as forwarder_app
from services.gateway.access import Role
from shared.infra import free_port
from shared.settings import Settings
from tests.gateway.conftest import World, serving, world
from tests.support import entered_together, eventually

# Small budgets: a test sees a retry, a breaker and a failure within seconds.
FAST = dict(
    forwarder_retry_first_seconds=0.05,
    forwarder_retry_longest_seconds=0.3,
    forwarder_attempts=4,
    forwarder_breaker_failures=3,
    forwarder_breaker_pause_seconds=1.0,
    forwarder_poll_seconds=0.1,
    forwarder_timeout_seconds=10.0,
)

T = TypeVar("T")

SECRETS = ("forwarder_register_key", "forwarder_sync_key", "forwarder_kafka_password")


@dataclass
class Deployment:
    """One Selfex deployment: its world (gateway + registration) and, once started, its forwarder."""

    name: str
    world: World
    stack: AsyncExitStack
    forwarder: Any = None
    forwarder_settings: Settings | None = None
    forwarder_db: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.world.base_url

    @property
    def http(self) -> httpx.AsyncClient:
        return self.world.client

    async def key_for(self, platform: str) -> str:
        """A key of a new operator here (another platform, syncing or forwarding to us)."""
        return await self.world.operator(platform, {Role.OPERATOR})

    async def start_forwarder(self, **settings: Any) -> Any:
        """The forwarder of this deployment, in its own database (``<db>_forwarder``), as ``selfex up`` runs it."""
        secrets = {k: SecretStr(v) for k, v in settings.items() if k in SECRETS and isinstance(v, str)}
        self.forwarder_settings = self.world.settings.model_copy(update={**FAST, **settings, **secrets})
        client = self.world.database.client  # the world's own client: no second server discovery on a busy machine
        self.forwarder_db = client[self.forwarder_settings.database_for("forwarder")]
        self.stack.push_async_callback(client.drop_database, self.forwarder_settings.database_for("forwarder"))
        self.forwarder = forwarder_app(self.forwarder_settings, database=self.forwarder_db)
        await self.stack.enter_async_context(self.forwarder)
        return self.forwarder

    async def stop_forwarder(self) -> None:
        await self.forwarder.stop()

    async def exclude(self, key: str, identity: dict[str, Any], duration: str = "+30d", jurisdiction: str = "SE") -> dict[str, Any]:
        answer = await self.http.post(
            "/v1/exclusions", headers={"X-API-Key": key}, json={"identity": identity, "duration": duration, "jurisdiction": jurisdiction}
        )
        assert answer.status_code == 201, answer.text
        return answer.json()

    async def gamstop(self, key: str, identity: dict[str, Any]) -> str:
        form = {
            "firstName": identity["first_name"],
            "lastName": identity["last_name"],
            "dateOfBirth": identity["date_of_birth"],
            "email": identity["email"],
            "postcode": identity["postcode"],
        }
        answer = await self.http.post("/", headers={"X-API-Key": key}, data=form)
        assert answer.status_code == 200, answer.text
        return answer.headers["X-Exclusion"]

    async def deliveries(self, **query: Any) -> list[dict[str, Any]]:
        return await self.forwarder_db["deliveries"].find(query).to_list(None)

    async def exclusions_of(self, email: str) -> list[dict[str, Any]]:
        """Registration's exclusions of the person with this e-mail (by its keyed hash)."""
        from shared.identity import Hasher, IdentifierKind, normalise_email

        hashed = Hasher.from_settings(self.world.settings).hash(IdentifierKind.EMAIL, normalise_email(email))
        return await self.world.database["exclusions"].find({"identifiers": hashed}).to_list(None)


@asynccontextmanager
async def deployment(servers, name: str, **overrides: Any) -> AsyncIterator[Deployment]:
    async with AsyncExitStack() as stack:
        the_world = await stack.enter_async_context(world(servers, deployment_name=name, **overrides))
        yield Deployment(name, the_world, stack)


@asynccontextmanager
async def deployments(servers, *names: str, **overrides: dict[str, Any]) -> AsyncIterator[tuple[Deployment, ...]]:
    """Several deployments, built at the same time; ``overrides``: a deployment's own settings by its
    name (``A={"clock": clock}``). Most of a world's start is waiting (each of its consumers joins
    its group in turn, about a second each on the embedded broker): one after another, three take
    16 s, together about 6. If one fails to start, the others are cancelled. They end as nested
    blocks would, the last named first."""
    async with AsyncExitStack() as stack:
        yield tuple(await entered_together(stack, [deployment(servers, name, **overrides.get(name, {})) for name in names]))


async def together(*starts: Awaitable[T]) -> list[T]:
    """Await ``starts`` at the same time (forwarders starting, each joining its group); their results
    in order. If one fails, the others are cancelled and the failure raised (in an ExceptionGroup)."""
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(_awaited(start)) for start in starts]
    return [task.result() for task in tasks]


async def _awaited(start: Awaitable[T]) -> T:
    return await start


def person(**more: str) -> dict[str, str]:
    """Someone new: a uid (ChipOut), name + date of birth + postcode and e-mail (GAMSTOP)."""
    tag = uuid.uuid4().hex[:10]
    identity = {
        "uid": uuid.uuid4().hex + uuid.uuid4().hex,
        "first_name": "Harriet",
        "last_name": f"Fed{tag}",
        "date_of_birth": "1985-04-12",
        "postcode": "GU1 1AA",
        "email": f"harriet.{tag}@example.com",
    }
    identity.update(more)
    return identity


class FaultProxy:
    """A real HTTP server in front of a register: passes requests on, or fails them as the test says.

    ``fail_for``: e-mails whose exclusion the register "answers" 500 for. ``lose_after_store``:
    e-mails whose request reaches the register, whose answer is then held back (the caller times
    out: a response lost after the register stored the record). Every request it saw is kept.
    """

    def __init__(self, target: str) -> None:
        self.target = target
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.fail_for: set[str] = set()
        self.lose_after_store: set[str] = set()
        self.seen: list[dict[str, Any]] = []
        self._release = asyncio.Event()
        self.app = Starlette(routes=[Route("/{path:path}", self._pass, methods=["GET", "POST"])])

    async def _pass(self, request: Request) -> Response:
        body = await request.body()
        sent = json.loads(body or b"{}") if request.method == "POST" else {}
        email = (sent.get("identity") or {}).get("email")
        record: dict[str, Any] = {
            "path": request.url.path,
            "email": email,
            "uid": sent.get("uid"),
            "fields": sorted(sent) + sorted(f"identity.{k}" for k in sent.get("identity") or {}),
            "idempotency_key": request.headers.get("idempotency-key"),
        }
        self.seen.append(record)
        if email in self.fail_for:
            record["status"] = 500
            return Response(b'{"error": "injected fault"}', status_code=500, media_type="application/json")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with httpx.AsyncClient(base_url=self.target, timeout=30) as client:
            answer = await client.request(request.method, request.url.path, params=request.query_params, content=body, headers=headers)
        record["status"] = answer.status_code
        record["replayed"] = answer.headers.get("idempotent-replayed")
        if email in self.lose_after_store:
            self.lose_after_store.discard(email)
            record["lost"] = True
            await self._release.wait()  # the answer never comes back in time
        return Response(answer.content, status_code=answer.status_code, headers={"content-type": answer.headers.get("content-type", "")})

    def posts_for(self, email: str) -> list[dict[str, Any]]:
        return [r for r in self.seen if r["email"] == email]

    @asynccontextmanager
    async def running(self) -> AsyncIterator["FaultProxy"]:
        async with serving(self.app, self.port):
            try:
                yield self
            finally:
                self._release.set()


async def delivered(deployment: Deployment, count: int, *, timeout: float = 30.0) -> list[dict[str, Any]]:
    async def probe():
        found = await deployment.deliveries(status="delivered")
        return found if len(found) >= count else None

    return await eventually(probe, timeout=timeout, what=f"{count} deliveries to be delivered")
