"""Identity: what counts in an identifier, and keyed hashes that say their kind and nothing else."""

import hashlib
import hmac
import re
from datetime import date

import pydantic
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from shared.identity import (
    NAME_SIGNIFICANT_CHARS,
    Hasher,
    IdentifierKind,
    Identity,
    IdentityError,
    kind_of,
    normalise_email,
    normalise_mobile,
    normalise_name,
    normalise_postcode,
    normalised_identifiers,
    uid_from_personnummer,
)

HASHER = Hasher(b"test-secret-0123456789abcdef")
ANNA = {"first_name": "Anna", "last_name": "Svensson", "date_of_birth": date(1990, 1, 1), "postcode": "SW1A 1AA"}


def name_dob_postcode(**fields) -> str:
    return HASHER.identifiers(Identity(**{**ANNA, **fields}))[IdentifierKind.NAME_DOB_POSTCODE]


@pytest.mark.parametrize(
    ("name", "normalised"),
    [
        ("Anna", "anna"),
        ("ANNA", "anna"),
        ("Åsa", "asa"),
        ("Zoë Müller-Łukasz", "zoe muller-łukasz"),  # Ł has no combining mark to drop
        ("  Anna   Maria\tLouise ", "anna maria louise"),
        ("Straße", "strasse"),
    ],
)
def test_case_accents_and_inner_spaces_of_a_name_do_not_count(name, normalised):
    assert normalise_name(name) == normalised


def test_only_the_first_20_characters_of_a_name_count():
    assert normalise_name("Bartholomew-Christopherson") == "bartholomew-christop"
    assert name_dob_postcode(last_name="Bartholomew-Christopherson") == name_dob_postcode(last_name="Bartholomew-Christophe")
    assert name_dob_postcode(last_name="Bartholomew-Christopherson") != name_dob_postcode(last_name="Bartholomew-Christ")


def test_the_same_person_written_differently_hashes_the_same():
    assert name_dob_postcode(first_name="ANNA", last_name="svensson ", postcode="sw1a1aa") == name_dob_postcode()
    assert name_dob_postcode(date_of_birth=date(1990, 1, 2)) != name_dob_postcode()


def test_spaces_and_case_of_a_postcode_do_not_count():
    assert normalise_postcode(" sw1a 1aa ") == "SW1A1AA"
    assert normalise_postcode("SW1A\t1AA") == "SW1A1AA"
    assert normalise_postcode("114 55") == "11455"


def test_the_case_of_an_email_does_not_count():
    assert normalise_email(" Anna.Svensson@Example.COM ") == "anna.svensson@example.com"
    assert HASHER.identifiers(Identity(email="ANNA@example.com")) == HASHER.identifiers(Identity(email="anna@EXAMPLE.com"))


@pytest.mark.parametrize("mobile", ["07700 900123", "+44 7700 900123", "+447700900123", "0044 7700-900-123"])
def test_national_and_international_forms_of_one_uk_mobile_are_one_number(mobile):
    assert normalise_mobile(mobile) == "+447700900123"
    assert HASHER.identifiers(Identity(mobile=mobile)) == HASHER.identifiers(Identity(mobile="+447700900123"))


def test_a_national_mobile_is_read_in_the_region_given():
    assert normalise_mobile("070-123 45 67", default_region="SE") == "+46701234567"


@pytest.mark.parametrize("garbage", ["not a number", "abc", "12", "+44"])
def test_a_mobile_that_is_no_phone_number_is_refused(garbage):
    with pytest.raises(IdentityError):
        normalise_mobile(garbage)


def test_a_uid_is_the_sha256_of_the_12_digit_personnummer_hyphen_or_not():
    expected = hashlib.sha256(b"199001011234").hexdigest()

    assert uid_from_personnummer("199001011234") == expected
    assert uid_from_personnummer("19900101-1234") == expected


@pytest.mark.parametrize("wrong", ["9001011234", "900101-1234", "1990010112345", "19900101-123X", ""])
def test_a_personnummer_without_12_digits_is_refused(wrong):
    with pytest.raises(IdentityError):
        uid_from_personnummer(wrong)


def test_a_uid_is_64_hex_characters_and_upper_case_is_lowered():
    uid = uid_from_personnummer("199001011234")

    assert Identity(uid=uid.upper()).uid == uid
    assert Identity(uid=uid).uid == uid


@pytest.mark.parametrize("wrong", ["199001011234", "g" * 64, "a" * 63, "a" * 65, ""])
def test_a_uid_that_is_not_64_hex_characters_is_refused(wrong):
    with pytest.raises(pydantic.ValidationError):
        Identity(uid=wrong)


def test_an_email_without_an_at_sign_is_refused():
    with pytest.raises(pydantic.ValidationError):
        Identity(email="anna.example.com")


