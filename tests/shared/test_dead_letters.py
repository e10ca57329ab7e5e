"""What a consumer parks and what it retries, and what a dead letter holds: pure logic, no broker."""

import asyncio
import hashlib
import json
import ssl

import pydantic
import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, MessageSizeTooLargeError, NotLeaderForPartitionError
from aiokafka.structs import ConsumerRecord
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    ConnectionFailure,
    DuplicateKeyError,
    ExecutionTimeout,
    NetworkTimeout,
    NotPrimaryError,
    OperationFailure,
    ServerSelectionTimeoutError,
    WriteConcernError,
    WriteError,
)

from services.registration.domain import RequestRefusedError
from shared.broker import DeadLetters, describe, is_poison
from shared.crypto import SealError
from shared.events import MessageDeadLettered, RequestExclusion
from shared.health import Readiness
from shared.settings import Settings

SETTINGS = Settings(dead_letter_max_original_bytes=1024, dead_letter_max_error_chars=300)


def refusal(data: object) -> pydantic.ValidationError:
    try:
        RequestExclusion.model_validate(data)
    except pydantic.ValidationError as error:
        return error
    raise AssertionError("accepted")


def record(value: bytes | None, *, key: bytes | None = b"k", offset: int = 7, partition: int = 1) -> ConsumerRecord:
    return ConsumerRecord(
        topic="t.exclusion.commands",
        partition=partition,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=0,
        serialized_value_size=0,
        headers=[],
    )


@pytest.mark.parametrize(
    "error",
    [
        json.JSONDecodeError("Expecting value", "{", 0),
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
        refusal({"payload": {"duration": 30}}),
        refusal({"version": 99, "payload": {"identity": {"email": "a@example.se"}, "duration": "+30d"}}),
        RequestRefusedError("+7y is not a duration offered in SE"),
        SealError("sealed data does not open"),
        ExceptionGroup("two bad records", [ValueError("a"), refusal({})]),
    ],
    ids=["json", "utf-8", "contract", "unknown-version", "contract-refusal", "seal", "group-of-poison"],
)
def test_a_message_that_can_never_succeed_is_poison(error):
    assert is_poison(error)


@pytest.mark.parametrize(
    "error",
    [
        ServerSelectionTimeoutError("no primary"),
        AutoReconnect("connection closed"),
        ConnectionFailure("refused"),
        NetworkTimeout("timed out"),
        NotPrimaryError("not primary", {"code": 10107}),
        OperationFailure("primary stepped down", code=189),
        OperationFailure("interrupted at shutdown", code=11600),
        ExecutionTimeout("operation exceeded time limit", code=50),
        WriteConcernError("waiting for replication timed out", code=64),
        WriteError("write failed", code=91),
        DuplicateKeyError("E11000 duplicate key", code=11000),
        BulkWriteError({"writeErrors": [{"code": 11000}]}),
        KafkaConnectionError(),
        KafkaTimeoutError(),
        NotLeaderForPartitionError(),
        MessageSizeTooLargeError(),
        ConnectionResetError(),
        ConnectionRefusedError(),
        TimeoutError(),
        TimeoutError(),
        OSError("no route to host"),
        ssl.SSLError("handshake"),
        ExceptionGroup("one bad record, one store error", [ValueError("a"), AutoReconnect("b")]),
    ],
    ids=lambda e: type(e).__name__,
)
def test_an_infrastructure_error_is_retried_whatever_its_code(error):
    assert not is_poison(error)


@pytest.mark.parametrize("error", [RuntimeError("kept changing"), KeyError("x"), TypeError("bug"), AssertionError()], ids=repr)
def test_an_unforeseen_error_is_retried_rather_than_parking_a_message_that_may_matter(error):
    assert not is_poison(error)


def test_cancellation_is_neither_parked_nor_retried():
    dead_letters = DeadLetters(SETTINGS, consumer="registration")

    async def cancelled():
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(dead_letters.retrying(cancelled, (record(b"x"),)))


def test_a_dead_letter_seals_the_original_keeps_its_digest_and_size_and_is_small_whatever_the_size():
    dead_letters = DeadLetters(SETTINGS, consumer="registration")
    original = b"\xff" + b'{"national_id": "19900101-1234"}' * 30_000  # ~960 KB, not JSON

    letter = dead_letters.dead_letter(record(original), refusal({"payload": {"duration": 30}}))

    payload = letter.payload
    assert (payload.topic, payload.partition, payload.offset, payload.key) == ("t.exclusion.commands", 1, 7, "k")
    assert (payload.original_size, payload.original_sha256) == (len(original), hashlib.sha256(original).hexdigest())
    assert payload.original_truncated and payload.original is None
    assert b"19900101-1234" not in letter.model_dump_json().encode()
    assert len(letter.model_dump_json()) < 3 * 1024
    assert dead_letters.open_original(MessageDeadLettered.model_validate_json(letter.model_dump_json())) == original[:1024]


