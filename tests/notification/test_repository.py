"""The notification service's own store, on the real store: contacts kept and resealed after a key rotation."""

import base64

import pytest

from services.notification.repository import MongoContacts
from shared.crypto import Sealer
from shared.events import ContactsRecordedPayload

pytestmark = pytest.mark.integration

OLD, NEW = b"o" * 32, b"n" * 32


async def test_a_contact_not_named_again_keeps_what_was_known(database):
    contacts = MongoContacts(database)

    await contacts.record("p-1", ContactsRecordedPayload(email="t1:mail", locale="sv", jurisdiction="SE"))
    await contacts.record("p-1", ContactsRecordedPayload(mobile="t1:mobile"))

    kept = await contacts.get("p-1")
    assert (kept["email"], kept["mobile"], kept["locale"], kept["jurisdiction"]) == ("t1:mail", "t1:mobile", "sv", "SE")


async def test_a_person_without_contacts_is_known_all_the_same(database):
    await MongoContacts(database).record("p-2", ContactsRecordedPayload())

    assert await MongoContacts(database).get("p-2") is not None


async def test_reseal_moves_every_contact_to_the_current_key_and_each_still_opens(database):
    old = Sealer({"e1": OLD}, "e1")
    both = Sealer({"e1": OLD, "e2": NEW}, "e2")
    contacts = MongoContacts(database)
    for n in range(3):
        context = ContactsRecordedPayload.sealing_context(f"p-{n}")
        await contacts.record(f"p-{n}", ContactsRecordedPayload(email=old.seal_text(f"p{n}@example.se", context)))

    assert await contacts.reseal(both) == 3
    assert await contacts.reseal(both) == 0, "nothing left on the old key"

    only_new = Sealer({"e2": NEW}, "e2")
    for n in range(3):
        kept = await contacts.get(f"p-{n}")
        assert only_new.open_text(kept["email"], ContactsRecordedPayload.sealing_context(f"p-{n}")) == f"p{n}@example.se"
    assert base64.b64encode(b"p0@example.se").decode() not in str(await database["contacts"].find({}).to_list(None))
