"""The gateway's rules on literal data: what exclusions mean to an operator asking, keys, rate limits."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.gateway.access import (
    ROLE_PERMISSIONS,
    STAFF_ROLES,
    Gatekeeper,
    Permission,
    RateLimits,
    Role,
    WrongKeyError,
    fingerprint,
    key_hash,
    new_key,
    parse_roles,
    permissions_of,
    roles_of,
)
from services.gateway.chipout import exclusion_requested
from services.gateway.domain import Summary, check, chipout_status, chipout_type, gamstop_answer, merged, unique
from services.gateway.problems import Problem, field_name
from services.gateway.repository import OperatorRecord
from shared.events import SCOPE_ALL, ExclusionState, ExclusionType, Game, Scope
from shared.policies import load_policies
from shared.settings import Settings
from tests.support import eventually

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SLOTS = Scope(types=frozenset({ExclusionType.GAMES}), games=frozenset({Game.SLOTS}))


def summary(
    state=ExclusionState.ACTIVE,
    *,
    starts=NOW - timedelta(days=10),
    ends=NOW + timedelta(days=20),
    minimum=None,
    lift_at=None,
    version=1,
    scope=SCOPE_ALL,
    exclusion_id=None,
) -> Summary:
    return Summary(
        exclusion_id=exclusion_id or str(uuid.uuid4()),
        person_id="person-1",
        state=state,
        scope=scope,
        jurisdiction="SE",
        starts_at=starts,
        ends_at=ends,
        minimum_until=minimum,
        lift_effective_at=lift_at,
        version=version,
    )


def test_an_active_exclusion_is_y():
    assert gamstop_answer([summary()], NOW) == "Y"


def test_nobody_is_n():
    assert gamstop_answer([], NOW) == "N"


def test_a_lifted_or_expired_exclusion_is_p():
    assert gamstop_answer([summary(ExclusionState.LIFTED)], NOW) == "P"
    assert gamstop_answer([summary(ExclusionState.EXPIRED)], NOW) == "P"


def test_an_active_exclusion_past_its_end_is_p_even_before_the_timer_writes_it():
    assert gamstop_answer([summary(ends=NOW - timedelta(seconds=1))], NOW) == "P"


def test_a_requested_lift_excludes_until_it_takes_effect():
    pending = summary(ExclusionState.LIFT_REQUESTED, ends=None, lift_at=NOW + timedelta(hours=1))

    assert gamstop_answer([pending], NOW) == "Y"
    assert gamstop_answer([pending], NOW + timedelta(hours=2)) == "P"


def test_a_request_not_yet_in_force_is_n_and_a_current_one_beats_an_old_one():
    assert gamstop_answer([summary(ExclusionState.PENDING_VERIFICATION)], NOW) == "N"
    assert gamstop_answer([summary(ExclusionState.COOLING_OFF)], NOW) == "N"
    assert gamstop_answer([summary(ExclusionState.EXPIRED), summary()], NOW) == "Y"


def test_chipout_lists_the_exclusions_in_force_with_their_dates():
    open_ended = summary(ends=None, minimum=NOW + timedelta(days=355), scope=SLOTS, starts=NOW - timedelta(days=10))
    ended = summary(ExclusionState.EXPIRED)

    assert chipout_status([summary(starts=NOW - timedelta(days=1)), open_ended, ended], NOW) == [
        {"Type": "Slots", "From": "2026-05-22", "To": "2027-05-22"},
        {"Type": "All", "From": "2026-05-31", "To": "2026-06-21"},
    ]


def test_a_check_unites_the_scopes_in_force_and_takes_the_latest_end():
    result = check(
        [
            summary(scope=SLOTS, ends=NOW + timedelta(days=5)),
            summary(scope=Scope(types=frozenset({ExclusionType.ADS})), ends=NOW + timedelta(days=9)),
        ],
        NOW,
    )

    answer = result.as_json()
    assert (answer["exclusion"], answer["excluded"], answer["until"], answer["until_further_notice"]) == ("Y", True, "2026-06-10", False)
    assert sorted(answer["scope"]["types"]) == ["ADS", "GAMES"] and answer["scope"]["games"] == ["SLOTS"]
    assert set(result.scope.types) == {ExclusionType.GAMES, ExclusionType.ADS}
    assert check([summary(ends=None)], NOW).until_further_notice is True
    assert check([], NOW).as_json()["scope"] is None


def test_an_older_version_never_replaces_a_newer_one_in_the_lookup():
    newer = summary(ExclusionState.LIFTED, version=3, exclusion_id="x-1")
    older = summary(ExclusionState.ACTIVE, version=2, exclusion_id="x-1")
    other = summary(exclusion_id="x-2")

    entries, changed = merged([newer.stored(), other.stored()], older)
    assert not changed and entries == [newer.stored(), other.stored()]

    entries, changed = merged([older.stored()], newer)
    assert changed and entries == [newer.stored()]

    entries, changed = merged([newer.stored()], newer)
    assert not changed


def test_a_summary_round_trips_through_its_stored_form():
    original = summary(ends=None, minimum=NOW, lift_at=NOW + timedelta(days=1), scope=SLOTS, version=7)

    assert Summary.from_stored(original.stored()) == original


def test_unique_keeps_the_newest_summary_of_each_exclusion():
    assert unique([summary(version=1, exclusion_id="a"), summary(version=4, exclusion_id="a"), summary(exclusion_id="b")])[0].version == 4


def test_past_its_burst_a_key_waits_whole_seconds_and_other_keys_do_not():
    limits = RateLimits(rate=2.0, burst=4)  # 4 in any 2 seconds

    assert [limits.take("op") for _ in range(4)] == [0, 0, 0, 0]
    assert 1 <= limits.take("op") <= 2
    assert limits.take("other") == 0


def test_each_replica_allows_its_share_of_the_deployments_burst():
    limits = RateLimits(rate=1.0, burst=6, replicas=3)  # 6 in any 6 seconds across 3 replicas: 2 here

    assert [limits.take("op") > 0 for _ in range(3)] == [False, False, True]
    assert [RateLimits(rate=1.0, burst=2, replicas=5).take("op") > 0 for _ in range(2)] == [False, False], "never less than one"


class Operators:
    """The operators' store: one key, and a count of the lookups."""

    def __init__(self, key: str) -> None:
        self.digest, self.lookups = key_hash(key), 0
        self.opened = asyncio.Event()  # the store answers once this is set
        self.opened.set()

    async def by_key_hash(self, digest: str):
        self.lookups += 1
        await self.opened.wait()
        record = {"id": "op-1", "operator_id": "op-1", "name": "Op", "roles": frozenset({"operator"}), "staff": False}
        return type("Record", (), record) if digest == self.digest else None


