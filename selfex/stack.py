"""``selfex up``: the embedded servers (unless real ones are named) and every service, as supervised processes.

A service that dies is started again after a capped, doubling delay (reset once it has run well for
a while), so one crash never takes the broker, the store or the other services down with it; only
Ctrl-C or SIGTERM stops the stack. Each stream service serves its readiness on a port of its own,
which the stack prints and watches.
"""

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from shared.broker import ensure_topics
from shared.infra import EmbeddedInfra, embedded_from_settings, environment_for, free_port, port_is_open
from shared.settings import InsecureSettingsError, Settings, audit_query_token

log = structlog.get_logger(__name__)

# name -> (module with create_app, kind). Streams are FastStream apps; http is the ASGI gateway.
SERVICES: dict[str, tuple[str, str]] = {
    "registration": ("services.registration.app", "stream"),
    "blocking": ("services.blocking.app", "stream"),
    "audit": ("services.audit.app", "stream"),
    "verification": ("services.verification.app", "stream"),
    "notification": ("services.notification.app", "stream"),
    "forwarder": ("services.forwarder.app", "stream"),  # with no register configured it idles and says so
    "gateway": ("services.gateway.app", "http"),
    "audit-query": ("services.audit.query", "http"),  # the compliance queries' read-only API (ADR 0007)
}
STOP_TIMEOUT_SECONDS = 15.0
SUPERVISE_EVERY_SECONDS = 0.2
READINESS_EVERY_SECONDS = 1.0


@dataclass
class Backoff:
    """How long to wait before starting a dead service again: doubling from ``first`` up to ``cap``.

    A service that ran for ``stable_after`` seconds before it died starts over from ``first``; one
    that keeps dying at once waits longer each time instead of spinning.
    """

    first: float = 0.5
    cap: float = 30.0
    stable_after: float = 60.0
    _next: float = field(default=0.0, init=False, repr=False)

    def after_death(self, ran_for: float) -> float:
        if not self._next or ran_for >= self.stable_after:
            self._next = self.first
        delay = self._next
        self._next = min(self._next * 2, self.cap)
        return delay


@dataclass
class Child:
    """One service process, what it is started with, and when it is due to be started again."""

    name: str
    env: dict[str, str]
    health_port: int = 0  # 0: the service serves no readiness of its own
    health_host: str = "127.0.0.1"
    backoff: Backoff = field(default_factory=Backoff)
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    restart_at: float = 0.0
    restarts: int = 0
    ready: bool | None = None
    readiness_checked_at: float = 0.0

    @property
    def readyz(self) -> str | None:
        return f"http://{self.health_host}:{self.health_port}/readyz" if self.health_port else None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def spawn(self, now: float) -> None:
        env = dict(self.env)
        if self.health_port:
            env["SELFEX_HEALTH_PORT"] = str(self.health_port)
        self.process = subprocess.Popen([sys.executable, "-m", "selfex.cli", "run", self.name], env=env, stdin=subprocess.DEVNULL)
        self.started_at, self.ready = now, None

    def poll_readiness(self) -> tuple[bool, str]:
        """Ask the service's ``/readyz``: ready or not, and the answer (or why there was none)."""
        assert self.readyz is not None
        try:
            with urllib.request.urlopen(self.readyz, timeout=0.5) as answer:
                return answer.status == 200, answer.read(500).decode(errors="replace")
        except urllib.error.HTTPError as exc:  # 503: not ready, with the reasons
            return False, exc.read(500).decode(errors="replace")
        except (OSError, ValueError) as exc:  # not listening (yet)
            return False, type(exc).__name__


