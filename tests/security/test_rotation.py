"""Key rotation while events flow, on the real broker and store: nothing sealed is lost, nothing
matched is missed."""

import asyncio
import base64
import os
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from shared.crypto import Sealer
from shared.events import SupportPerson
from shared.identity import Identity, normalise_email
from tests.registration.harness import person, registration, request
from tests.support import eventually

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