async def test_an_accepted_key_is_remembered_for_its_ttl_and_a_rejected_one_never():
    key, now = new_key(), [0.0]
    operators = Operators(key)
    settings = Settings(gateway_key_cache_seconds=5.0)
    gatekeeper = Gatekeeper(operators, settings, clock=lambda: now[0])  # type: ignore[arg-type]

    assert (await gatekeeper.operator(key)).id == (await gatekeeper.operator(key)).id == "op-1"
    assert operators.lookups == 1
    now[0] = 5.1
    await gatekeeper.operator(key)
    assert operators.lookups == 2
    for _ in range(2):
        with pytest.raises(WrongKeyError):
            await gatekeeper.operator("sx_not-a-key")
    assert operators.lookups == 4


async def test_requests_that_find_a_key_not_remembered_share_one_store_read():
    key = new_key()
    operators = Operators(key)
    operators.opened.clear()
    gatekeeper = Gatekeeper(operators, Settings(gateway_key_cache_seconds=5.0))  # type: ignore[arg-type]

    waiting = [asyncio.ensure_future(gatekeeper.operator(key)) for _ in range(32)]
    wrong = [asyncio.ensure_future(gatekeeper.operator("sx_not-a-key")) for _ in range(3)]

    async def both_reading() -> bool:
        return operators.lookups >= 2

    await eventually(both_reading, what="the store reads to start")
    waiting[0].cancel()  # a caller that goes away leaves the read to the others
    operators.opened.set()

    assert {operator.id for operator in await asyncio.gather(*waiting[1:])} == {"op-1"}
    assert [isinstance(error, WrongKeyError) for error in await asyncio.gather(*wrong, return_exceptions=True)] == [True] * 3
    assert operators.lookups == 2, "one read for the key, one for the wrong key, however many asked"
    with pytest.raises(WrongKeyError):
        await gatekeeper.operator("sx_not-a-key")
    assert operators.lookups == 3, "a rejected key is read again: never remembered"


def test_keys_are_random_and_only_their_hash_identifies_them():
    key, other = new_key(), new_key()

    assert key != other and key.startswith("sx_") and len(key) > 40
    assert key_hash(key) != key_hash(other) and len(key_hash(key)) == 64
    assert fingerprint(key) == key_hash(key)[:12]


def test_roles_parse_from_a_comma_list_and_the_old_scope_names_read_as_their_roles():
    assert parse_roles("operator, operator-compliance") == {Role.OPERATOR, Role.OPERATOR_COMPLIANCE}
    assert parse_roles("check,exclude") == {Role.OPERATOR}
    assert roles_of(["compliance"]) == {Role.OPERATOR_COMPLIANCE}
    assert parse_roles("regulator", STAFF_ROLES) == {Role.REGULATOR}
    for wrong in ("check,admin", "", "register-staff"):  # an operator's key carries no staff role
        with pytest.raises(ValueError):
            parse_roles(wrong)


def test_a_key_stored_with_scopes_reads_as_the_roles_that_took_their_place():
    stored = {"_id": "op-1", "name": "Old Ltd", "scopes": ["check", "compliance"], "created_at": None}

    record = OperatorRecord.from_document(stored)

    assert record.roles == {"operator", "operator-compliance"} and record.operator_id == "op-1" and not record.staff


