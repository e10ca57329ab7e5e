"""Blocking's rules: which exclusions an account event touches, and whether they refuse it."""

import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.blocking.domain import (
    ActiveExclusion,
    ExclusionView,
    Known,
    blocks,
    covers_game,
    decide,
    enforcements,
    follow,
    follow_view,
)
from shared.events import (
    SCOPE_ALL,
    AccountEventKind,
    AccountEventOccurred,
    AccountEventPayload,
    DecisionMade,
    ExclusionActivated,
    ExclusionSnapshot,
    ExclusionState,
    ExclusionType,
    Game,
    MarketingChannel,
    Outcome,
    Scope,
    derived_id,
)
from shared.identity import Hasher, Identity, uid_from_personnummer

HASHER = Hasher(b"test-secret-0123456789abcdef")
NOW = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)
ANNA = Identity(uid=uid_from_personnummer("199001011234"), email="anna@example.se", device_fingerprint="dev-anna")
BERIT = Identity(uid=uid_from_personnummer("198505051234"), device_fingerprint="dev-berit")
ANNAS_DEVICE = Identity(uid=uid_from_personnummer("200002021234"), device_fingerprint="dev-anna")
SLOTS = Scope(types=frozenset({ExclusionType.GAMES}), games=frozenset({Game.SLOTS}))
ADS = Scope(types=frozenset({ExclusionType.ADS}))


def exclusion(identity: Identity = ANNA, scope: Scope = SCOPE_ALL, ends_at: datetime | None = NOW + timedelta(days=30), **fields):
    return ActiveExclusion(
        exclusion_id=fields.get("exclusion_id", uuid.uuid4()),
        identifiers=frozenset(HASHER.identifiers(identity).values()),
        scope=scope,
        starts_at=fields.get("starts_at", NOW - timedelta(days=1)),
        ends_at=ends_at,
    )


def view_of(*exclusions: ActiveExclusion) -> ExclusionView:
    view = ExclusionView()
    for each in exclusions:
        view.add(each)
    return view


def account_event(kind: AccountEventKind = AccountEventKind.LOGIN, identity: Identity = ANNA, **payload) -> AccountEventOccurred:
    return AccountEventOccurred(
        source="operator",
        operator_id="op-1",
        payload=AccountEventPayload(operator_event_id="evt-1", account_id="acc-1", kind=kind, identity=identity, **payload),
    )


def decision(event: AccountEventOccurred, view: ExclusionView, now: datetime = NOW):
    return decide(event, HASHER.identifiers(event.payload.identity), view, now).payload


def test_a_person_without_an_exclusion_is_allowed():
    payload = decision(account_event(identity=BERIT), view_of(exclusion()))

    assert payload.outcome is Outcome.ALLOW
    assert (payload.code, payload.message, payload.ends_on, payload.matched, payload.flags) == (None, None, None, [], [])


def test_an_excluded_person_is_blocked_until_the_day_the_exclusion_ends():
    payload = decision(account_event(), view_of(exclusion(ends_at=datetime(2025, 3, 2, 12, tzinfo=UTC))))

    assert payload.outcome is Outcome.BLOCK
    assert payload.code == "Self-Excluded"
    assert payload.message == "Your account is blocked as part of the responsible gambling programme until 2025-03-02"
    assert payload.ends_on == date(2025, 3, 2)
    assert payload.scope == SCOPE_ALL
    assert payload.matched == ["device", "email", "national_id"]
    assert payload.flags == []


def test_an_exclusion_without_an_end_blocks_until_further_notice():
    payload = decision(account_event(), view_of(exclusion(ends_at=None)))

    assert payload.outcome is Outcome.BLOCK
    assert payload.message == "Your account is blocked as part of the responsible gambling programme until further notice"
    assert payload.ends_on is None


def test_the_exclusion_that_lasts_longest_is_the_one_reported():
    view = view_of(exclusion(ends_at=NOW + timedelta(days=5)), exclusion(ends_at=NOW + timedelta(days=50)))

    assert decision(account_event(), view).ends_on == (NOW + timedelta(days=50)).date()
    assert decision(account_event(), view_of(*view.by_id.values(), exclusion(ends_at=None))).ends_on is None


def test_the_decision_answers_the_account_event_it_was_made_for():
    event = account_event(AccountEventKind.DEPOSIT)

    made = decide(event, HASHER.identifiers(ANNA), view_of(exclusion()), NOW)

    assert (made.payload.account_event_id, made.payload.operator_event_id, made.payload.account_id) == (event.id, "evt-1", "acc-1")
    assert made.payload.kind is AccountEventKind.DEPOSIT
    assert (made.operator_id, made.causation_id, made.correlation_id) == ("op-1", event.id, event.id)
    assert made.key() == b"op-1:acc-1"