def test_a_small_original_is_sealed_whole_and_opens_only_as_the_original_of_its_position():
    dead_letters = DeadLetters(SETTINGS, consumer="registration")

    letter = dead_letters.dead_letter(record(b"not json {"), ValueError("bad"))

    assert not letter.payload.original_truncated
    assert dead_letters.open_original(letter) == b"not json {"
    moved = letter.model_copy(update={"payload": letter.payload.model_copy(update={"offset": 8})})
    with pytest.raises(SealError):
        dead_letters.open_original(moved)


def test_a_record_is_dead_lettered_under_the_same_id_each_time_so_parking_it_again_is_a_duplicate():
    dead_letters = DeadLetters(SETTINGS, consumer="registration")

    first = dead_letters.dead_letter(record(b"x"), ValueError("bad"))

    assert dead_letters.dead_letter(record(b"x"), ValueError("bad")).id == first.id
    assert dead_letters.dead_letter(record(b"x", offset=8), ValueError("bad")).id != first.id


def test_the_key_and_the_reason_are_bounded_and_the_reason_never_quotes_the_input():
    dead_letters = DeadLetters(SETTINGS, consumer="registration")
    error = refusal({"payload": {"identity": {"email": "asa.lindstrom"}, "duration": "x" * 10_000}})

    letter = dead_letters.dead_letter(record(b"x", key=b"k" * 5000), ValueError("v" * 10_000))

    assert len(letter.payload.key) == 200
    assert len(letter.payload.error) == 300
    assert "asa.lindstrom" not in describe(error) and "xxxx" not in describe(error)


def test_an_empty_record_is_dead_lettered_with_the_digest_of_nothing():
    dead_letters = DeadLetters(SETTINGS, consumer="registration")

    letter = dead_letters.dead_letter(record(None, key=None), ValueError("empty"))

    assert (letter.payload.original_size, letter.payload.key) == (0, None)
    assert letter.payload.original_sha256 == hashlib.sha256(b"").hexdigest()


async def test_park_record_refuses_to_park_an_infrastructure_error_and_raises_it_for_a_retry():
    dead_letters = DeadLetters(SETTINGS, consumer="blocking")  # no broker: parking would fail differently

    with pytest.raises(AutoReconnect):
        await dead_letters.park_record(record(b"{}"), AutoReconnect("store away"))


async def test_retrying_marks_the_topic_not_ready_until_the_attempt_succeeds():
    readiness = Readiness()
    settings = SETTINGS.model_copy(update={"consumer_retry_first_seconds": 0.001, "consumer_retry_longest_seconds": 0.002})
    dead_letters = DeadLetters(settings, consumer="registration", readiness=readiness)
    failures = [AutoReconnect("a"), KafkaConnectionError(), DuplicateKeyError("E11000", code=11000)]
    seen: list[dict[str, str]] = []

    async def attempt():
        seen.append(readiness.reasons())
        if failures:
            raise failures.pop(0)
        return "done"

    records = (record(b"x"),)
    assert await dead_letters.retrying(attempt, records) == "done"
    assert seen[0] == {}
    assert seen[1:] == [
        {"consumer:t.exclusion.commands": f"retrying_after_{name}"}
        for name in ("AutoReconnect", "KafkaConnectionError", "DuplicateKeyError")
    ]
    dead_letters.succeeded(records)
    assert readiness.is_ready


async def test_a_retry_in_flight_gives_up_as_soon_as_the_service_stops():
    """A stop never waits out a retry round (here an hour) against a store that is away: the
    error is raised at once, so the message is left uncommitted for the next instance."""
    settings = SETTINGS.model_copy(
        update={"consumer_retry_round_seconds": 3600, "consumer_retry_first_seconds": 30, "consumer_retry_longest_seconds": 30}
    )
    dead_letters = DeadLetters(settings, consumer="blocking")
    attempts, tried = 0, asyncio.Event()

    async def attempt():
        nonlocal attempts
        attempts += 1
        tried.set()
        raise AutoReconnect("store away")

    retrying = asyncio.create_task(dead_letters.retrying(attempt, (record(b"x"),)))
    await asyncio.wait_for(tried.wait(), timeout=10)
    dead_letters.stop_retrying()  # mid-pause: the 30 s back-off is cut short
    with pytest.raises(AutoReconnect):
        await asyncio.wait_for(retrying, timeout=10)
    assert attempts <= 2


