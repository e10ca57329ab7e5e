"""``selfex bench enforcement``: how long an exclusion takes to be enforced, on the whole stack.

Starts embedded servers on free ports unless SELFEX_KAFKA_BOOTSTRAP and SELFEX_MONGO_URI name real
ones. Then, in one run:

1. N exclusions written in bulk into each service's own database through its own repository:
   registration's and the gateway's as ``selfex bench http`` does, blocking's projection as
   ``selfex bench decisions`` does (the same people, by national id);
2. the services as separate processes (``selfex run NAME``): registration, verification, the
   gateway and blocking as deployed, two instances (audit with ``--audit``);
3. a steady flow of account events into blocking (1,000/s by default) for the rest of the run;
4. one account event of each person to be excluded, so that blocking has seen their account; then
   M people excluded at a steady rate through the native API (``POST /v1/exclusions``), each timed
   from its ``201`` until (a) a GAMSTOP check for them answers ``X-Exclusion: Y``, (b) an account
   event of theirs is answered ``BLOCK`` on the decisions topic (one is sent every 20 ms until then),
   (c) ``end_sessions`` for their account arrives on the enforcement topic;
5. the machine's limit in the same run: one record produced and consumed on a fresh topic;
6. once the stack has stopped, blocking's restart at each of ``--restart-sizes`` exclusions, measured
   as ``python -m bench.restart`` measures it: a cold start, then a restart from the
   snapshot of its view, each timed until ``/readyz`` answers 200.

A benchmark, not a test: it reports what it measures and asserts nothing.
"""

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from subprocess import Popen

import httpx
from pymongo.errors import PyMongoError

from bench import http as gateway_bench
from bench import measure, restart
from bench.decisions import READY_TIMEOUT_SECONDS, account_events_group, child, servers, service_environment, store_exclusions
from bench.probes import Flow, Person, Watch, exclude, percentiles, warm_up
from bench.workload import OPERATOR, Workload
from services.blocking import repository as blocking_store
from services.gateway import repository as gateway_store
from services.gateway.access import ALL_PERMISSIONS as ALL_SCOPES
from services.gateway.operators import add
from shared import topics
from shared.broker import ensure_operator_topics, ensure_topics
from shared.identity import Hasher
from shared.infra import free_port
from shared.settings import Settings
from shared.store import create_client, ensure_indexes