@dataclass
class Stack:
    settings: Settings
    services: tuple[str, ...] = tuple(SERVICES)
    infra: EmbeddedInfra | None = None
    children: dict[str, Child] = field(default_factory=dict)
    demo_operator: bool = False  # `make run`: create (or re-key) the demo operator and print its key
    demo_key: str | None = None
    infra_lost: bool = False
    mail_sink: Any = None  # the development stack's SMTP sink (selfex.mail.MailSink)

    def run(self) -> int:
        """Start everything, keep every service running until a signal, then stop everything."""
        stop_requested: list[int] = []

        def request_stop(signum, _frame) -> None:
            stop_requested.append(signum)

        previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            print(f"Selfex is up. Gateway: http://{self.settings.gateway_host}:{self.settings.gateway_port}", flush=True)
            if "audit-query" in self.children:
                print(f"  audit queries (the gateway's /v1/compliance): {self.settings.audit_query_base_url}", flush=True)
            for child in self.children.values():
                if child.readyz:
                    print(f"  {child.name} readiness: {child.readyz}", flush=True)
            if self.mail_sink is not None:
                print(
                    f"Mail: every message goes to the SMTP sink on {self.mail_sink.host}:{self.mail_sink.port} and is kept under "
                    f"{self.mail_sink.folder}/ (selfex mail list, selfex mail show N)",
                    flush=True,
                )
            if self.demo_key:
                print(f"Demo operator key (roles operator,operator-compliance): {self.demo_key}", flush=True)
                print(f"  also in {self.settings.data_dir}/demo-operator.key", flush=True)
            print("Press Ctrl-C to stop.", flush=True)
            while not stop_requested:
                self.supervise(time.monotonic(), stopping=lambda: bool(stop_requested))
                time.sleep(SUPERVISE_EVERY_SECONDS)
            return 0
        finally:
            self.stop()
            for s, handler in previous.items():
                signal.signal(s, handler)

    def start(self) -> None:
        env = dict(os.environ)
        if not (self.settings.kafka_bootstrap and self.settings.mongo_uri):
            self.infra = embedded_from_settings(self.settings)
            self.infra.start()
            env = environment_for(self.infra, env)
            self.settings = self.settings.model_copy(
                update={"kafka_bootstrap": self.infra.kafka_bootstrap, "mongo_uri": self.infra.mongo_uri, "development": True}
            )
            env |= self._start_mail_sink()
        self.settings.require_secrets("selfex up")  # named servers: no service starts with a public secret
        env |= self._audit_query_address()
        asyncio.run(ensure_topics(self.settings))
        if self.demo_operator:
            self._issue_demo_key()
        now = time.monotonic()
        for name in self._startable():
            stream = SERVICES[name][1] == "stream"
            child = Child(name, env, health_port=free_port() if stream else 0, health_host=self.settings.health_host)
            child.spawn(now)
            self.children[name] = child
            log.info("service_started", service=name, pid=child.pid, readyz=child.readyz)

    def _audit_query_address(self) -> dict[str, str]:
        """The audit query API's port, and so the gateway's way to it: another free one when the
        configured port is taken (two development stacks on one machine), unless a URL is named."""
        if "audit-query" not in self.services or self.settings.audit_query_url:
            return {}
        port = self.settings.audit_query_port
        if port_is_open(port, self.settings.audit_query_host):
            port = free_port()
        self.settings = self.settings.model_copy(update={"audit_query_port": port})
        return {"SELFEX_AUDIT_QUERY_PORT": str(port)}

    def _startable(self) -> list[str]:
        """The services to run: all asked for, but the audit query API only with a token it accepts
        (outside development it refuses a weak one; the gateway then answers 503 naming the setting)."""
        names = list(self.services)
        if "audit-query" in names:
            try:
                audit_query_token(self.settings, "audit-query is not started")
            except InsecureSettingsError as exc:
                names.remove("audit-query")
                log.warning("service_not_started", service="audit-query", reason=str(exc))
                print(f"selfex up: {exc}", flush=True)
        return names

    def _start_mail_sink(self) -> dict[str, str]:
        """A development stack's mail stays on the machine: an SMTP sink keeps it under the data folder."""
        from selfex.mail import MailSink, mail_dir

        port = self.settings.smtp_port
        if port_is_open(port, "127.0.0.1"):
            port = free_port()
        self.mail_sink = MailSink(mail_dir(self.settings).resolve(), "127.0.0.1", port).start()
        log.info("mail_sink_started", port=port, folder=str(self.mail_sink.folder))
        return {"SELFEX_SMTP_HOST": "127.0.0.1", "SELFEX_SMTP_PORT": str(port), "SELFEX_SMTP_SECURITY": "none"}

    def _issue_demo_key(self) -> None:
        from services.gateway.operators import demo_operator, write_demo_key

        issued = asyncio.run(demo_operator(self.settings))
        write_demo_key(self.settings, issued.key)
        self.demo_key = issued.key

    def supervise(self, now: float, stopping: Callable[[], bool] = lambda: False) -> None:
        """One round: note the dead, start again those whose delay has passed, watch readiness."""
        for child in self.children.values():
            if stopping():
                return  # Ctrl-C reaches the children too: their deaths now are no crash
            if child.process is None:
                if now >= child.restart_at:
                    self._restart(child, now)
                continue
            code = child.process.poll()
            if code is None:
                self._watch_readiness(child, now)
                continue
            delay = child.backoff.after_death(now - child.started_at)
            log.error(
                "service_died", service=child.name, pid=child.pid, code=code, ran_for=round(now - child.started_at, 1), restart_in=delay
            )
            child.process, child.restart_at, child.ready = None, now + delay, None
        if self.infra is not None and not self.infra_lost and not self.infra.alive():
            self.infra_lost = True
            log.error("infrastructure_died", hint="the embedded broker or store exited; restart `selfex up`")

    def _restart(self, child: Child, now: float) -> None:
        if child.health_port and port_is_open(child.health_port, child.health_host):
            child.health_port = free_port()  # someone else took it meanwhile
        child.spawn(now)
        child.restarts += 1
        log.warning("service_restarted", service=child.name, pid=child.pid, restarts=child.restarts, readyz=child.readyz)

    def _watch_readiness(self, child: Child, now: float) -> None:
        if not child.readyz or now - child.readiness_checked_at < READINESS_EVERY_SECONDS:
            return
        child.readiness_checked_at = now
        ready, answer = child.poll_readiness()
        if ready != child.ready:
            if ready:
                log.info("service_ready", service=child.name, pid=child.pid)
            elif child.ready is not None:
                log.warning("service_unready", service=child.name, pid=child.pid, answer=answer)
            child.ready = ready

    def stop(self) -> None:
        running = [(child.name, child.process) for child in self.children.values() if child.process is not None]
        for _, process in running:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        for name, process in running:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("service_killed", service=name)
                process.kill()
                process.wait()
        self.children.clear()
        if self.mail_sink is not None:
            self.mail_sink.stop()
            self.mail_sink = None
        if self.infra is not None:
            self.infra.stop()
            self.infra = None
