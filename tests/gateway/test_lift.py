"""A lift that the policy allows, with time moved rather than waited for (its own world: its own clock)."""

import pytest

from tests.gateway.conftest import Clock, world
from tests.gateway.test_native import create, headers, someone

pytestmark = pytest.mark.integration


async def test_a_lift_after_the_minimum_takes_effect_after_the_return_cooling_off(servers):
    clock = Clock()
    async with world(servers, clock=clock) as gw:
        identity = someone()
        view = await create(gw, identity)  # UK, +6m: ends only on request, after the 6 months
        clock.advance(days=200)

        lifted = await gw.client.post(f"/v1/exclusions/{view['exclusion_id']}/lift", json={"identity": identity}, headers=headers(gw, "excluder"))
        status = await gw.client.post("/v1/persons/status", json={"identity": identity}, headers=headers(gw, "checker"))

    assert lifted.status_code == 200, lifted.text
    assert lifted.json()["state"] == "lift_requested"
    assert lifted.json()["lift_effective_at"] > clock.now.isoformat()
    assert status.json()["exclusion"] == "Y"  # in force until the lift takes effect
