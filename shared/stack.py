"""``selfex up``: the embedded servers (unless real ones are named) and every service, as processes."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import structlog

from shared.broker import ensure_topics
from shared.infra import EmbeddedInfra, embedded_from_settings, environment_for
from shared.settings import Settings

log = structlog.get_logger(__name__)

# name -> (module with create_app, kind). Streams are FastStream apps; http is the ASGI gateway.
SERVICES: dict[str, tuple[str, str]] = {
    "registration": ("services.registration.app", "stream"),
    "blocking": ("services.blocking.app", "stream"),
    "audit": ("services.audit.app", "stream"),
    "verification": ("services.verification.app", "stream"),
    "gateway": ("services.gateway.app", "http"),
}
STOP_TIMEOUT_SECONDS = 15.0


class Stopped(Exception):
    """A signal asked the stack to stop."""


@dataclass
class Stack:
    settings: Settings
    services: tuple[str, ...] = tuple(SERVICES)
    infra: EmbeddedInfra | None = None
    children: dict[str, subprocess.Popen] = field(default_factory=dict)
    demo_operator: bool = False  # `make run`: create (or re-key) the demo operator and print its key
    demo_key: str | None = None

    def run(self) -> int:
        """Start everything, wait for a signal or a death, stop everything. The exit code says which."""
        stop_requested: list[int] = []

        def request_stop(signum, _frame) -> None:
            stop_requested.append(signum)

        previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            print(f"Selfex is up. Gateway: http://{self.settings.gateway_host}:{self.settings.gateway_port}", flush=True)
            if self.demo_key:
                print(f"Demo operator key (scopes check,exclude,compliance): {self.demo_key}", flush=True)
                print(f"  also in {self.settings.data_dir}/demo-operator.key", flush=True)
            print("Press Ctrl-C to stop.", flush=True)
            while not stop_requested:
                dead = self._dead_child()
                if dead:
                    log.error("service_died", service=dead, code=self.children[dead].returncode)
                    return 1
                time.sleep(0.2)
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
                update={"kafka_bootstrap": self.infra.kafka_bootstrap, "mongo_uri": self.infra.mongo_uri}
            )
        asyncio.run(ensure_topics(self.settings))
        if self.demo_operator:
            self._issue_demo_key()
        for name in self.services:
            self.children[name] = subprocess.Popen(
                [sys.executable, "-m", "shared.cli", "run", name], env=env, stdin=subprocess.DEVNULL
            )
            log.info("service_started", service=name, pid=self.children[name].pid)

    def _issue_demo_key(self) -> None:
        from services.gateway.operators import demo_operator, write_demo_key

        issued = asyncio.run(demo_operator(self.settings))
        write_demo_key(self.settings, issued.key)
        self.demo_key = issued.key

    def _dead_child(self) -> str | None:
        return next((name for name, child in self.children.items() if child.poll() is not None), None)

    def stop(self) -> None:
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        for name, child in self.children.items():
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("service_killed", service=name)
                child.kill()
                child.wait()
        self.children.clear()
        if self.infra is not None:
            self.infra.stop()
            self.infra = None