def test_a_national_id_in_clear_and_its_uid_are_one_identifier():
    uid = uid_from_personnummer("199001011234")

    assert normalised_identifiers(Identity(national_id="19900101-1234")) == {IdentifierKind.NATIONAL_ID: uid}
    assert HASHER.identifiers(Identity(national_id="199001011234")) == HASHER.identifiers(Identity(uid=uid))


def test_a_uid_takes_precedence_over_a_national_id_in_clear():
    uid = uid_from_personnummer("199001011234")

    assert normalised_identifiers(Identity(uid=uid, national_id="200001011234")) == {IdentifierKind.NATIONAL_ID: uid}


def test_every_identifier_kind_an_identity_carries_is_hashed():
    identity = Identity(
        uid=uid_from_personnummer("199001011234"),
        **ANNA,
        email="a@b.se",
        mobile="07700 900123",
        device_fingerprint="dev-1",
        payment_fingerprint="card-1",
    )

    assert set(HASHER.identifiers(identity)) == set(IdentifierKind)


@pytest.mark.parametrize("missing", list(ANNA))
def test_name_dob_postcode_needs_all_four_parts(missing):
    partial = Identity(**{k: v for k, v in ANNA.items() if k != missing})

    assert HASHER.identifiers(partial) == {}


def test_a_hash_is_its_kind_and_64_hex_characters():
    hashes = HASHER.identifiers(Identity(email="a@b.se", mobile="07700 900123", device_fingerprint="dev-1"))

    for kind, value in hashes.items():
        assert re.fullmatch(rf"{kind.value}:[0-9a-f]{{64}}", value)
        assert kind_of(value) is kind


def test_a_hash_depends_on_the_secret():
    other = Hasher(b"another-secret-0123456789abcdef")

    assert HASHER.hash(IdentifierKind.EMAIL, "a@b.se") == Hasher(b"test-secret-0123456789abcdef", "k2").hash(IdentifierKind.EMAIL, "a@b.se")
    assert HASHER.hash(IdentifierKind.EMAIL, "a@b.se") != other.hash(IdentifierKind.EMAIL, "a@b.se")


@given(st.sampled_from(list(IdentifierKind)), st.text(min_size=1, max_size=80))
def test_a_hash_is_hmac_sha256_of_kind_and_value_so_stored_hashes_stay_valid(kind, value):
    # Every stored exclusion is found by these hashes: how they are computed must never drift.
    expected = hmac.new(b"test-secret-0123456789abcdef", f"{kind.value}:{value}".encode(), hashlib.sha256).hexdigest()

    assert HASHER.hash(kind, value) == f"{kind.value}:{expected}"


def test_the_same_value_of_another_kind_hashes_differently():
    assert HASHER.hash(IdentifierKind.DEVICE, "x-1") != HASHER.hash(IdentifierKind.PAYMENT, "x-1")


def test_a_secret_shorter_than_16_bytes_is_refused():
    with pytest.raises(ValueError):
        Hasher(b"fifteen-bytes!!")
    assert Hasher(b"sixteen-bytes!!!").key_id == "k1"


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError):
        kind_of("passport:" + "0" * 64)


@given(st.text(max_size=60))
@example("abcdefghijklmnopqrs tuv")
def test_normalising_a_name_twice_changes_nothing(name):
    assert normalise_name(normalise_name(name)) == normalise_name(name)


@given(st.text(max_size=60))
def test_a_normalised_name_has_at_most_20_characters_and_no_outer_space_before_the_cut(name):
    normalised = normalise_name(name)

    assert len(normalised) <= NAME_SIGNIFICANT_CHARS
    assert normalised == normalised.lstrip()
    assert "  " not in normalised


@given(st.text(max_size=30))
def test_a_normalised_postcode_has_no_whitespace(postcode):
    assert not any(c.isspace() for c in normalise_postcode(postcode))


@given(
    kind=st.sampled_from([IdentifierKind.DEVICE, IdentifierKind.PAYMENT]),
    value=st.text(min_size=8, max_size=80).filter(lambda v: v.strip() == v and v),
)
def test_a_hash_never_contains_what_it_hashes(kind, value):
    hashed = HASHER.identifiers(Identity(**{f"{kind.value}_fingerprint": value}))[kind]

    assert value not in hashed.split(":", 1)[1]
    assert re.fullmatch(rf"{kind.value}:[0-9a-f]{{64}}", hashed)


@given(local=st.from_regex(r"[a-z][a-z0-9.]{2,20}", fullmatch=True), domain=st.from_regex(r"[a-z]{2,12}\.[a-z]{2,4}", fullmatch=True))
def test_an_email_hash_never_contains_the_address_or_its_parts(local, domain):
    hashed = HASHER.identifiers(Identity(email=f"{local}@{domain}"))[IdentifierKind.EMAIL]

    assert f"{local}@{domain}" not in hashed
    assert domain not in hashed
