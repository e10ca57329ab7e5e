"""A decision made as its fields is the contract's: the same bytes as DecisionMade's model writes,
the same key, and an id that is uuid5's."""

import uuid
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.blocking import domain
from services.blocking.publisher import decision_json, decision_key
from shared.events import (
    EVENT_NAMESPACE,
    SCOPE_ALL,
    AccountEventKind,
    AccountEventOccurred,
    AccountEventPayload,
    DecisionMade,
    ExclusionType,
    Game,
    Outcome,
    Scope,
    derived_id,
)
from shared.identity import Identity, uid_from_personnummer

NOW = datetime(2025, 1, 31, 12, 0, 0, 123456, tzinfo=UTC)
SLOTS_AND_ADS = Scope(types=frozenset({ExclusionType.GAMES, ExclusionType.ADS}), games=frozenset({Game.SLOTS, Game.POKER}))


def account_event(kind=AccountEventKind.BET, correlation_id=None, account_id="acc-1") -> AccountEventOccurred:
    return AccountEventOccurred(
        source="operator",
        operator_id="op-1",
        correlation_id=correlation_id,
        payload=AccountEventPayload(
            operator_event_id="e-1", account_id=account_id, kind=kind, identity=Identity(uid=uid_from_personnummer("199001011234"))
        ),
    )


def made(fields: dict) -> DecisionMade:
    return DecisionMade.model_validate(fields)


def test_an_allow_is_the_bytes_the_contract_writes():
    for event in (account_event(), account_event(AccountEventKind.WITHDRAWAL, correlation_id=uuid.uuid4(), account_id='åsa "q" €')):
        fields = domain.allowed(event, NOW)

        assert decision_json(fields) == made(fields).model_dump_json().encode()
        assert made(fields) == DecisionMade.caused_by(
            event, source="blocking", operator_id="op-1", occurred_at=NOW, payload=made(fields).payload
        )
        assert decision_key(fields) == made(fields).key()


def test_a_block_is_the_bytes_the_contract_writes():
    for scope, ends_on, flags in ((SCOPE_ALL, None, []), (SLOTS_AND_ADS, date(2026, 3, 1), [domain.CIRCUMVENTION])):
        fields = domain.decision_fields(
            account_event(),
            NOW,
            Outcome.BLOCK,
            code=domain.CODE,
            message=domain.block_message(ends_on),
            ends_on=ends_on,
            scope=scope,
            matched=["email", "uid"],
            flags=flags,
        )

        assert decision_json(fields) == made(fields).model_dump_json().encode()
        assert decision_key(fields) == made(fields).key()


def test_an_unavailable_is_the_bytes_the_contract_writes():
    fields = domain.unchecked(account_event(AccountEventKind.LOGIN), NOW, 'view_incomplete: the follower is "behind" \n by 5 s')

    assert decision_json(fields) == made(fields).model_dump_json().encode()
    assert made(fields).payload.outcome is Outcome.UNAVAILABLE


@given(
    st.datetimes(timezones=st.just(UTC) | st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))),
    st.text(min_size=1, max_size=40),
    st.text(max_size=40),
    st.sampled_from([None, date(2026, 3, 1), date(1, 1, 1)]),
)
def test_any_decision_is_the_bytes_the_contract_writes(now, account_id, reason, ends_on):
    """Whatever the clock's offset (whole minutes, as every zone has today; the services' clock is UTC)
    and microseconds, and whatever the strings hold (quotes, controls,
    any script): the bytes blocking writes are the model's."""
    try:
        account_id.encode()
        reason.encode()
    except UnicodeEncodeError:  # a lone surrogate: no JSON event can carry one
        return
    event = account_event(account_id=account_id)
    for fields in (
        domain.allowed(event, now),
        domain.unchecked(event, now, reason),
        domain.decision_fields(
            event, now, Outcome.BLOCK, code=domain.CODE, message=domain.block_message(ends_on), ends_on=ends_on, scope=SLOTS_AND_ADS
        ),
    ):
        assert decision_json(fields) == made(fields).model_dump_json().encode()


def test_a_decision_s_fields_are_every_field_of_the_contract_in_its_order():
    fields = domain.allowed(account_event(), NOW)

    assert list(fields) == list(DecisionMade.model_fields)
    assert list(fields["payload"]) == list(DecisionMade.model_fields["payload"].annotation.model_fields)


@given(st.uuids() | st.text(), st.text())
def test_a_derived_id_is_uuid5_of_the_cause_and_name(cause, name):
    try:
        expected = uuid.uuid5(EVENT_NAMESPACE, f"{cause}/{name}")
    except UnicodeEncodeError:  # a lone surrogate: neither can encode it
        with pytest.raises(UnicodeEncodeError):
            derived_id(cause, name)
        return
    assert derived_id(cause, name) == expected
    assert derived_id(cause, name).version == 5
