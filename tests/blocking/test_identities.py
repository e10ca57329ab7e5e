"""The identifier hashes remembered per account: the same answer as hashing, fresh whenever the identity changes."""

from aiokafka.partitioner import DefaultPartitioner

from services.blocking.identities import AccountIdentifiers
from services.blocking.publisher import KeyPartitions
from shared.identity import Hasher, IdentifierKind, Identity, uid_from_personnummer

HASHER = Hasher(b"test-secret-0123456789abcdef")
ANNA = Identity(uid=uid_from_personnummer("199001011234"), email="anna@example.se", device_fingerprint="dev-anna")


class CountingHasher(Hasher):
    def __init__(self) -> None:
        super().__init__(b"test-secret-0123456789abcdef")
        self.calls = 0

    def identifiers(self, identity, default_region="GB"):
        self.calls += 1
        return super().identifiers(identity, default_region)


def test_an_accounts_identity_is_hashed_once_and_the_hashes_are_those_of_the_hasher():
    hasher = CountingHasher()
    remembered = AccountIdentifiers(hasher)

    first, first_new = remembered.of("op-1", "acc-1", ANNA)
    again, again_new = remembered.of("op-1", "acc-1", Identity(**ANNA.model_dump()))  # equal fields, another object

    assert first == again == HASHER.identifiers(ANNA)
    assert (first_new, again_new) == (True, False)
    assert hasher.calls == 1


def test_a_changed_identity_is_hashed_again():
    hasher = CountingHasher()
    remembered = AccountIdentifiers(hasher)
    remembered.of("op-1", "acc-1", ANNA)

    moved, new = remembered.of("op-1", "acc-1", ANNA.model_copy(update={"email": "anna@elsewhere.se"}))

    assert new
    assert moved[IdentifierKind.EMAIL] == HASHER.hash(IdentifierKind.EMAIL, "anna@elsewhere.se")
    assert hasher.calls == 2


def test_accounts_are_told_apart_by_operator_and_account():
    hasher = CountingHasher()
    remembered = AccountIdentifiers(hasher)
    berit = Identity(uid=uid_from_personnummer("198505051234"))

    remembered.of("op-1", "acc-1", ANNA)
    assert remembered.of("op-2", "acc-1", berit) == (HASHER.identifiers(berit), True)
    assert remembered.of("op-1", "acc-2", berit) == (HASHER.identifiers(berit), True)
    assert remembered.of("op-1", "acc-1", ANNA) == (HASHER.identifiers(ANNA), False)
    assert hasher.calls == 3


def test_past_its_limit_the_memory_starts_again():
    remembered = AccountIdentifiers(HASHER, max_accounts=2)
    for n in range(5):
        remembered.of("op-1", f"acc-{n}", ANNA)

    assert len(remembered) <= 2
    assert remembered.of("op-1", "acc-0", ANNA) == (HASHER.identifiers(ANNA), True)


def test_a_remembered_partition_is_the_producers_own_choice():
    partitions = [0, 1, 2, 3, 4, 5]
    partition_of = KeyPartitions(partitions)

    for n in range(2000):
        key = f"op-1:acc-{n}".encode()
        assert partition_of(key) == partition_of(key) == DefaultPartitioner()(key, partitions, partitions)