def test_a_decision_answers_an_event_that_carries_its_own_correlation_id():
    event = account_event().model_copy(update={"correlation_id": uuid.uuid4()})

    made = decide(event, HASHER.identifiers(ANNA), view_of(exclusion()), NOW)

    assert (made.correlation_id, made.causation_id) == (event.correlation_id, event.id)


def test_the_same_account_event_redelivered_gets_the_same_decision_id():
    event, view = account_event(), view_of(exclusion())

    first, again = decide(event, HASHER.identifiers(ANNA), view, NOW), decide(event, HASHER.identifiers(ANNA), view, NOW)

    assert first.id == again.id == derived_id(event.id, "decision.made")
    assert first.payload == again.payload
    assert decide(account_event(), HASHER.identifiers(ANNA), view, NOW).id != first.id


@pytest.mark.parametrize("scope", [SCOPE_ALL, SLOTS, ADS], ids=["all", "slots", "ads"])
def test_a_withdrawal_is_never_blocked(scope):
    assert not blocks(scope, account_event(AccountEventKind.WITHDRAWAL))
    assert decision(account_event(AccountEventKind.WITHDRAWAL), view_of(exclusion(scope=scope))).outcome is Outcome.ALLOW


def test_a_scope_covers_the_games_it_names_and_all_of_them_when_it_names_none_or_all():
    every_game = Scope(types=frozenset({ExclusionType.GAMES}))
    ads_naming_all = Scope(types=frozenset({ExclusionType.ADS}), games=frozenset({Game.ALL}))

    assert covers_game(SLOTS, Game.SLOTS)
    assert not covers_game(SLOTS, Game.POKER)
    assert not covers_game(SLOTS, None)
    assert all(covers_game(SCOPE_ALL, game) and covers_game(every_game, game) for game in [*Game, None])
    assert not any(covers_game(ads_naming_all, game) for game in [*Game, None])


def test_a_slots_exclusion_blocks_a_slots_bet_and_not_a_poker_bet():
    view = view_of(exclusion(scope=SLOTS))

    assert decision(account_event(AccountEventKind.BET, game=Game.SLOTS), view).outcome is Outcome.BLOCK
    assert decision(account_event(AccountEventKind.BET, game=Game.POKER), view).outcome is Outcome.ALLOW
    assert decision(account_event(AccountEventKind.BET, game=Game.SLOTS), view).scope == SLOTS


@pytest.mark.parametrize("kind", [k for k in AccountEventKind if k is not AccountEventKind.WITHDRAWAL])
def test_an_exclusion_from_all_games_blocks_everything_but_a_withdrawal(kind):
    for game in [*Game, None]:
        event = account_event(kind, game=game, channel=MarketingChannel.ADS)
        assert blocks(SCOPE_ALL, event)
        assert blocks(Scope(types=frozenset({ExclusionType.GAMES})), event)


def test_an_ads_exclusion_blocks_advertising_and_nothing_else():
    assert blocks(ADS, account_event(AccountEventKind.MARKETING, channel=MarketingChannel.ADS))
    assert not blocks(ADS, account_event(AccountEventKind.MARKETING, channel=MarketingChannel.DM))
    assert not blocks(ADS, account_event(AccountEventKind.LOGIN))
    assert not blocks(ADS, account_event(AccountEventKind.BET, game=Game.SLOTS))
    view = view_of(exclusion(scope=ADS))
    assert decision(account_event(AccountEventKind.MARKETING, channel=MarketingChannel.ADS), view).outcome is Outcome.BLOCK
    assert decision(account_event(AccountEventKind.MARKETING, channel=MarketingChannel.DM), view).outcome is Outcome.ALLOW
    assert decision(account_event(AccountEventKind.LOGIN), view).outcome is Outcome.ALLOW


def test_nobody_excluded_from_some_games_is_marketed_to():
    assert blocks(SLOTS, account_event(AccountEventKind.MARKETING, channel=MarketingChannel.DM))


def test_a_registration_that_matches_only_by_device_is_blocked_as_suspected_circumvention():
    payload = decision(account_event(AccountEventKind.REGISTRATION, identity=ANNAS_DEVICE), view_of(exclusion()))

    assert payload.outcome is Outcome.BLOCK
    assert payload.flags == ["suspected_circumvention"]
    assert payload.matched == ["device"]


