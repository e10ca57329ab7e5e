"""The wire form of decisions: the fast ALLOW path gives exactly the bytes of the contract's model."""

from datetime import datetime, timedelta, timezone

from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.blocking.domain import ExclusionView, decision_fields, decision_id, refusal
from services.blocking.outbox import Allowed, Record
from shared.events import AccountEventKind, AccountEventOccurred, AccountEventPayload, DecisionMade
from shared.identity import Hasher, Identity, uid_from_personnummer

HASHER = Hasher(b"test-secret-0123456789abcdef")
NOW = datetime(2025, 1, 31, 12, 0, 0, 123456, tzinfo=timezone.utc)
IDENTITY = Identity(uid=uid_from_personnummer("199001011234"))
# What an operator may put in its own ids: quotes, backslashes, control characters, any Unicode.
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)
ALLOWED = Allowed()


def account_event(operator_id: str, account_id: str, operator_event_id: str, kind: AccountEventKind, correlation_id) -> AccountEventOccurred:
    return AccountEventOccurred(
        source="operator",
        operator_id=operator_id,
        correlation_id=correlation_id,
        payload=AccountEventPayload(operator_event_id=operator_event_id, account_id=account_id, kind=kind, identity=IDENTITY),
    )


@settings(max_examples=300)
@given(
    operator_id=TEXT.filter(lambda t: len(t) <= 100),
    account_id=TEXT,
    operator_event_id=TEXT,
    kind=st.sampled_from(list(AccountEventKind)),
    correlation_id=st.none() | st.uuids(),
    now=st.datetimes(min_value=datetime(2000, 1, 1), timezones=st.just(timezone.utc)),
)
@example(operator_id='op "1"', account_id="a\\b%s%%", operator_event_id="\x00\n\t€😀", kind=AccountEventKind.BET, correlation_id=None, now=NOW)
def test_an_allow_record_is_byte_for_byte_the_contracts(operator_id, account_id, operator_event_id, kind, correlation_id, now):
    event = account_event(operator_id, account_id, operator_event_id, kind, correlation_id)
    identifiers = HASHER.identifiers(IDENTITY)
    assert refusal(event, identifiers, ExclusionView(), now) is None

    fast = ALLOWED.record(event, now)

    assert fast == Record.decision(decision_fields(event, identifiers, ExclusionView(), now))
    assert fast == Record.of(DecisionMade.model_validate_json(fast.value))


def test_each_batch_time_is_its_own():
    event = account_event("op-1", "acc-1", "evt-1", AccountEventKind.LOGIN, None)
    allowed = Allowed()

    first, later = allowed.record(event, NOW), allowed.record(event, NOW + timedelta(seconds=1))

    assert DecisionMade.model_validate_json(first.value).occurred_at == NOW
    assert DecisionMade.model_validate_json(later.value).occurred_at == NOW + timedelta(seconds=1)
    assert DecisionMade.model_validate_json(first.value).id == DecisionMade.model_validate_json(later.value).id == decision_id(event.id)
