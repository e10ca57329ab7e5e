"""Readiness: whether a service can do its work right now, and if not, why; served on ``GET /readyz``.

A service that cannot decide (a view not caught up, a feed stopped, a store away) says so instead of
guessing: each part of it that is not ready names itself and its reason, and the service is ready
only when no part objects. Consumers serve this on a small HTTP port of their own (the gateway on
its own app), so an orchestrator and the stack's supervisor can see it.
"""

import asyncio
import contextlib
from collections.abc import Callable, Generator

import structlog
import uvicorn
from aiokafka import ConsumerRebalanceListener
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

log = structlog.get_logger(__name__)


class Readiness:
    """Named reasons a service cannot do its work now; ready when there are none."""

    def __init__(self) -> None:
        self._reasons: dict[str, str] = {}
        self._probes: dict[str, Callable[[], str | None]] = {}

    def watch(self, part: str, probe: Callable[[], str | None]) -> None:
        """Ask ``probe`` at each look for ``part``'s reason not to be ready (None: ready): for a state
        that ages, such as a view not proven current for too long, which no event would report."""
        self._probes[part] = probe

    def not_ready(self, part: str, reason: str) -> None:
        """``part`` cannot do its work, because of ``reason`` (logged once per change)."""
        if self._reasons.get(part) != reason:
            log.warning("not_ready", part=part, reason=reason)
        self._reasons[part] = reason

    def ready(self, part: str) -> None:
        """``part`` can do its work again."""
        if self._reasons.pop(part, None) is not None:
            log.info("ready_again", part=part)

    @property
    def is_ready(self) -> bool:
        return not self.reasons()

    def reasons(self) -> dict[str, str]:
        reasons = dict(self._reasons)
        for part, probe in self._probes.items():
            reason = probe()
            if reason is not None:
                reasons[part] = reason
        return reasons

    def answer(self) -> tuple[int, dict]:
        """The ``/readyz`` answer: 200 when ready, else 503 with every reason."""
        reasons = self.reasons()
        if not reasons:
            return 200, {"status": "ready"}
        return 503, {"status": "unavailable", "reasons": reasons}


def readiness_app(readiness: Readiness) -> Starlette:
    """``GET /readyz`` (can it do its work now) and ``GET /healthz`` (is the process alive)."""

    async def readyz(_request: Request) -> JSONResponse:
        status, body = readiness.answer()
        return JSONResponse(body, status_code=status)

    async def healthz(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "alive"})

    return Starlette(routes=[Route("/readyz", readyz), Route("/healthz", healthz)])


class GroupMembership(ConsumerRebalanceListener):
    """Marks a consumer not ready until it has joined its group and been given its partitions, and
    while its group rebalances: an instance that never joins says so instead of looking started."""

    def __init__(self, readiness: Readiness, part: str) -> None:
        self._readiness = readiness
        self._part = part
        readiness.not_ready(part, "not_in_consumer_group")

    async def on_partitions_revoked(self, revoked) -> None:
        self._readiness.not_ready(self._part, "consumer_group_rebalancing")

    async def on_partitions_assigned(self, assigned) -> None:
        self._readiness.ready(self._part)


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves the process's signals to the service it runs beside."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class HealthServer:
    """The readiness endpoints of a consumer, on a port of its own (0: none is served)."""

    def __init__(self, readiness: Readiness, host: str, port: int) -> None:
        self.readiness = readiness
        self.host = host
        self.port = port
        self._server: _QuietServer | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        if not self.port:
            return
        config = uvicorn.Config(
            readiness_app(self.readiness), host=self.host, port=self.port, log_level="warning", lifespan="off", access_log=False
        )
        self._server = _QuietServer(config)
        self._task = asyncio.create_task(self._server.serve(), name="health-server")
        while not self._server.started:
            if self._task.done():  # e.g. the port is taken: say so at start, not later
                await self._task
                raise RuntimeError(f"the health server could not listen on {self.host}:{self.port}")
            await asyncio.sleep(0.01)
        log.info("health_server_listening", host=self.host, port=self.port)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._server = self._task = None
