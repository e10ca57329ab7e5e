"""Key rotation while events flow, on the real broker and store: nothing sealed is lost, nothing
matched is missed."""

import asyncio
import base64
import os
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from pydantic import SecretStr

from services.blocking.app import create_app as create_blocking
from shared import topics
from shared.broker import ensure_operator_topics
from shared.crypto import Sealer
from shared.events import AccountEventKind, AccountEventOccurred, AccountEventPayload, SupportPerson
from shared.identity import Identity, normalise_email, uid_from_personnummer
from tests.registration.harness import ManualClock, person, registration, request
from tests.support import Publisher, TopicReader, eventually

pytestmark = pytest.mark.integration

SELFEX = str(Path(sys.executable).parent / "selfex")
OLD = "e1:" + base64.b64encode(b"o" * 32).decode()
NEW = "e2:" + base64.b64encode(b"n" * 32).decode()


def someone(n: int) -> Identity:
    return person(n, email=f"person.{n}@example.se")


def excluded(n: int):
    return request(someone(n), "+12m", "AU", support_persons=[SupportPerson(name=f"Support {n}", email=f"support.{n}@example.se")])


async def all_stored(database, count: int) -> bool:
    return await database["exclusions"].count_documents({}) >= count


async def test_an_encryption_key_is_rotated_while_requests_flow_and_every_contact_still_opens(settings, database, tmp_path):
    before = settings.model_copy(update={"encryption_keys": SecretStr(OLD), "encryption_key_id": "e1"})
    after = settings.model_copy(update={"encryption_keys": SecretStr(f"{NEW},{OLD}"), "encryption_key_id": "e2"})
    # Registration runs on the test's database: `selfex reencrypt` is told it is registration's own.
    rotating = after.model_copy(update={"mongo_databases": {"registration": settings.mongo_db}})

    async with registration(before, database) as running:  # the old key: everything sealed with e1
        for n in range(20):
            await running.send(excluded(n))
        await eventually(lambda: all_stored(database, 20), what="20 exclusions stored under the old key")

    async with registration(after, database) as running:  # every replica now holds both keys, seals with e2

        async def flow() -> None:
            for n in range(20, 60):
                await running.send(excluded(n))
                await asyncio.sleep(0)  # interleave with the re-encryption

        env = {**os.environ, **rotating.environment(), "SELFEX_LOG_FORMAT": "json"}
        reencrypt = asyncio.create_subprocess_exec(
            SELFEX, "reencrypt", env=env, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        _, process = await asyncio.gather(flow(), reencrypt)
        output, _ = await process.communicate()
        assert process.returncode == 0, output.decode()
        assert "resealed with key e2: registration " in output.decode()
        await eventually(lambda: all_stored(database, 60), what="60 exclusions stored")

    only_new = Sealer.from_settings(settings.model_copy(update={"encryption_keys": SecretStr(NEW), "encryption_key_id": "e2"}))
    persons = await database["persons"].find({}).to_list(None)
    assert len(persons) == 60
    opened = {only_new.open_text(p["contacts"]["email"], f"contact:{p['_id']}") for p in persons}
    assert opened == {normalise_email(f"person.{n}@example.se") for n in range(60)}, "every contact opens with the new key alone"
    for exclusion in await database["exclusions"].find({}).to_list(None):
        [support] = exclusion["support_persons"]
        assert "support." in only_new.open_text(support, f"support_person:{exclusion['_id']}")


# --- the identity hash key -------------------------------------------------------------------

NEXT_KEY = "k2:" + "a-newer-hash-key-of-enough-length"


def holder(n: int) -> Identity:
    """Someone with a national id and an e-mail, both hashed."""
    return Identity(uid=uid_from_personnummer(f"1980{n:08d}"), email=f"holder.{n}@example.se")


def account_event(n: int, kind: AccountEventKind = AccountEventKind.LOGIN) -> AccountEventOccurred:
    return AccountEventOccurred(
        source="operator",
        operator_id="op-1",
        payload=AccountEventPayload(operator_event_id=f"evt-{uuid.uuid4().hex[:8]}", account_id=f"acc-{n}", kind=kind, identity=holder(n)),
    )


@asynccontextmanager
async def blocking(settings, database, clock) -> AsyncIterator[None]:
    async with create_blocking(settings, database=database, clock=clock):
        yield


async def test_a_hash_key_is_rotated_while_events_flow_and_no_match_is_lost(settings, database, tmp_path):
    """Registration and blocking under the first key; then both restarted with a newer key in the
    chain while account events and exclusion requests keep coming and `selfex rehash` re-keys their
    stores. Every account event of an excluded person is refused throughout, a person asking again
    is the same person, an exclusion made after the rotation reaches the accounts seen before it,
    and afterwards nothing stored is in the old form."""
    await ensure_operator_topics(settings, "op-1")
    clock = ManualClock()
    after = settings.model_copy(update={"hash_next_secrets": SecretStr(NEXT_KEY)})
    rotating = after.model_copy(update={"mongo_databases": {"registration": settings.mongo_db, "blocking": settings.mongo_db}})
    excluded_before, excluded_after = range(10), range(10, 15)

    async with (
        Publisher(settings) as publish,
        TopicReader(settings, topics.of_operator("op-1", topics.DECISIONS)) as decisions,
        TopicReader(settings, topics.of_operator("op-1", topics.ENFORCEMENT)) as enforcement,
    ):

        async def decide(*ns: int) -> dict[int, str]:
            events = {str(e.id): n for n in ns for e in [account_event(n)]}
            for event_id, n in events.items():
                await publish.event(account_event(n).model_copy(update={"id": uuid.UUID(event_id)}))
            found = await decisions.wait_for(lambda m: m["causation_id"] in events, count=len(events), timeout=60)
            return {events[m["causation_id"]]: m["payload"]["outcome"] for m in found}

        async with registration(settings, database, clock) as running, blocking(settings, database, clock):
            for n in excluded_before:
                await running.handle(request(holder(n), "+12m", "SE"))
            assert set((await decide(*excluded_before)).values()) == {"BLOCK"}
            assert set((await decide(*excluded_after)).values()) == {"ALLOW"}  # their accounts are seen, under the first key
        assert all(":k2:" not in h for p in await database["persons"].find({}).to_list(None) for h in p["identifiers"])

        async with registration(after, database, clock) as running, blocking(after, database, clock):
            outcomes: list[str] = []
            stop = asyncio.Event()

            async def account_events_flow() -> None:
                while not stop.is_set():
                    outcomes.extend((await decide(*excluded_before)).values())

            flowing = asyncio.create_task(account_events_flow())
            env = {**os.environ, **rotating.environment(), "SELFEX_LOG_FORMAT": "json"}
            rehash = await asyncio.create_subprocess_exec(
                SELFEX, "rehash", "--service", "registration", "--service", "blocking",
                env=env, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            for n in excluded_after:  # new exclusions while the stores are re-keyed
                await running.handle(request(holder(n), "+12m", "SE"))
            for n in range(5):  # people excluded before ask again, by e-mail alone
                await running.handle(request(Identity(email=f"holder.{n}@example.se"), "+24m", "SE"))
            output, _ = await rehash.communicate()
            assert rehash.returncode == 0, output.decode()
            assert "re-keyed with hash key k2: blocking " in output.decode()
            await eventually(lambda: asyncio.sleep(0, len(outcomes) >= 30), what="account events decided during the rotation")
            stop.set()
            await flowing

            assert outcomes and set(outcomes) == {"BLOCK"}, f"every excluded person refused throughout: {sorted(set(outcomes))}"
            assert set((await decide(*excluded_before, *excluded_after)).values()) == {"BLOCK"}
            reached = await enforcement.wait_for(lambda m: m["payload"]["account_id"] in {f"acc-{n}" for n in excluded_after}, count=5)
            assert {m["payload"]["account_id"] for m in reached} == {f"acc-{n}" for n in excluded_after}

    persons = await database["persons"].find({}).to_list(None)
    assert len(persons) == 15, "a person who asked again after the rotation is the person stored before it"
    stored = [
        *(h for p in persons for h in p["identifiers"]),
        *(d["_id"] for d in await database["person_identifiers"].find({}).to_list(None)),
        *(h for e in await database["exclusions"].find({}).to_list(None) for h in e["identifiers"]),
        *(h for e in await database["blocking_exclusions"].find({}).to_list(None) for h in e["identifiers"]),
        *(a["identifier"] for a in await database["blocking_accounts"].find({}).to_list(None)),
    ]
    assert stored and all(h.split(":")[1] == "k2" for h in stored), [h for h in stored if ":k2:" not in h][:5]
