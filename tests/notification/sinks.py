"""Real servers the notification tests send to: an SMTP server (aiosmtpd) and an HTTP sink for SMS,
each on a socket of its own, each keeping what it received and answering as the test tells it."""

import asyncio
import contextlib
import email
import email.policy
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import uvicorn
from aiosmtpd.controller import Controller
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from shared.infra import free_port


@dataclass
class SmtpSink:
    """An SMTP server: ``answers`` (e.g. ``["451 try later"]``) are given, in order, to the next DATA
    commands instead of accepting; ``refused`` addresses get ``550`` at RCPT. ``on_message`` runs
    for each message kept, before the server answers 250."""

    answers: list[str] = field(default_factory=list)
    refused: set[str] = field(default_factory=set)
    on_message: Callable[[EmailMessage], None] | None = None
    messages: list[EmailMessage] = field(default_factory=list)
    data_commands: int = 0
    port: int = field(default_factory=free_port)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _controller: Controller | None = None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refused:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self._lock:
            self.data_commands += 1
            if self.answers:
                return self.answers.pop(0)
            message = email.message_from_bytes(envelope.content, policy=email.policy.default)
            self.messages.append(message)  # type: ignore[arg-type]
        if self.on_message is not None:
            self.on_message(message)  # type: ignore[arg-type]
        return "250 Message accepted"

    def start(self) -> "SmtpSink":
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def to(self, address: str) -> list[EmailMessage]:
        with self._lock:
            return [m for m in self.messages if m["To"] == address]


def text_of(message: EmailMessage, subtype: str = "plain") -> str:
    part = message.get_body(preferencelist=(subtype,))
    assert part is not None, f"no text/{subtype} part"
    return part.get_content()


@dataclass
class HttpSink:
    """An SMS provider's webhook: keeps each JSON body and its Authorization header; ``statuses`` are
    answered, in order, before it answers 200."""

    statuses: list[int] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    calls: int = 0
    port: int = field(default_factory=free_port)
    _server: uvicorn.Server | None = None
    _task: asyncio.Task | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/sms"

    async def _sms(self, request: Request) -> JSONResponse:
        self.calls += 1
        if self.statuses:
            return JSONResponse({"error": "as the test asked"}, status_code=self.statuses.pop(0))
        self.received.append({**(await request.json()), "authorization": request.headers.get("authorization")})
        return JSONResponse({"status": "queued"}, status_code=202)

    async def start(self) -> "HttpSink":
        app = Starlette(routes=[Route("/sms", self._sms, methods=["POST"])])
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"))
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                await self._task
            await asyncio.sleep(0.01)
        return self

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def to(self, number: str) -> list[dict[str, Any]]:
        return [m for m in self.received if m["to"] == number]
