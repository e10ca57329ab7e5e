"""The GAMSTOP check's own reading of a request, against the general code it must agree with."""

from datetime import date
from urllib.parse import urlencode

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from services.gateway.gamstop import MAX_FIELDS, form_fields, gamstop_identifiers
from services.gateway.problems import Problem
from shared.identity import Hasher, Identity

HASHER = Hasher(b"a test secret of enough bytes")
TODAY = date(2026, 6, 1)


def test_a_forms_fields_are_unquoted_the_first_of_a_repeated_name_wins_and_blank_values_stay():
    fields = form_fields("firstName=Harry&email=harry%40example.com&postcode=GU1+1AA&firstName=Ron&mobile=&bad=%zz%E9")

    assert fields == {"firstName": "Harry", "email": "harry@example.com", "postcode": "GU1 1AA", "mobile": "", "bad": "%zz\ufffd"}


def test_more_than_20_fields_are_refused():
    at_limit = "&".join(f"f{i}=1" for i in range(MAX_FIELDS))
    assert len(form_fields(at_limit)) == MAX_FIELDS
    with pytest.raises(ValueError):
        form_fields(at_limit + "&one=more")


NAMES = st.text(alphabet="aBcÉé ñ-'Zz", min_size=1, max_size=30).filter(str.strip)
PEOPLE = st.fixed_dictionaries(
    {
        "firstName": NAMES,
        "lastName": NAMES,
        "dateOfBirth": st.dates(date(1900, 1, 1), TODAY).map(date.isoformat),
        "email": st.tuples(st.text("aB.1_", min_size=1, max_size=10), st.text("xY.9", min_size=1, max_size=10)).map("@".join),
        "postcode": st.text("AB12 z", min_size=1, max_size=9).filter(str.strip),
    },
    optional={"mobile": st.sampled_from(["07700 900123", "+44 7700 900123", " 07700900123 ", ""])},
)


@given(PEOPLE)
@example(
    {
        "firstName": " Ann ",
        "lastName": "Öberg-Lindqvist Johansson",
        "dateOfBirth": "1980-07-31",
        "email": " A@B.se ",
        "postcode": "gu1 1aa",
        "mobile": "07700 900123",
    }
)
def test_a_checks_identifiers_are_the_hashes_of_the_same_identity(fields):
    identity = Identity(
        first_name=fields["firstName"],
        last_name=fields["lastName"],
        date_of_birth=date.fromisoformat(fields["dateOfBirth"]),
        postcode=fields["postcode"],
        email=fields["email"],
        mobile=fields.get("mobile") or None,
    )
    assert gamstop_identifiers(fields, TODAY, HASHER) == list(HASHER.identifiers(identity).values())


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"firstName": "   "}, "firstName"),
        ({"lastName": "x" * 201}, "lastName"),
        ({"dateOfBirth": "1980-7-31"}, "dateOfBirth"),
        ({"dateOfBirth": "2026-06-02"}, "dateOfBirth"),
        ({"email": "no-at-sign"}, "email"),
        ({"postcode": "GU1-1AA"}, "postcode"),
        ({"mobile": "12"}, "mobile"),
        ({"mobile": "not a number"}, "mobile"),
        ({"mobile": 7700900123}, "mobile"),
    ],
)
def test_the_first_wrong_field_is_named(change, field):
    fields = {"firstName": "Harry", "lastName": "Potter", "dateOfBirth": "1980-07-31", "email": "h@example.com", "postcode": "GU1 1AA"}
    with pytest.raises(Problem) as raised:
        gamstop_identifiers(fields | change, TODAY, HASHER)
    assert raised.value.status == 400
    assert raised.value.field == field


def test_form_fields_read_a_urlencoded_check():
    body = urlencode({"firstName": "Harry", "email": "harry@example.com", "postcode": "GU1 1AA"})
    assert form_fields(body) == {"firstName": "Harry", "email": "harry@example.com", "postcode": "GU1 1AA"}