HOP_TOPIC = "bench.hop"
HOST = "127.0.0.1"
TARGET_P99_MS = 1000.0
TARGET_RESTART_SECONDS = 30.0
WARM_UP_SECONDS = 60.0  # for the untimed first exclusion to take effect
EFFECTS = (
    ("gamstop", "GAMSTOP check answers Y"),
    ("block", "first account event BLOCKed"),
    ("end_sessions", "end_sessions on enforcement"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="selfex bench enforcement", description=__doc__.split("\n\n")[0])
    parser.add_argument("--exclusions", type=_count, default=100_000, help="exclusions loaded before the run")
    parser.add_argument("--excluded", type=_count, default=200, help="people excluded during the run, at --rate")
    parser.add_argument("--rate", type=float, default=5.0, help="exclusions made per second")
    parser.add_argument("--flow", type=float, default=1000.0, help="account events per second flowing through blocking meanwhile")
    parser.add_argument("--accounts", type=_count, default=10_000, help="operator accounts the flow's events come from")
    parser.add_argument("--give-up", type=float, default=30.0, help="seconds after a 201 past which an effect counts as missing")
    parser.add_argument("--hops", type=_count, default=200, help="records in the bare broker hop, at 50/s")
    parser.add_argument(
        "--restart-sizes",
        default="100000,1000000",
        help="exclusions blocking holds at each restart measured, comma-separated (empty: none)",
    )
    parser.add_argument("--partitions", type=_count, default=6, help="partitions per topic (a multiple of the blocking instances)")
    parser.add_argument("--audit", action="store_true", help="run the audit service too (it writes a log entry for every message)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--workdir", type=Path, help="keep the services' logs (and the embedded servers' data) here, not in a temporary directory"
    )
    args = parser.parse_args(argv)
    args.restart_sizes = sorted(_count(s) for s in args.restart_sizes.split(",") if s.strip())
    settings = Settings().model_copy(update={"topic_partitions": args.partitions})
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    with (
        nullcontext(str(args.workdir)) if args.workdir else tempfile.TemporaryDirectory(prefix="selfex-bench-enforcement-") as workdir,
        servers(settings, Path(workdir)) as (settings, kind),
    ):
        asyncio.run(run(args, settings, kind, Path(workdir)))
    return 0


def save(args, report: dict) -> None:
    """The figures so far, in the --json file: a later phase that fails loses nothing measured before it."""
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


def _count(text: str) -> int:
    value = int(text.replace("_", ""))
    if value < 1:
        raise argparse.ArgumentTypeError("a whole number of at least 1")
    return value


def progress(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


async def run(args, settings: Settings, kind: str, workdir: Path) -> dict:
    tag = uuid.uuid4().hex[:6]
    settings = settings.model_copy(
        update={
            "topic_prefix": f"enf{tag}.",
            "mongo_db": f"bench_enf_{tag}",
            "gateway_rate_per_second": 1e9,
            "gateway_rate_burst": 10**9,
        }
    )
    await ensure_topics(settings)
    await ensure_topics(settings, names=(HOP_TOPIC,))
    hasher = Hasher.from_settings(settings)
    names = ["registration", "verification", "gateway", "blocking", "blocking"] + (["audit"] if args.audit else [])
    report: dict = {
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "servers": kind},
        "settings": {
            key: getattr(args, key) for key in ("exclusions", "excluded", "rate", "flow", "partitions", "give_up", "restart_sizes")
        },
        "services": names,
    }
    client = create_client(settings)
    stores = gateway_bench.Stores.of(client, settings)
    blocking_db = client[settings.database_for("blocking")]
    try:
        await stores.indexed()
        issued = await add(gateway_store.MongoOperators(stores.gateway), f"bench-{tag}", ALL_SCOPES)
        workload = Workload(hasher=hasher, exclusions=args.exclusions, accounts=args.accounts)
        progress(f"loading {args.exclusions:,} exclusions into registration's, the gateway's and blocking's own databases")
        started = time.perf_counter()
        await asyncio.gather(
            gateway_bench.load(stores, hasher, 0, args.exclusions),
            store_exclusions(blocking_db, workload),
        )
        await ensure_indexes(blocking_db, blocking_store.INDEXES)
        report["load_seconds"] = round(time.perf_counter() - started, 1)
        with Stack(settings, workdir) as stack:
            progress(f"starting {', '.join(names)}")
            started = time.perf_counter()
            labels = [stack.start(name) for name in names]
            for label in labels:
                await stack.ready(label)
            await measure.until_group_stable(settings.kafka, account_events_group(settings), 2, READY_TIMEOUT_SECONDS)
            report["stack_ready_seconds"] = round(time.perf_counter() - started, 1)
            report |= await enforcement(args, settings, stack, workload, issued, tag, stores)
        report["restarts"] = []
        save(args, report)
        print_report(report)
        await restarts(args, settings, workdir, report)
    finally:
        try:
            for name in set(names):
                await client.drop_database(settings.database_for(name))
        except PyMongoError as error:  # the store is still busy: the figures are already out
            progress(f"the bench's databases were not dropped: {type(error).__name__}")
        await client.close()
    return report


@dataclass
class Running:
    process: Popen
    health_port: int
    log_path: Path
    exit: ExitStack


class Stack:
    """The services as separate processes (``selfex run NAME``), each serving its readiness on a port."""

    def __init__(self, settings: Settings, workdir: Path) -> None:
        self.gateway_port = free_port()
        self.env = service_environment(settings) | {
            "SELFEX_GATEWAY_HOST": HOST,
            "SELFEX_GATEWAY_PORT": str(self.gateway_port),
            "SELFEX_GATEWAY_RATE_PER_SECOND": str(settings.gateway_rate_per_second),
            "SELFEX_GATEWAY_RATE_BURST": str(settings.gateway_rate_burst),
        }
        self.workdir = workdir
        self.running: dict[str, Running] = {}
        self.started = 0

    def __enter__(self) -> "Stack":
        return self

    def __exit__(self, *exc) -> None:
        for label in list(self.running):
            self.stop(label)

    def start(self, name: str, label: str | None = None) -> str:
        self.started += 1
        label = label or f"{name}-{self.started}"
        # The gateway answers /readyz on its own port; each stream service on a port of its own.
        port = self.gateway_port if name == "gateway" else free_port()
        health = "0" if name == "gateway" else str(port)
        log_path = self.workdir / f"{label}.log"
        exit_stack = ExitStack()
        command = [sys.executable, "-m", "selfex.cli", "run", name]
        process = exit_stack.enter_context(child(command, self.env | {"SELFEX_HEALTH_PORT": health}, log_path))
        self.running[label] = Running(process, port, log_path, exit_stack)
        return label

    def stop(self, label: str) -> None:
        self.running.pop(label).exit.close()

    async def ready(self, label: str, timeout: float = 120.0) -> None:
        running = self.running[label]
        try:
            await gateway_bench._healthy(running.health_port, running.process, timeout)
        except RuntimeError:
            print(f"--- {label} (last lines) ---\n{running.log_path.read_text(errors='replace')[-3000:]}", file=sys.stderr)
            raise


async def enforcement(args, settings: Settings, stack: Stack, workload: Workload, issued, tag: str, stores: gateway_bench.Stores) -> dict:
    """The people excluded one by one while the flow runs, then the bare broker hop."""
    people = [Person(k, issued.operator.id) for k in range(args.excluded)]
    # The measured operator's own topics; the flow is another operator's (the workload's) on its own.
    await ensure_operator_topics(settings, issued.operator.id, OPERATOR)
    account_events, decisions, enforced = (settings.topic(topics.of_operator(issued.operator.id, kind)) for kind in topics.PER_OPERATOR)
    flow = Flow(settings.kafka, settings.topic(topics.of_operator(OPERATOR, topics.ACCOUNT_EVENTS)), workload, args.flow, tag)
    flow_decisions = settings.topic(topics.of_operator(OPERATOR, topics.DECISIONS))
    warm = Person(args.excluded, issued.operator.id)  # excluded first, untimed
    watch = Watch(settings.kafka, decisions, enforced, issued.operator.id, [*people, warm], counted=(flow_decisions,))
    async with (
        watch,
        flow,
        measure.producer(settings.kafka, 0) as send,
        httpx.AsyncClient(base_url=f"http://{HOST}:{stack.gateway_port}", timeout=args.give_up) as http,
    ):
        progress(f"flow of {args.flow:,.0f} account events/s started; an account event of each of {len(people)} people first")
        for one in people:
            key, value = one.account_event(f"note-{one.k}")
            await send.send(account_events, value, key=key)
        await asyncio.wait_for(asyncio.gather(*(one.noted.wait() for one in people)), 60)
        await asyncio.sleep(1.0)  # the seen accounts are stored while the decisions go out
        progress("one person excluded the whole way first, untimed")
        await warm_up(warm, http, issued.key, send, account_events, WARM_UP_SECONDS)
        progress(f"excluding {len(people)} people at {args.rate:g}/s")
        decided_before, flow_before, started = watch.decisions, flow.sent, time.perf_counter()
        tasks = []
        for one in people:
            await asyncio.sleep(max(0.0, started + one.k / args.rate - time.perf_counter()))
            tasks.append(asyncio.create_task(exclude(one, http, issued.key, send, account_events, args.give_up)))
        await asyncio.gather(*tasks)
        seconds = time.perf_counter() - started
        flow_figures = {
            "offered_per_second": round((flow.sent - flow_before) / seconds),
            "decisions_per_second": round((watch.decisions - decided_before) / seconds),
        }
        progress(f"the bare broker hop: {args.hops} records at 50/s")
        hop_records = [(b"hop", json.dumps({"payload": {"operator_event_id": f"hop-{n}"}}).encode(), f"hop-{n}") for n in range(args.hops)]
        async with measure.Output(settings.kafka, settings.topic(HOP_TOPIC)) as hop_output:
            hop = await measure.latency(settings.kafka, settings.topic(HOP_TOPIC), hop_output, hop_records, 50.0)
    accepted = [one for one in people if one.status == 201]
    registration_logs = [running.log_path for label, running in stack.running.items() if label.startswith("registration")]
    return {
        "answer_breakdown": await where_the_time_went(people, stores, registration_logs, args.give_up),
        "flow": flow_figures,
        "requests": {
            "answers": {
                str(status): sum(1 for one in people if one.status == status) for status in sorted({one.status for one in people}, key=str)
            },
            **percentiles([one.request_ms for one in people if one.status == 201 and one.request_ms is not None]),
        },
        "gamstop": {**_effect(accepted, "gamstop_at"), "not_yet_answers": _summed(one.not_yet_checks for one in accepted)},
        "block": {
            **_effect(accepted, "blocked_at"),
            "allowed_after_201": sum(one.allowed_after for one in accepted),
            "unavailable_after_201": sum(one.unavailable_after for one in accepted),
        },
        "end_sessions": _effect(accepted, "enforced_at"),
        "broker_hop": {
            "count": hop.answered,
            "p50_ms": round(hop.p50_ms, 1),
            "p95_ms": round(hop.p95_ms, 1),
            "p99_ms": round(hop.p99_ms, 1),
        },
    }


STEPS = (
    ("to_registration", "request → registration handles the command (gateway publish, commands topic)"),
    ("registration_published", "→ registration has stored and published the lifecycle event"),
    ("gateway_effect", "→ the gateway has written lookup, view and the command's effect"),
    ("effect_to_answer", "→ the answer (the gateway's read of its own effect)"),
)


async def where_the_time_went(people: list[Person], stores: gateway_bench.Stores, registration_logs: list[Path], give_up: float) -> dict:
    """Each request's way to its answer, step by step, from the services' own records (one machine,
    one clock): the exclusion's ``created_at`` (registration handling the command), registration's
    ``event_published`` log line, the gateway's ``command_effects.recorded_at`` (written once its
    lookup and view hold the exclusion), and the answer's arrival. A request answered 202 (its effect
    not written yet) is waited for, up to ``give_up`` seconds, so that its way is measured too."""
    waited_for = {str(one.answer["request_id"]) for one in people if "exclusion_id" not in one.answer and one.answer.get("request_id")}
    deadline = time.monotonic() + give_up
    while True:
        effects = await stores.gateway["command_effects"].find({}).to_list(None)
        by_command = {effect["_id"]: effect for effect in effects}
        if waited_for <= by_command.keys() or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    first_effect: dict[str, datetime] = {}
    for effect in effects:
        at = effect["recorded_at"]
        first_effect[effect["exclusion_id"]] = min(at, first_effect.get(effect["exclusion_id"], at))
    exclusion_of: dict[int, str] = {}
    for one in people:
        if "exclusion_id" in one.answer:
            exclusion_of[one.k] = str(one.answer["exclusion_id"])
        elif (effect := by_command.get(str(one.answer.get("request_id")))) is not None:
            exclusion_of[one.k] = effect["exclusion_id"]
    ids = sorted(set(exclusion_of.values()))
    created = {
        d["_id"]: d["created_at"]
        for d in await stores.registration["exclusions"].find({"_id": {"$in": ids}}, {"created_at": 1}).to_list(None)
    }
    published: dict[str, datetime] = {}
    for path in registration_logs:
        for line in path.read_text(errors="replace").splitlines():
            if '"event_published"' in line:
                record = json.loads(line)
                at = datetime.fromisoformat(record["timestamp"])
                published[record["exclusion_id"]] = min(at, published.get(record["exclusion_id"], at))
    steps: dict[str, list[float]] = {name: [] for name, _ in STEPS}
    for one in people:
        exclusion_id = exclusion_of.get(one.k)
        if exclusion_id is None or one.sent_wall is None or one.answered_wall is None:
            continue
        moments = [
            one.sent_wall,
            _epoch(created.get(exclusion_id)),
            _epoch(published.get(exclusion_id)),
            _epoch(first_effect.get(exclusion_id)),
            one.answered_wall,
        ]
        for (name, _), start, end in zip(STEPS, moments, moments[1:], strict=False):  # four steps between five moments
            if start is not None and end is not None:
                steps[name].append((end - start) * 1000)
    return {name: percentiles(samples) for name, samples in steps.items()}


def _epoch(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None


def _summed(counts) -> dict[str, int]:
    total: dict[str, int] = {}
    for each in counts:
        for label, n in each.items():
            total[label] = total.get(label, 0) + n
    return dict(sorted(total.items()))


def _effect(accepted: list[Person], moment: str) -> dict:
    """Times from the 201 (negative: the effect came before the answer), and from the request."""
    samples = [one.ms_after(one.accepted_at, getattr(one, moment)) for one in accepted]
    from_request = [one.ms_after(one.sent_at, getattr(one, moment)) for one in accepted]
    return {
        **percentiles([s for s in samples if s is not None]),
        "missing": sum(1 for s in samples if s is None),
        "from_request": percentiles([s for s in from_request if s is not None]),
    }


async def restarts(args, settings: Settings, workdir: Path, report: dict) -> None:
    """Blocking's restart at each size, once the stack has stopped, as ``python -m bench.restart``
    measures it (same servers, a database and topics of its own): a cold start (no snapshot of the
    view yet), then a restart, each timed until ``/readyz`` answers 200. Printed and saved as measured."""
    for size in args.restart_sizes:
        progress(f"blocking's restart with {size:,} exclusions (bench.restart)")
        try:
            figures = {"exclusions": size, "failed": None, **await restart.restart_size(settings, size, workdir, "")}
        except (RuntimeError, TimeoutError) as error:
            figures = {"exclusions": size, "failed": str(error).splitlines()[0]}
        report["restarts"].append(figures)
        save(args, report)
        print_restart(figures)
        if figures["failed"]:
            return


def _ms(figures: dict) -> str:
    if not figures["count"]:
        return "nothing measured"
    return f"p50 {figures['p50_ms']:,.1f} / p95 {figures['p95_ms']:,.1f} / p99 {figures['p99_ms']:,.1f} ms (max {figures['max_ms']:,.1f}; {figures['count']} measured)"


def print_report(report: dict) -> None:
    machine, s = report["machine"], report["settings"]
    print(f"\nselfex bench enforcement — {machine['cores']} cores, Python {machine['python']}, servers: {machine['servers']}")
    print(f"services: {', '.join(report['services'])} (blocking as deployed, two instances); {s['partitions']} partitions per topic")
    print(f"{s['exclusions']:,} exclusions loaded in {report['load_seconds']} s; stack ready in {report['stack_ready_seconds']} s")
    flow = report["flow"]
    print(
        f"flow: {flow['offered_per_second']:,} account events/s offered, {flow['decisions_per_second']:,} decisions/s read back (target {s['flow']:,.0f}/s)"
    )
    requests = report["requests"]
    answers = ", ".join(f"{n} × {status}" for status, n in requests["answers"].items())
    print(f"\n{s['excluded']} people excluded at {s['rate']:g}/s (POST /v1/exclusions): {answers}; request → 201 {_ms(requests)}")
    print(f"time from the 201 (negative: before it) until (target p99 ≤ {TARGET_P99_MS / 1000:g} s on 2 cores):")
    for name, label in EFFECTS:
        figures = report[name]
        verdict = "met" if figures["count"] and figures["p99_ms"] <= TARGET_P99_MS and not figures["missing"] else "NOT met"
        print(f"  {label:32} {_ms(figures)}; missing after {s['give_up']:g} s: {figures['missing']} — {verdict}")
        print(f"  {'':32} from the request: {_ms(figures['from_request'])}")
    block = report["block"]
    not_yet = ", ".join(f"{n} × {label}" for label, n in report["gamstop"]["not_yet_answers"].items()) or "none"
    print(
        f"  after a 201: GAMSTOP answers other than Y: {not_yet}; account events answered ALLOW "
        f"{block['allowed_after_201']}, UNAVAILABLE {block['unavailable_after_201']} (one sent every 20 ms until the first BLOCK)"
    )
    print("where a request's time went (each step's p50 / p95 / p99 ms, from the services' own records):")
    for name, label in STEPS:
        print(f"  {label:84} {_ms(report['answer_breakdown'][name])}")
    hop = report["broker_hop"]
    print(
        f"the machine's limit, a bare broker hop (produce → consume one record, fresh topic): p50 {hop['p50_ms']:.1f} / "
        f"p95 {hop['p95_ms']:.1f} / p99 {hop['p99_ms']:.1f} ms ({hop['count']} records)"
    )
    sys.stdout.flush()


def print_restart(result: dict) -> None:
    if result["failed"]:
        print(f"blocking with {result['exclusions']:,} exclusions: NOT ready — {result['failed']}", flush=True)
        return
    print(
        f"blocking with {result['exclusions']:,} exclusions (stored in {result['store_s']:.1f} s): cold start ready (GET /readyz 200) in "
        f"{result['cold_s']:.1f} s (view loaded from the projection in {result['cold_load_s']:.1f} s); restart ready in "
        f"{result['restart_s']:.1f} s (view loaded in {result['restart_load_s']:.1f} s) — target ≤ {TARGET_RESTART_SECONDS:g} s "
        f"at 1,000,000: {'met' if result['restart_s'] <= TARGET_RESTART_SECONDS else 'NOT met'}",
        flush=True,
    )
