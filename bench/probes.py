"""What ``selfex bench enforcement`` does for each person it excludes, and the traffic around them.

- ``Flow``: account events at a steady rate into blocking, the operators' background traffic;
- ``Watch``: the decisions and enforcement topics read from their end, noting for each measured
  person when the first ``BLOCK`` and the first ``end_sessions`` for their account arrived;
- ``exclude``: one person excluded through the native API, then timed from the ``201`` until a
  GAMSTOP check says ``Y``, an account event of theirs is blocked, and their session is ended;
- ``warm_up``: one person excluded the whole way before any is timed.
"""

import asyncio
import json
import math
import statistics
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
from aiokafka import AIOKafkaProducer

from bench.http import person
from bench.measure import Output, producer, send_in_batches
from bench.workload import Workload
from services.blocking.publisher import KeyPartitions
from shared.events import AccountEventKind, AccountEventOccurred, AccountEventPayload
from shared.identity import Identity

FIRST_PERSON = 10**11  # far from the loaded people (0..N-1) and the flow's (N..N+accounts)
PROBE_EVERY_SECONDS = 0.02  # an account event of the person this often until one is blocked
CHECK_PAUSE_SECONDS = 0.01
# After a 503 (the gateway cannot tell yet: Retry-After) the check is asked again this much later, as
# a client honouring it would, if more eagerly: asking every 10 ms kept the gateway busy answering
# 503s while the feed it waited for caught up (a time measured this way is at most this much late).
UNAVAILABLE_PAUSE_SECONDS = 0.1
FLOW_TICK_SECONDS = 0.01


@dataclass
class Person:
    """One person the bench excludes, with their account at the operator, and what happened when."""

    k: int
    operator_id: str
    identity: Identity = field(init=False)
    account_id: str = field(init=False)
    status: int | str | None = None  # the exclusion request's answer, or the error that came instead
    sent_at: float | None = None  # perf_counter() when the exclusion request was sent
    sent_wall: float | None = None  # time.time() then, to compare with the services' own clocks
    answered_wall: float | None = None
    answer: dict[str, Any] = field(default_factory=dict)  # the request's answer (exclusion_id, or request_id for a 202)
    request_ms: float | None = None
    accepted_at: float | None = None  # perf_counter() when the 201 arrived
    gamstop_at: float | None = None
    blocked_at: float | None = None
    enforced_at: float | None = None
    allowed_after: int = 0  # ALLOW decisions for events sent after the 201
    unavailable_after: int = 0
    not_yet_checks: dict[str, int] = field(default_factory=dict)  # GAMSTOP answers other than Y after the 201, by answer
    noted: asyncio.Event = field(default_factory=asyncio.Event)
    blocked: asyncio.Event = field(default_factory=asyncio.Event)
    enforced: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.identity = person(FIRST_PERSON + self.k)
        self.account_id = f"enf-{self.k}"

    def account_event(self, operator_event_id: str) -> tuple[bytes, bytes]:
        event = AccountEventOccurred(
            source="bench",
            operator_id=self.operator_id,
            payload=AccountEventPayload(
                operator_event_id=operator_event_id, account_id=self.account_id, kind=AccountEventKind.LOGIN, identity=self.identity
            ),
        )
        return event.key(), event.model_dump_json().encode()

    def exclusion_request(self) -> dict[str, Any]:
        return {"identity": self.identity.model_dump(mode="json", exclude_none=True), "duration": "+6m", "jurisdiction": "UK"}

    def gamstop_form(self) -> bytes:
        identity = self.identity
        assert identity.date_of_birth is not None
        return urlencode(
            {
                "firstName": identity.first_name,
                "lastName": identity.last_name,
                "dateOfBirth": identity.date_of_birth.isoformat(),
                "email": identity.email,
                "postcode": identity.postcode,
            }
        ).encode()

    def ms_after(self, start: float | None, at: float | None) -> float | None:
        return None if at is None or start is None else (at - start) * 1000


