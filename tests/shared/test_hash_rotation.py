"""The identity hash chain: a newer key carries every older form on to the newest, so nothing
stored under the old key is lost, and a hash of a key a service does not hold is refused."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.identity import Hasher, IdentifierKind, Identity, UnknownHashKeyError

OLD = b"o" * 32
NEW = b"n" * 32
NEWER = b"m" * 32

before = Hasher(OLD, "k1")
during = Hasher(OLD, "k1", [("k2", NEW)])
later = Hasher(OLD, "k1", [("k2", NEW), ("k3", NEWER)])

kinds = st.sampled_from(list(IdentifierKind))
values = st.text(min_size=1, max_size=40)


@given(kinds, values)
def test_a_chain_of_one_key_hashes_as_before_rotation_existed(kind, value):
    assert Hasher(OLD).hash(kind, value) == before.hash(kind, value)
    assert before.hash(kind, value).count(":") == 1


@given(kinds, values)
def test_the_newest_form_is_reached_from_the_old_hash_alone(kind, value):
    old = before.hash(kind, value)
    new = during.hash(kind, value)
    assert new != old and new.startswith(f"{kind.value}:k2:")
    assert during.canonical(old) == new
    assert later.canonical(old) == later.canonical(new) == later.hash(kind, value)
    assert during.forms(kind, value) == [old, new]


@given(kinds, values, values)
def test_different_identifiers_keep_different_forms(kind, one, other):
    if one != other:
        assert during.hash(kind, one) != during.hash(kind, other)


def test_a_lookup_asks_for_every_form_while_a_rotation_is_under_way():
    identity = Identity(email="someone@example.com", uid="a" * 64)
    assert sorted(before.lookup_forms(identity)) == sorted(before.identifiers(identity).values())
    forms = during.lookup_forms(identity)
    assert len(forms) == 4
    assert set(before.identifiers(identity).values()) | set(during.identifiers(identity).values()) == set(forms)


def test_a_hash_of_a_key_not_held_is_refused_not_passed_over():
    newer = during.hash(IdentifierKind.EMAIL, "someone@example.com")
    with pytest.raises(UnknownHashKeyError):
        before.canonical(newer)
    with pytest.raises(UnknownHashKeyError):
        before.canonical_all(["email:" + "0" * 64, newer])
    with pytest.raises(UnknownHashKeyError):
        during.canonical("email:k9:" + "0" * 64)


def test_canonical_all_gives_back_what_needs_no_change():
    current = (during.hash(IdentifierKind.EMAIL, "a@b.c"), during.hash(IdentifierKind.MOBILE, "+447700900123"))
    assert during.canonical_all(current) is current
    plain = (before.hash(IdentifierKind.EMAIL, "a@b.c"),)
    assert before.canonical_all(plain) is plain
    assert during.canonical_all((*plain, current[0])) == (current[0],)  # the old form and the new are one


def test_key_ids_must_be_distinct_words():
    with pytest.raises(ValueError, match="distinct"):
        Hasher(OLD, "k1", [("k1", NEW)])
    with pytest.raises(ValueError, match="distinct"):
        Hasher(OLD, "k1", [("k:2", NEW)])
    with pytest.raises(ValueError, match="16 bytes"):
        Hasher(OLD, "k1", [("k2", b"short")])
