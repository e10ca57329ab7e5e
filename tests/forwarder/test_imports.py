"""Registration's side of an import, as rules: a register's exclusion in force at once, the later end
winning over one running here, and the register's end ending only what imports alone made."""

from datetime import UTC, datetime, timedelta

from services.registration import domain, transitions
from shared.events import SCOPE_ALL, ExclusionState, RegisterChange
from shared.policies import load_policies

NOW = datetime(2026, 12, 1, tzinfo=UTC)
POLICY = load_policies()["SE"]
EMAIL = "email:" + "a" * 64


def change(version: int = 1, *, ends_in: int = 30, in_force: bool = True, ended_as: str | None = None) -> RegisterChange:
    return RegisterChange(
        exclusion_id="b-1",
        version=version,
        change="activated" if in_force else "lifted",
        in_force=in_force,
        ended_as=ended_as,  # type: ignore[arg-type]
        identifiers=[EMAIL],
        scope=SCOPE_ALL,
        jurisdiction="SE",
        starts_at=NOW - timedelta(days=1),
        ends_at=NOW + timedelta(days=ends_in),
        duration="+30d",
        origin="register-b",
    )


def imported(version: int = 1, **kwargs):
    command = change(version, **kwargs).imported("register-b", EMAIL)
    return domain.imported(command, person_id="p-1", identifiers=[EMAIL], now=NOW, policy=POLICY), command


def test_a_registers_exclusion_is_in_force_at_once_and_remembers_where_it_came_from():
    exclusion, command = imported()
    transition = transitions.imported_registered(exclusion, command, NOW)
    assert exclusion.state is ExclusionState.ACTIVE and exclusion.channel.value == "register"
    assert exclusion.origin == "register-b" and exclusion.ends_at == NOW + timedelta(days=30)
    assert transition.event.type == "exclusion.activated" and transition.event.payload.origin == "register-b"
    assert transition.notifications == ()  # the register told the person


def test_a_later_end_from_the_register_lengthens_the_running_exclusion_and_an_earlier_one_changes_nothing():
    exclusion, _ = imported()
    _, later = imported(2, ends_in=60)
    lengthened = transitions.imported_extended(exclusion, later, POLICY, NOW, identifiers=[EMAIL])
    assert lengthened.exclusion.ends_at == NOW + timedelta(days=60) and lengthened.event.payload.reason is None
    _, earlier = imported(3, ends_in=10)
    unchanged = transitions.imported_extended(lengthened.exclusion, earlier, POLICY, NOW, identifiers=[EMAIL])
    assert unchanged.exclusion.ends_at == NOW + timedelta(days=60) and unchanged.event.payload.reason  # never shortened


def test_the_registers_end_ends_only_an_exclusion_that_imports_alone_made():
    exclusion, _ = imported()
    _, ended = imported(2, in_force=False, ended_as="lifted")
    transition = transitions.imported_ended(exclusion, ended, POLICY, NOW)
    assert transition is not None and transition.exclusion.state is ExclusionState.LIFTED
    joined_here = exclusion.model_copy(update={"request_ids": [*exclusion.request_ids, "a-local-request"]})
    assert transitions.imported_ended(joined_here, ended, POLICY, NOW) is None