async def exclude(one: Person, http: httpx.AsyncClient, key: str, send: AIOKafkaProducer, account_events: str, give_up: float) -> None:
    """Ask for the exclusion; once it is accepted (201), time its three effects, each for at most ``give_up`` s."""
    one.sent_at, one.sent_wall = time.perf_counter(), time.time()
    try:
        answer = await http.post("/v1/exclusions", json=one.exclusion_request(), headers={"X-API-Key": key})
    except httpx.HTTPError as error:  # no answer within the give-up time: counted, not timed
        one.status = type(error).__name__
        return
    one.accepted_at, one.answered_wall = time.perf_counter(), time.time()
    one.status, one.request_ms = answer.status_code, (one.accepted_at - one.sent_at) * 1000
    with suppress(ValueError):
        one.answer = answer.json()
    if answer.status_code != 201:
        return
    deadline = one.accepted_at + give_up
    await asyncio.gather(_checked(one, http, key, deadline), _blocked(one, send, account_events, deadline), _enforced(one, deadline))


async def warm_up(one: Person, http: httpx.AsyncClient, key: str, send: AIOKafkaProducer, account_events: str, timeout: float) -> None:
    """Exclude ``one`` and wait until a GAMSTOP check says ``Y`` and an account event of theirs is
    blocked, untimed: services that answer ready may still be settling their groups and connections,
    and the first measured requests must not pay for that (a loaded machine once answered all 20 of
    a test's requests 202). Raises if the exclusion takes no effect within ``timeout`` seconds."""
    deadline = time.perf_counter() + timeout
    answer = await http.post("/v1/exclusions", json=one.exclusion_request(), headers={"X-API-Key": key}, timeout=timeout)
    if answer.status_code not in (201, 202):
        raise RuntimeError(f"the warm-up exclusion was answered {answer.status_code}: {answer.text[:300]}")
    await asyncio.gather(_checked(one, http, key, deadline), _blocked(one, send, account_events, deadline))
    if one.gamstop_at is None or one.blocked_at is None:
        raise RuntimeError(
            f"the warm-up exclusion took no effect within {timeout:g} s (GAMSTOP Y: {one.gamstop_at is not None}, "
            f"blocked: {one.blocked_at is not None})"
        )


async def _checked(one: Person, http: httpx.AsyncClient, key: str, deadline: float) -> None:
    headers = {"X-API-Key": key, "Content-Type": "application/x-www-form-urlencoded"}
    form = one.gamstop_form()
    while time.perf_counter() < deadline:
        try:
            answer = await http.post("/", content=form, headers=headers, timeout=max(0.1, deadline - time.perf_counter()))
        except httpx.TimeoutException:
            return
        if answer.status_code == 200 and answer.headers.get("x-exclusion") == "Y":
            one.gamstop_at = time.perf_counter()
            return
        said = answer.headers.get("x-exclusion") if answer.status_code == 200 else None
        label = f"200 {said}" if said else str(answer.status_code)
        one.not_yet_checks[label] = one.not_yet_checks.get(label, 0) + 1
        await asyncio.sleep(UNAVAILABLE_PAUSE_SECONDS if answer.status_code == 503 else CHECK_PAUSE_SECONDS)


async def _blocked(one: Person, send: AIOKafkaProducer, account_events: str, deadline: float) -> None:
    n = 0
    while not one.blocked.is_set() and time.perf_counter() < deadline:
        key, value = one.account_event(f"after-{one.k}-{n}")
        await send.send(account_events, value, key=key)
        n += 1
        with suppress(TimeoutError):
            await asyncio.wait_for(one.blocked.wait(), PROBE_EVERY_SECONDS)


async def _enforced(one: Person, deadline: float) -> None:
    with suppress(TimeoutError):
        await asyncio.wait_for(one.enforced.wait(), max(0.0, deadline - time.perf_counter()))


