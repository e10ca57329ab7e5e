"""``selfex operator``: keys printed once, stored only as a hash, revoked and rotated for real."""

import asyncio
import json
import os
import re
import sys
import uuid
from pathlib import Path

import pytest
import pytest_asyncio

from services.gateway.access import key_hash
from services.gateway.operators import DEMO_OPERATOR, demo_operator
from tests.gateway.conftest import new_person, world

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]
SELFEX = str(Path(sys.executable).parent / "selfex")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gw(servers):
    async with world(servers, registration=False) as the_world:
        yield the_world


async def selfex(gw, *args: str, command: str = "operator") -> tuple[int, str]:
    """Run ``selfex operator ...`` (or ``selfex staff ...``); its stdout, then its stderr."""
    # The world's gateway runs on one injected database: the command is pointed at it as the gateway's own.
    # The world's broker too: adding an operator makes its topics there.
    env = {**os.environ, **gw.settings.environment(), "SELFEX_MONGO_DATABASES": json.dumps({"gateway": gw.settings.mongo_db})}
    process = await asyncio.create_subprocess_exec(
        SELFEX, command, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    output, errors = await process.communicate()
    return process.returncode, output.decode() + errors.decode()


def key_in(output: str) -> str:
    return re.search(r"sx_[A-Za-z0-9_-]{40,}", output).group(0)


async def checks(gw, key: str) -> int:
    return (await gw.client.post("/", data=new_person(), headers={"X-API-Key": key})).status_code


async def test_add_prints_a_working_key_once_and_stores_only_its_hash(gw):
    code, output = await selfex(gw, "add", "Acme Gaming Ltd", "--roles", "operator")
    key = key_in(output)
    stored = await gw.database["operators"].find_one({"name": "Acme Gaming Ltd"})

    assert code == 0 and "shown once" in output
    assert stored["key_hash"] == key_hash(key) and key not in str(stored)
    assert stored["roles"] == ["operator"]
    assert await checks(gw, key) == 200


async def test_a_second_operator_of_the_same_name_is_refused(gw):
    await selfex(gw, "add", "Twice Ltd")

    code, output = await selfex(gw, "add", "Twice Ltd")

    assert code == 1 and "exists" in output


async def test_unknown_roles_are_refused(gw):
    code, output = await selfex(gw, "add", "Scoped Ltd", "--roles", "operator,admin")
    staff_role, _ = await selfex(gw, "add", "Staffed Ltd", "--roles", "register-staff")

    assert code == 2 and "roles" in output
    assert staff_role == 2, "an operator's key carries no staff role"


async def test_list_shows_operators_without_their_keys(gw):
    _, added = await selfex(gw, "add", "Listed Ltd", "--roles", "operator-compliance")

    code, output = await selfex(gw, "list")

    assert code == 0
    assert re.search(r"Listed Ltd\s+(op-\w+)\s+\1\s+operator-compliance\s+sx_\S+\s+active", output)
    assert key_in(added) not in output


async def test_a_revoked_key_stops_working(gw):
    key = key_in((await selfex(gw, "add", "Revoked Ltd", "--quiet"))[1])
    assert await checks(gw, key) == 200

    code, output = await selfex(gw, "revoke", "Revoked Ltd")

    assert code == 0 and "revoked" in output
    assert await checks(gw, key) == 403
    assert (await selfex(gw, "revoke", "Nobody Ltd"))[0] == 1


async def test_rotating_replaces_the_key(gw):
    old = key_in((await selfex(gw, "add", "Rotated Ltd", "--quiet"))[1])

    code, output = await selfex(gw, "rotate", "Rotated Ltd", "--quiet")
    new = key_in(output)

    assert code == 0 and new != old
    assert await checks(gw, new) == 200 and await checks(gw, old) == 403


async def test_the_demo_operator_is_created_then_rekeyed(gw):
    settings = gw.settings.model_copy(update={"mongo_databases": {"gateway": gw.settings.mongo_db}})  # the world's gateway's database
    first = await demo_operator(settings)
    second = await demo_operator(settings)

    assert first.created and not second.created
    assert first.operator.id == second.operator.id and first.operator.name == DEMO_OPERATOR
    assert second.operator.roles == {"operator", "operator-compliance"}
    assert await checks(gw, second.key) == 200 and await checks(gw, first.key) == 403


async def test_staff_add_creates_a_working_register_staff_or_regulator_key_tied_to_no_operator(gw):
    code, output = await selfex(gw, "add", "Casework Team", "--role", "register-staff", command="staff")
    key = key_in(output)
    stored = await gw.database["operators"].find_one({"name": "Casework Team"})
    regulator = key_in((await selfex(gw, "add", "Gambling Commission", "--role", "regulator", "--quiet", command="staff"))[1])
    wrong_role, _ = await selfex(gw, "add", "Not Staff", "--role", "operator", command="staff")
    missing = f"/v1/exclusions/{uuid.uuid4()}"

    assert code == 0 and "roles register-staff" in output
    assert stored["staff"] is True and stored["roles"] == ["register-staff"] and stored["key_hash"] == key_hash(key)
    assert await checks(gw, key) == 200
    # Admitted (the exclusion does not exist), where an operator's key is refused: staff review documents.
    review = await gw.client.post(
        f"{missing.replace('exclusions', 'verifications')}/documents/d/review", json={"approved": True}, headers={"X-API-Key": key}
    )
    assert review.status_code == 404
    by_regulator = await gw.client.post(f"{missing}/cancel", json={"reason": "no"}, headers={"X-API-Key": regulator})
    assert by_regulator.status_code == 403 and (await gw.client.get(missing, headers={"X-API-Key": regulator})).status_code == 404
    assert wrong_role == 2
    listed = (await selfex(gw, "list", command="staff"))[1]
    assert "Casework Team" in listed and "Acme Gaming Ltd" not in listed