def test_the_regulator_reads_everything_and_writes_nothing_and_only_staff_see_every_operator():
    writes = {Permission.EXCLUDE, Permission.REVIEW, Permission.CANCEL}

    assert not ROLE_PERMISSIONS[Role.REGULATOR] & writes and Permission.READ in ROLE_PERMISSIONS[Role.REGULATOR]
    assert ROLE_PERMISSIONS[Role.OPERATOR_COMPLIANCE] == {Permission.READ, Permission.COMPLIANCE}  # reads, and asks the audit log
    assert {r for r in Role if Permission.COMPLIANCE in permissions_of([r])} == {Role.OPERATOR_COMPLIANCE, *STAFF_ROLES}
    assert {r for r in Role if Permission.CASEWORK in permissions_of([r])} == STAFF_ROLES
    assert {r for r in Role if Permission.REVIEW in permissions_of([r])} == {Role.REGISTER_STAFF}


def test_a_validation_location_becomes_a_field_name():
    assert field_name(("body", "persons", 3, "identity", "email")) == "persons[3].identity.email"
    assert field_name(("query", "limit")) == "limit"
    assert field_name(("body",)) == "body"


def test_chipout_all_takes_precedence_over_the_other_games():
    payload = exclusion_requested(
        {"uid": "a" * 64, "type": ["GAMES", "DM"], "games": ["SLOTS", "ALL"], "duration": "+4m", "year": 1985, "gender": "U"},
        load_policies()["SE"],
        2026,
    )

    assert payload.scope == Scope(types=frozenset({ExclusionType.GAMES, ExclusionType.DM}), games=frozenset({Game.ALL}))
    assert payload.attested and payload.jurisdiction == "SE" and payload.year_of_birth == 1985


def test_chipout_names_the_first_wrong_field():
    with pytest.raises(Problem) as raised:
        exclusion_requested(
            {"uid": "a" * 64, "type": ["ADS"], "duration": "+1x", "year": "1985", "gender": "M"}, load_policies()["SE"], 2026
        )

    assert raised.value.field == "duration"


@pytest.mark.parametrize(
    ("scope", "label"),
    [
        (SCOPE_ALL, "All"),
        (Scope(types=frozenset({ExclusionType.GAMES})), "All"),
        (Scope(types=frozenset({ExclusionType.GAMES}), games=frozenset({Game.SLOTS, Game.POKER})), "Poker,Slots"),
        (Scope(types=frozenset({ExclusionType.GAMES, ExclusionType.ADS}), games=frozenset({Game.SLOTS})), "Slots,ADS"),
        (Scope(types=frozenset({ExclusionType.ADS, ExclusionType.DM})), "ADS,DM"),
        (Scope(types=frozenset({ExclusionType.DM}), games=frozenset({Game.SLOTS})), "DM"),
    ],
)
def test_a_scope_is_labelled_as_chipout_shows_it(scope, label):
    assert chipout_type(scope) == label


def test_the_rate_window_starts_no_thread_keeps_only_its_limit_and_moves_on(monkeypatch):
    import threading
    from types import SimpleNamespace

    now = [1_000.0]
    monkeypatch.setattr("limits.storage.memory.time", SimpleNamespace(time=lambda: now[0]))
    limits = RateLimits(rate=2.0, burst=4)  # 4 in any 2 seconds
    timers = []
    monkeypatch.setattr(
        "limits.storage.memory.threading",
        SimpleNamespace(Timer=lambda *a, **k: timers.append(a) or threading.Timer(*a, **k), RLock=threading.RLock),
    )

    taken = [limits.take("op") for _ in range(500)]

    assert taken[:4] == [0, 0, 0, 0] and all(wait >= 1 for wait in taken[4:])
    assert timers == [], "no expiry thread per hit"
    assert len(limits._limiter.storage.events["LIMITER/op/4/2/second"]) <= 4
    now[0] += 2.5
    assert limits.take("op") == 0, "the window moved on"


def test_a_new_rate_window_cancels_the_expiry_timer_its_parent_starts():
    limits = RateLimits(rate=2.0, burst=4)
    assert [limits.take("op") for _ in range(5)][:4] == [0, 0, 0, 0]  # hits within the timer's first 10 ms

    timer = limits._limiter.storage.timer
    assert timer.finished.is_set(), "cancelled: its expiry would slice the deques and raise in its thread"
    timer.join(timeout=5)
    assert not timer.is_alive()


def test_a_rate_window_keeps_only_what_it_still_counts_however_large_its_limit(monkeypatch):
    from types import SimpleNamespace

    now = [1_000.0]
    monkeypatch.setattr("limits.storage.memory.time", SimpleNamespace(time=lambda: now[0]))
    limits = RateLimits(rate=1e9, burst=10**9)  # what the benchmarks set: never limited
    for _ in range(20_000):
        assert limits.take("op") == 0
        now[0] += 0.0001
    events = limits._limiter.storage.events["LIMITER/op/1000000000/1/second"]
    assert len(events) <= 10_001, "entries older than the 1 s window were dropped"