class Watch:
    """The decisions and enforcement topics from their current end; the measured accounts' records
    timed as they arrive, every decision counted."""

    def __init__(
        self, bootstrap: str, decisions: str, enforcement: str, operator_id: str, people: list[Person], counted: tuple[str, ...] = ()
    ) -> None:
        """``decisions`` and ``enforcement``: the measured operator's own topics; ``counted``: other
        operators' decisions topics (the flow's), whose decisions are only counted."""
        self._outputs = [(Output(bootstrap, decisions), self._decision), (Output(bootstrap, enforcement), self._enforcement)]
        self._outputs += [(Output(bootstrap, topic), self._nothing) for topic in counted]
        self._counting = {id(output) for output, handle in self._outputs if handle != self._enforcement}
        self._prefix = f"{operator_id}:".encode()
        self._by_account = {p.account_id: p for p in people}
        self._tasks: list[asyncio.Task] = []
        self.decisions = 0

    async def __aenter__(self) -> "Watch":
        for output, handle in self._outputs:
            await output.__aenter__()
            self._tasks.append(asyncio.create_task(self._read(output, handle)))
        return self

    async def __aexit__(self, *exc) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for output, _ in self._outputs:
            await output.__aexit__(*exc)

    async def _read(self, output: Output, handle: Callable[[Person, dict, float], None]) -> None:
        while True:
            batches = await output.consumer.getmany(timeout_ms=100)
            arrived = time.perf_counter()
            for records in batches.values():
                for record in records:
                    if record.key is not None and record.key.startswith(self._prefix):
                        payload = json.loads(record.value)["payload"]
                        one = self._by_account.get(payload["account_id"])
                        if one is not None:
                            handle(one, payload, arrived)
            if id(output) in self._counting:
                self.decisions += sum(len(records) for records in batches.values())

    @staticmethod
    def _nothing(one: Person, payload: dict, arrived: float) -> None:
        pass

    @staticmethod
    def _decision(one: Person, payload: dict, arrived: float) -> None:
        if payload["operator_event_id"].startswith("note-"):
            one.noted.set()
        elif payload["outcome"] == "BLOCK":
            if one.blocked_at is None:
                one.blocked_at = arrived
                one.blocked.set()
        elif not one.blocked.is_set():
            if payload["outcome"] == "ALLOW":
                one.allowed_after += 1
            else:
                one.unavailable_after += 1

    @staticmethod
    def _enforcement(one: Person, payload: dict, arrived: float) -> None:
        if payload["action"] == "end_sessions" and one.enforced_at is None:
            one.enforced_at = arrived
            one.enforced.set()


class Flow:
    """Account events at ``rate`` per second into blocking while it runs; each second's events are
    made in a thread a second ahead, and sent in record batches every few milliseconds."""

    def __init__(self, bootstrap: str, topic: str, workload: Workload, rate: float, tag: str) -> None:
        self._bootstrap, self._topic, self._workload, self._rate, self._tag = bootstrap, topic, workload, rate, tag
        self._stopping = False
        self._task: asyncio.Task | None = None
        self.sent = 0
        self.seconds = 0.0

    async def __aenter__(self) -> "Flow":
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc) -> None:
        self._stopping = True
        if self._task is not None:
            await self._task

    def _made(self, second: int) -> asyncio.Future:
        return asyncio.ensure_future(asyncio.to_thread(self._workload.events, max(1, math.ceil(self._rate)), f"flow-{self._tag}-{second}"))

    async def _run(self) -> None:
        async with producer(self._bootstrap, 5) as send:
            partition_of = KeyPartitions(sorted(await send.partitions_for(self._topic)))
            second, upcoming = 0, self._made(0)
            events: list[Any] = []
            started = time.perf_counter()
            while not self._stopping:
                due = int((time.perf_counter() - started) * self._rate)
                batch: list[Any] = []
                while self.sent + len(batch) < due:
                    if not events:
                        events, second = list(reversed(await upcoming)), second + 1
                        upcoming = self._made(second)
                    batch.append(events.pop())
                if batch:
                    await send_in_batches(send, self._topic, partition_of, batch)
                    self.sent += len(batch)
                await asyncio.sleep(FLOW_TICK_SECONDS)
            self.seconds = time.perf_counter() - started
            await upcoming


def percentiles(samples_ms: list[float]) -> dict[str, Any]:
    """p50 / p95 / p99 / max in ms of what was measured (None when nothing was)."""
    if not samples_ms:
        return {"count": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    cuts = statistics.quantiles(samples_ms, n=100, method="inclusive") if len(samples_ms) > 1 else [samples_ms[0]] * 99
    return {
        "count": len(samples_ms),
        "p50_ms": round(cuts[49], 1),
        "p95_ms": round(cuts[94], 1),
        "p99_ms": round(cuts[98], 1),
        "max_ms": round(max(samples_ms), 1),
    }
