"""A small HTTP/1.1 load generator for the gateway bench: keep-alive connections over raw asyncio
streams (no client library on the hot path, so the client costs as little of the machine as it can).

Two shapes: closed loop (N connections, each sends its next request when the last is answered:
the most the server does) and open loop (requests sent on a fixed schedule whatever the answers:
latency measured from when each request was due, so a slow answer is not hidden by the ones it
delayed).
"""

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

Check = Callable[[int, dict[bytes, bytes], bytes], bool]  # (status, headers, body) → answer is right


@dataclass(frozen=True)
class Request:
    raw: bytes
    check: Check


@dataclass
class Result:
    requests: int = 0
    wrong: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        """Milliseconds."""
        if not self.latencies:
            return math.nan
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000

    def as_json(self) -> dict:
        return {
            "requests": self.requests,
            "wrong_answers": self.wrong,
            "seconds": round(self.seconds, 3),
            "per_second": round(self.per_second, 1),
            "p50_ms": round(self.percentile(50), 3),
            "p99_ms": round(self.percentile(99), 3),
        }


def http_request(method: str, target: str, host: str, *, headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Connection: keep-alive"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method in {"POST", "PUT", "PATCH"}:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> "Connection":
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def exchange(self, raw: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get(b"content-length", b"0"))
        body = await self.reader.readexactly(length) if length else b""
        return status, headers, body

    def close(self) -> None:
        self.writer.close()


async def closed_loop(
    host: str, port: int, requests: Sequence[Request], *, connections: int, seconds: float, warmup: float = 1.0
) -> Result:
    """``connections`` clients, each sending its next request as soon as the last is answered."""
    pool = [await Connection.open(host, port) for _ in range(connections)]
    result = Result()
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + seconds

    async def client(index: int, connection: Connection) -> None:
        position = index * 7919
        while True:
            request = requests[position % len(requests)]
            position += 1
            sent = time.perf_counter()
            if sent >= stop_at:
                return
            status, headers, body = await connection.exchange(request.raw)
            answered = time.perf_counter()
            if sent >= measure_from:
                result.requests += 1
                result.latencies.append(answered - sent)
                if not request.check(status, headers, body):
                    result.wrong += 1

    try:
        await asyncio.gather(*(client(i, c) for i, c in enumerate(pool)))
    finally:
        for connection in pool:
            connection.close()
    result.seconds = seconds
    return result


async def open_loop(host: str, port: int, requests: Sequence[Request], *, rate: float, seconds: float, connections: int) -> Result:
    """Requests due every 1/``rate`` s; each waits for a free connection if it must (and that counts)."""
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    pool = [await Connection.open(host, port) for _ in range(connections)]
    for connection in pool:
        idle.put_nowait(connection)
    result = Result()
    count = int(rate * seconds)
    start = time.perf_counter() + 0.1

    async def send(k: int, due: float) -> None:
        connection = await idle.get()
        try:
            request = requests[k % len(requests)]
            status, headers, body = await connection.exchange(request.raw)
            result.latencies.append(time.perf_counter() - due)
            result.requests += 1
            if not request.check(status, headers, body):
                result.wrong += 1
        finally:
            idle.put_nowait(connection)

    tasks = []
    try:
        for k in range(count):
            due = start + k / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(k, due)))
        await asyncio.gather(*tasks)
    finally:
        for connection in pool:
            connection.close()
    result.seconds = seconds
    return result