async def test_a_poison_error_is_not_retried():
    dead_letters = DeadLetters(SETTINGS, consumer="registration")
    calls = []

    async def attempt():
        calls.append(1)
        raise refusal({})

    with pytest.raises(pydantic.ValidationError):
        await dead_letters.retrying(attempt, (record(b"x"),))
    assert len(calls) == 1


async def test_a_round_of_retries_ends_with_the_error_and_the_topic_still_not_ready():
    readiness = Readiness()
    settings = SETTINGS.model_copy(
        update={"consumer_retry_first_seconds": 0.001, "consumer_retry_longest_seconds": 0.002, "consumer_retry_round_seconds": 0.05}
    )
    dead_letters = DeadLetters(settings, consumer="registration", readiness=readiness)

    async def attempt():
        raise ServerSelectionTimeoutError("no primary")

    with pytest.raises(ServerSelectionTimeoutError):
        await dead_letters.retrying(attempt, (record(b"x", partition=0), record(b"y", partition=2)))
    assert readiness.reasons() == {"consumer:t.exclusion.commands": "retrying_after_ServerSelectionTimeoutError"}
    dead_letters.succeeded((record(b"x", partition=0),))
    assert not readiness.is_ready, "partition 2 is still held"
    dead_letters.succeeded((record(b"y", partition=2),))
    assert readiness.is_ready


async def test_a_coroutine_returned_by_a_plain_callable_is_awaited_not_taken_for_the_result():
    dead_letters = DeadLetters(SETTINGS, consumer="registration")

    async def handled():
        return "handled"

    assert await dead_letters.retrying(lambda: handled(), (record(b"x"),)) == "handled"


class FlakyBroker:
    """Fails to publish ``failures`` times (the broker away), then publishes."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.published: list[bytes] = []

    async def publish(self, body: bytes, **_options) -> None:
        if self.failures:
            self.failures -= 1
            raise KafkaConnectionError()
        self.published.append(body)


class Message:
    def __init__(self, raw) -> None:
        self.raw_message = raw
        self.correlation_id = "c-1"


def middleware_for(dead_letters: DeadLetters):
    from faststream._internal.context.repository import ContextRepo

    return dead_letters.middleware()(None, context=ContextRepo())


async def test_a_dead_letter_that_cannot_be_published_yet_is_retried_before_the_message_is_let_go():
    readiness = Readiness()
    settings = SETTINGS.model_copy(update={"consumer_retry_first_seconds": 0.001, "consumer_retry_longest_seconds": 0.002})
    broker = FlakyBroker(failures=3)
    dead_letters = DeadLetters(settings, consumer="registration", broker=broker, readiness=readiness)

    async def refuse(_msg):
        raise refusal({})

    assert await middleware_for(dead_letters).consume_scope(refuse, Message(record(b"{}"))) is None
    assert len(broker.published) == 1, "parked once, after the broker came back"
    assert readiness.is_ready


async def test_a_dead_letter_still_unpublished_after_a_round_fails_the_message_so_it_is_not_committed_past():
    readiness = Readiness()
    settings = SETTINGS.model_copy(
        update={"consumer_retry_first_seconds": 0.001, "consumer_retry_longest_seconds": 0.002, "consumer_retry_round_seconds": 0.05}
    )
    dead_letters = DeadLetters(settings, consumer="registration", broker=FlakyBroker(failures=10**9), readiness=readiness)

    async def refuse(_msg):
        raise refusal({})

    with pytest.raises(KafkaConnectionError):
        await middleware_for(dead_letters).consume_scope(refuse, Message(record(b"{}")))
    assert not readiness.is_ready


async def test_the_middleware_retries_the_handler_through_a_store_outage_and_parks_nothing():
    readiness = Readiness()
    settings = SETTINGS.model_copy(update={"consumer_retry_first_seconds": 0.001, "consumer_retry_longest_seconds": 0.002})
    broker = FlakyBroker(failures=0)
    dead_letters = DeadLetters(settings, consumer="registration", broker=broker, readiness=readiness)
    outcomes = [NotPrimaryError("not primary", {"code": 10107}), WriteConcernError("timed out", code=64), "handled"]
    during: list[bool] = []

    async def handle(_msg):
        during.append(readiness.is_ready)
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert await middleware_for(dead_letters).consume_scope(handle, Message(record(b"{}"))) == "handled"
    assert during == [True, False, False]
    assert broker.published == [] and readiness.is_ready
