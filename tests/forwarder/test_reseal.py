"""After an encryption key rotation, what is kept sealed for the register is sealed again with the new key:
the token on registration's exclusion and the one in a delivery not yet delivered (a delivered one is left)."""

import os

from services.forwarder.repository import Deliveries
from services.registration.repository import MongoExclusions
from shared.crypto import Sealer
from shared.events import ForwardingIdentity, utcnow

OLD, NEW = {"o1": os.urandom(32)}, {"n1": os.urandom(32)}


async def test_forwarding_tokens_are_resealed_with_the_current_key(database):
    old = Sealer(OLD, "o1")
    both = Sealer(OLD | NEW, "n1")
    context = ForwardingIdentity.sealing_context("x-1")
    token = old.seal(b'{"identity": {"email": "a@example.com"}}', context)
    await database["exclusions"].insert_one({"_id": "x-1", "forwarding": token, "revision": 0})
    deliveries = Deliveries(database)
    for delivery_id, status in (("d-pending", "pending"), ("d-done", "delivered")):
        await database["deliveries"].insert_one(
            {"_id": delivery_id, "exclusion_id": "x-1", "status": status, "sealed_identity": token, "created_at": utcnow()}
        )

    assert await MongoExclusions(database).reseal(both) == 1
    assert await deliveries.reseal(both) == 1

    exclusion = await database["exclusions"].find_one({"_id": "x-1"})
    pending = await deliveries.get("d-pending")
    done = await deliveries.get("d-done")
    assert both.is_current(exclusion["forwarding"]) and both.is_current(pending["sealed_identity"])
    assert both.open(pending["sealed_identity"], context) == old.open(token, context)
    assert done["sealed_identity"] == token  # delivered: nothing left to send