def test_a_login_that_matches_only_by_device_is_allowed():
    assert decision(account_event(AccountEventKind.LOGIN, identity=ANNAS_DEVICE), view_of(exclusion())).outcome is Outcome.ALLOW


def test_a_registration_that_matches_the_person_is_blocked_without_a_flag():
    assert decision(account_event(AccountEventKind.REGISTRATION), view_of(exclusion())).flags == []


def test_an_exclusion_that_has_ended_does_not_block():
    ended = exclusion(ends_at=NOW - timedelta(seconds=1))

    assert decision(account_event(), view_of(ended)).outcome is Outcome.ALLOW
    assert decision(account_event(), view_of(exclusion(ends_at=NOW))).outcome is Outcome.ALLOW
    assert decision(account_event(), view_of(ended), now=NOW - timedelta(days=1)).outcome is Outcome.BLOCK


def test_an_exclusion_that_has_not_started_does_not_block_yet():
    later = exclusion(starts_at=NOW + timedelta(hours=1))

    assert decision(account_event(), view_of(later)).outcome is Outcome.ALLOW
    assert decision(account_event(), view_of(later), now=NOW + timedelta(hours=1)).outcome is Outcome.BLOCK


def test_an_exclusion_is_in_force_from_its_start_until_just_before_its_end():
    each = exclusion(ends_at=NOW + timedelta(days=1), starts_at=NOW)

    assert each.in_force(NOW)
    assert each.in_force(NOW + timedelta(days=1) - timedelta(microseconds=1))
    assert not each.in_force(NOW + timedelta(days=1))
    assert not each.in_force(NOW - timedelta(microseconds=1))


def test_the_view_finds_an_exclusion_by_any_of_its_identifiers_and_forgets_it_on_discard():
    anna = exclusion()
    view = view_of(anna, exclusion(BERIT))
    email = HASHER.identifiers(ANNA)["email"]

    assert view.matching([email, "email:unknown"]) == {anna.exclusion_id: [email]}
    view.discard(anna.exclusion_id)
    view.discard(anna.exclusion_id)
    assert view.matching([email]) == {}
    assert len(view) == 1


def test_adding_an_exclusion_again_replaces_its_identifiers():
    first = exclusion()
    view = view_of(first, ActiveExclusion(first.exclusion_id, frozenset({"email:new"}), SCOPE_ALL, NOW, None))

    assert view.matching(sorted(first.identifiers)) == {}
    assert view.matching(["email:new"]) == {first.exclusion_id: ["email:new"]}
    assert len(view) == 1


IDS = [uuid.UUID(int=n) for n in range(4)]
HASHES = [f"email:{n}" for n in range(5)]
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.sampled_from(IDS), st.frozensets(st.sampled_from(HASHES), max_size=3)),
        st.tuples(st.just("discard"), st.sampled_from(IDS), st.just(frozenset())),
    ),
    max_size=30,
)


@given(OPERATIONS)
def test_the_view_agrees_with_a_plain_dictionary_after_any_adds_and_discards(operations):
    view, expected = ExclusionView(), {}
    for operation, exclusion_id, hashes in operations:
        if operation == "add":
            view.add(ActiveExclusion(exclusion_id, hashes, SCOPE_ALL, NOW, None))
            expected[exclusion_id] = hashes
        else:
            view.discard(exclusion_id)
            expected.pop(exclusion_id, None)

    assert len(view) == len(expected)
    for identifier in HASHES:
        assert set(view.matching([identifier])) == {i for i, hashes in expected.items() if identifier in hashes}
    assert all(view.by_identifier.values()), "no identifier is left pointing at nothing"
    assert set(view.by_identifier) == set().union(*expected.values())


# --- following the lifecycle, and what it enforces -------------------------------------------


def snapshot(
    state: ExclusionState = ExclusionState.ACTIVE,
    version: int = 1,
    scope: Scope = SCOPE_ALL,
    identity: Identity = ANNA,
    exclusion_id=IDS[1],
):
    return ExclusionSnapshot(
        exclusion_id=exclusion_id,
        identifiers=sorted(HASHER.identifiers(identity).values()),
        scope=scope,
        jurisdiction="SE",
        state=state,
        starts_at=NOW - timedelta(days=1),
        ends_at=NOW + timedelta(days=30),
        version=version,
    )


@pytest.mark.parametrize("kind", [AccountEventKind.LOGIN, AccountEventKind.REGISTRATION, AccountEventKind.DEPOSIT, AccountEventKind.BONUS])
def test_an_exclusion_from_some_games_lets_the_account_be_used_for_the_others(kind):
    assert not blocks(SLOTS, account_event(kind))
    assert decision(account_event(kind), view_of(exclusion(scope=SLOTS))).outcome is Outcome.ALLOW


def test_an_activation_puts_the_exclusion_in_view_and_ends_sessions_every_time_it_is_delivered():
    view, known = ExclusionView(), {}

    assert follow(view, known, "exclusion.activated", snapshot(version=2), NOW) == (True, "end_sessions")
    assert view.get(IDS[1]).version == 2
    assert follow(view, known, "exclusion.activated", snapshot(version=2), NOW) == (True, "end_sessions")
    assert follow(view, known, "exclusion.ending_soon", snapshot(version=3), NOW) == (True, None)


def test_a_snapshot_older_than_the_known_one_changes_nothing():
    view, known = ExclusionView(), {IDS[1]: Known(5, False)}

    assert follow(view, known, "exclusion.activated", snapshot(version=4), NOW) == (False, None)
    assert len(view) == 0
    view.add(exclusion(exclusion_id=IDS[1]))  # version 1 in view
    assert follow(view, {}, "exclusion.expired", snapshot(ExclusionState.EXPIRED, version=1), NOW) == (True, "lift")


def test_an_extension_that_makes_the_exclusion_exclude_ends_sessions_and_one_that_does_not_is_quiet():
    view, known = ExclusionView(), {IDS[1]: Known(2, False)}

    assert follow(view, known, "exclusion.extended", snapshot(version=3), NOW) == (True, "end_sessions")
    assert follow(view, known, "exclusion.extended", snapshot(version=4), NOW) == (True, None)
    assert follow(view, known, "exclusion.cancelled", snapshot(ExclusionState.CANCELLED, version=1, exclusion_id=IDS[2]), NOW) == (
        True,
        None,
    )


def test_the_end_lifts_unless_another_exclusion_still_covers_games_for_the_person():
    view = view_of(exclusion(exclusion_id=IDS[0], scope=SLOTS), exclusion(exclusion_id=IDS[1]))

    assert follow(view, {}, "exclusion.lifted", snapshot(ExclusionState.LIFTED, version=2), NOW) == (True, None)
    assert IDS[1] not in view.by_id
    assert follow(view, {}, "exclusion.expired", snapshot(ExclusionState.EXPIRED, version=2, exclusion_id=IDS[0]), NOW) == (True, "lift")


def test_advertising_and_direct_marketing_exclusions_enforce_nothing():
    assert follow(ExclusionView(), {}, "exclusion.activated", snapshot(scope=ADS), NOW) == (True, None)


def test_enforcement_goes_to_each_account_once_with_ids_derived_from_the_cause():
    cause = ExclusionActivated(source="registration", subject="p", payload=snapshot())

    commands = enforcements(cause, cause.payload, "end_sessions", [("op-2", "b"), ("op-1", "a"), ("op-1", "a")])

    assert [(c.operator_id, c.payload.account_id) for c in commands] == [("op-1", "a"), ("op-2", "b")]
    assert commands[0].id == derived_id(cause.id, "enforcement.commanded/end_sessions/op-1:a")
    assert commands[0].key() == b"op-1:a" and commands[0].subject == "p"
    assert commands[0].payload.message.endswith((NOW + timedelta(days=30)).date().isoformat())
    assert enforcements(cause, cause.payload, "lift", [("op-1", "a")])[0].payload.message is None


def test_a_decision_is_what_caused_by_would_build():
    event = account_event()
    made = decide(event, HASHER.identifiers(ANNA), view_of(), NOW)
    expected = DecisionMade.caused_by(event, source="blocking", operator_id="op-1", payload=made.payload, occurred_at=NOW)

    assert made == expected


def test_the_view_does_not_take_back_an_exclusion_a_newer_snapshot_took_out():
    view = ExclusionView()
    assert view.apply(snapshot(ExclusionState.LIFTED, version=4))
    assert not view.apply(snapshot(version=3))
    assert len(view) == 0 and view.version_of(IDS[1]) == 4
    assert view.apply(snapshot(version=5)) and view.version_of(IDS[1]) == 5 and len(view) == 1


def test_an_instance_following_for_its_view_trusts_the_projection_for_exclusions_it_has_not_met():
    view = ExclusionView()
    assert not follow_view(view, {IDS[1]: Known(4, False)}, snapshot(version=3))
    assert len(view) == 0
    assert follow_view(view, {IDS[1]: Known(4, False)}, snapshot(version=4))
    assert follow_view(view, {}, snapshot(ExclusionState.EXPIRED, version=5)) and len(view) == 0
