"""The registrar: applies requests, verified lifts, staff cancellations and verification outcomes to exclusions.

Each one is: already applied? (then publish whatever of it has not gone out, and stop) → load →
decide (domain, transitions) → one conditional write holding the events → publish them. A write
that loses a race is read again and decided again.
"""

import asyncio
import uuid
from datetime import datetime

import structlog

from services.registration import domain, transitions
from services.registration.domain import (
    NothingToCancelError,
    NothingToLiftError,
    NotThePersonsLiftError,
    RequestRefusedError,
    Sealed,
    UnknownExclusionError,
)
from services.registration.outbox import Outbox, Publish, entries
from services.registration.repository import AlreadyRunningError, MongoExclusions, Stored
from services.registration.transitions import Transition
from shared.crypto import Sealer
from shared.events import (
    CancelExclusion,
    ContactsRecorded,
    ContactsRecordedPayload,
    EndAtOrigin,
    ExclusionVerified,
    ForwardingIdentity,
    ImportExclusion,
    LiftVerified,
    RequestExclusion,
    VerificationFailed,
    derived_id,
)
from shared.identity import PERSONAL_KINDS, Hasher, kind_of, normalise_email, normalise_mobile
from shared.policies import Policy, PolicyError, Terms, policy_for
from shared.service import Clock

MAX_ATTEMPTS = 10
FIRST_PAUSE_SECONDS = 0.02  # before looking again for an exclusion another request is storing
LAST_PAUSE_SECONDS = 0.5


class ConflictError(TimeoutError):
    """An exclusion kept changing under a write: too much contention for one request now.

    A timeout, so the command is retried later (its offset held), never dead-lettered: an
    exclusion request must not be lost to contention.
    """


class InFlightError(ConflictError):
    """Another request for the person claimed their identifiers and has not stored its exclusion yet."""


class Registrar:
    def __init__(
        self,
        exclusions: MongoExclusions,
        outbox: Outbox,
        policies: dict[str, Policy],
        hasher: Hasher,
        sealer: Sealer,
        clock: Clock,
        publish: Publish | None = None,
    ) -> None:
        self.exclusions = exclusions
        self.outbox = outbox
        self.policies = policies
        self.hasher = hasher
        self.sealer = sealer
        self.clock = clock
        self.publish = publish
        self.log = structlog.get_logger("registration")

    # --- requests -----------------------------------------------------------------------------

    async def request(self, request: RequestExclusion) -> None:
        """Exclude the person: a new exclusion, or the running one extended."""
        if await self._already_applied(request.id):
            return
        payload = request.payload
        try:
            policy = self._policy(payload.jurisdiction)
            terms = domain.terms_for(payload, policy)
        except RequestRefusedError as exc:
            self.log.warning("exclusion_request_refused", request_id=str(request.id), reason=str(exc))
            raise
        identifiers = domain.person_identifiers(self.hasher.identifiers(payload.identity, policy.mobile_region))
        # While a hash key rotates, the person may be stored under any form of their identifiers.
        lookup = [h for h in self.hasher.lookup_forms(payload.identity, policy.mobile_region) if kind_of(h) in PERSONAL_KINDS]
        person_id, known = await self.exclusions.match_person(lookup)
        # A new person's id derives from their strongest identifier: two first requests racing agree on it.
        person_id = person_id or str(derived_id(domain.primary_identifier(identifiers), "person"))
        contacts = self._sealed_contacts(request, person_id, policy)
        await self.exclusions.save_person(
            person_id, identifiers, payload.year_of_birth, payload.gender, contacts=contacts, locale=payload.locale
        )
        await self._tell_contacts(request, person_id, contacts)
        identifiers = sorted(set(self.hasher.canonical_all(known)) | set(identifiers))
        for attempt in range(MAX_ATTEMPTS):
            now = self.clock()
            running = await self.exclusions.running_for(person_id)
            if running is None:
                try:
                    await self._open(request, policy, terms, person_id, identifiers, now)
                    return
                except AlreadyRunningError as exc:  # another request won the race: extend what it stored
                    running = await self.exclusions.load(exc.exclusion_id)
                    if running is None or not running.exclusion.running:
                        await asyncio.sleep(min(FIRST_PAUSE_SECONDS * 2**attempt, LAST_PAUSE_SECONDS))
                        continue
            sealed = self._sealed(request, running.id)
            extension = transitions.extend(running.exclusion, request, terms, policy, now, identifiers=identifiers, sealed=sealed)
            if await self._write(running, extension):
                return
        raise InFlightError(f"exclusion of person {person_id} kept changing, or another request's is not stored yet")

    async def _open(
        self, request: RequestExclusion, policy: Policy, terms: Terms, person_id: str, identifiers: list[str], now: datetime
    ) -> None:
        sealed = self._sealed(request, derived_id(request.id, "exclusion"))
        exclusion = domain.exclude(
            request, person_id=person_id, identifiers=identifiers, now=now, policy=policy, terms=terms, sealed=sealed
        )
        transition = transitions.registered(exclusion, request, now)
        pending = entries(transition)
        if await self.exclusions.insert(exclusion, pending, at=now):
            await self._announce(Stored(exclusion, 1, pending, now), transition, pending)
        else:  # a concurrent delivery of the same request made it first
            await self._already_applied(request.id)

    async def lift(self, verified: LiftVerified) -> None:
        """The person proved (with the code sent to their contact) that they ask to end the exclusion:
        the policy says whether, and when. A lift proven by someone else than the exclusion's person
        ends nothing."""
        if await self._already_applied(verified.id):
            return
        for _ in range(MAX_ATTEMPTS):
            stored = await self.exclusions.load(verified.payload.exclusion_id)
            if stored is None:
                raise NothingToLiftError(f"no exclusion {verified.payload.exclusion_id} to lift")
            if verified.subject != stored.exclusion.person_id:
                self.log.warning("lift_of_another_person_refused", exclusion_id=str(stored.id), lift_id=str(verified.payload.lift_id))
                raise NotThePersonsLiftError("the lift was verified by someone other than the excluded person")
            policy = self._policy(stored.exclusion.jurisdiction)
            if await self._write(stored, transitions.request_lift(stored.exclusion, verified, policy, self.clock())):
                return
        raise ConflictError(f"exclusion {verified.payload.exclusion_id} kept changing")

    async def cancel(self, command: CancelExclusion) -> None:
        """Register staff cancel an exclusion made in error: it ends now, with their reason."""
        if await self._already_applied(command.id):
            return
        for _ in range(MAX_ATTEMPTS):
            stored = await self.exclusions.load(command.payload.exclusion_id)
            if stored is None:
                raise NothingToCancelError(f"no exclusion {command.payload.exclusion_id} to cancel")
            transition = transitions.cancel(stored.exclusion, command, self._policy(stored.exclusion.jurisdiction), self.clock())
            if transition is None:
                raise NothingToCancelError(f"exclusion {stored.id} has ended already ({stored.exclusion.state.value})")
            if await self._write(stored, transition):
                return
        raise ConflictError(f"exclusion {command.payload.exclusion_id} kept changing")

    async def end_at_origin(self, command: EndAtOrigin) -> None:
        """The deployment that forwarded an exclusion here says it ended there: this copy ends only if
        that deployment's operator alone made it (``transitions.ended_at_origin``); else it runs on,
        and the refusal says why. One that has ended already, or is unknown, changes nothing."""
        if await self._already_applied(command.id):
            return
        for _ in range(MAX_ATTEMPTS):
            stored = await self.exclusions.load(command.payload.exclusion_id)
            if stored is None:
                self.log.info("origin_end_of_unknown_exclusion", exclusion_id=str(command.payload.exclusion_id))
                return
            policy = self._policy(stored.exclusion.jurisdiction)
            transition = transitions.ended_at_origin(stored.exclusion, command, policy, self.clock())
            if transition is None:
                self.log.info("origin_end_ignored", exclusion_id=str(stored.id), state=stored.exclusion.state.value)
                return
            if await self._write(stored, transition):
                return
        raise ConflictError(f"exclusion {command.payload.exclusion_id} kept changing")

    async def verification(self, outcome: ExclusionVerified | VerificationFailed) -> None:
        """The verification service's verdict on a request waiting for it."""
        if await self._already_applied(outcome.id):
            return
        for _ in range(MAX_ATTEMPTS):
            stored = await self.exclusions.load(outcome.payload.exclusion_id)
            if stored is None:
                raise UnknownExclusionError(f"no exclusion {outcome.payload.exclusion_id} to verify")
            policy = self._policy(stored.exclusion.jurisdiction)
            decide = transitions.verify if isinstance(outcome, ExclusionVerified) else transitions.fail
            transition = decide(stored.exclusion, outcome, policy, self.clock())  # type: ignore[arg-type]
            if transition is None:
                self.log.info("verification_ignored", exclusion_id=str(stored.id), state=stored.exclusion.state.value, outcome=outcome.type)
                return
            if await self._write(stored, transition):
                return
        raise ConflictError(f"exclusion {outcome.payload.exclusion_id} kept changing")

    # --- imports from a register --------------------------------------------------------------

    async def import_exclusion(self, command: ImportExclusion) -> None:
        """A register's exclusion, read by the forwarder's sync: in force here at once (a new exclusion,
        or the person's running one extended), or its end at the register, which ends one made here
        only by imports. It keeps its origin, so it is never forwarded back."""
        if await self._already_applied(command.id):
            return
        payload = command.payload
        policy = self._policy(payload.jurisdiction)
        identifiers = sorted({h for h in self.hasher.canonical_all(payload.identifiers) if ":" in h and _personal(h)})
        if not identifiers:
            raise RequestRefusedError("an imported exclusion names no person (no personal identifier hash of this deployment's form)")
        person_id, known = await self.exclusions.match_person(identifiers)
        if person_id is None and not payload.in_force:
            self.log.info("import_end_of_unknown_exclusion", register=payload.from_register)
            return
        person_id = person_id or str(derived_id(domain.primary_identifier(identifiers), "person"))
        await self.exclusions.save_person(person_id, identifiers, None, None)
        identifiers = sorted(set(self.hasher.canonical_all(known)) | set(identifiers))
        for attempt in range(MAX_ATTEMPTS):
            now = self.clock()
            running = await self.exclusions.running_for(person_id)
            if not payload.in_force:
                transition = transitions.imported_ended(running.exclusion, command, policy, now) if running else None
                if transition is None:
                    self.log.info("import_end_ignored", register=payload.from_register, person=person_id)
                    return
                if await self._write(running, transition):  # type: ignore[arg-type]
                    return
                continue
            if running is None:
                exclusion = domain.imported(command, person_id=person_id, identifiers=identifiers, now=now, policy=policy)
                opened = transitions.imported_registered(exclusion, command, now)
                pending = entries(opened)
                try:
                    if await self.exclusions.insert(exclusion, pending, at=now):
                        await self._announce(Stored(exclusion, 1, pending, now), opened, pending)
                    else:
                        await self._already_applied(command.id)
                    return
                except AlreadyRunningError as exc:
                    running = await self.exclusions.load(exc.exclusion_id)
                    if running is None or not running.exclusion.running:
                        await asyncio.sleep(min(FIRST_PAUSE_SECONDS * 2**attempt, LAST_PAUSE_SECONDS))
                        continue
            extension = transitions.imported_extended(running.exclusion, command, policy, now, identifiers=identifiers)
            if await self._write(running, extension):
                return
        raise InFlightError(f"exclusion of person {person_id} kept changing, or another request's is not stored yet")

    # --- the pieces ---------------------------------------------------------------------------

    async def _already_applied(self, cause_id: uuid.UUID) -> bool:
        """Redelivered: nothing changes again; what it led to goes out if it has not yet."""
        stored = await self.exclusions.by_cause(cause_id)
        if stored is None:
            return False
        self.log.info("redelivery_ignored", cause_id=str(cause_id), exclusion_id=str(stored.id))
        await self.outbox.deliver_caused_by(stored, cause_id)
        return True

    async def _write(self, before: Stored, transition: Transition) -> bool:
        pending = entries(transition)
        if not await self.exclusions.save(before, transition.exclusion, pending, at=transition.event.occurred_at):
            self.log.info("write_conflict_retrying", exclusion_id=str(before.id))
            return False
        await self._announce(before, transition, pending)
        return True

    async def _announce(self, before: Stored, transition: Transition, pending: list[str]) -> None:
        exclusion = transition.exclusion
        self.log.info(
            "exclusion_" + transition.event.type.removeprefix("exclusion."),
            exclusion_id=str(exclusion.id),
            subject=exclusion.person_id,
            state=exclusion.state.value,
            version=exclusion.version,
            event_id=str(transition.event.id),
        )
        await self.outbox.deliver(before, pending)

    def _policy(self, jurisdiction: str) -> Policy:
        try:
            return policy_for(self.policies, jurisdiction)
        except PolicyError as exc:
            raise RequestRefusedError(str(exc)) from exc

    def _forwarding(self, request: RequestExclusion, exclusion_id: uuid.UUID) -> str | None:
        """What the forwarder sends the register, sealed for it alone: the identifying fields (no
        device or payment fingerprints), year of birth and gender. None for an exclusion that came
        from elsewhere: it is never forwarded, so nothing is kept for it."""
        payload = request.payload
        if payload.origin is not None:
            return None
        identity = payload.identity.model_copy(update={"device_fingerprint": None, "payment_fingerprint": None})
        forwarding = ForwardingIdentity(identity=identity, year_of_birth=payload.year_of_birth, gender=payload.gender)
        return self.sealer.seal_text(forwarding.model_dump_json(exclude_none=True), ForwardingIdentity.sealing_context(exclusion_id))

    def _sealed_contacts(self, request: RequestExclusion, person_id: str, policy: Policy) -> dict[str, str]:
        identity, context = request.payload.identity, f"contact:{person_id}"
        contacts = {}
        if identity.email:
            contacts["email"] = self.sealer.seal_text(normalise_email(identity.email), context)
        if identity.mobile:
            contacts["mobile"] = self.sealer.seal_text(normalise_mobile(identity.mobile, policy.mobile_region), context)
        return contacts

    async def _tell_contacts(self, request: RequestExclusion, person_id: str, contacts: dict[str, str]) -> None:
        """The person's contacts, sealed, for the notification service (which keeps its own copy):
        published before any lifecycle event of this request, so a letter rarely waits for them."""
        if self.publish is None:
            return
        payload = ContactsRecordedPayload(
            email=contacts.get("email"),
            mobile=contacts.get("mobile"),
            locale=request.payload.locale,
            jurisdiction=request.payload.jurisdiction,
        )
        await self.publish(ContactsRecorded.caused_by(request, source=domain.SOURCE, subject=person_id, payload=payload))

    def _sealed(self, request: RequestExclusion, exclusion_id: uuid.UUID) -> Sealed:
        """The applicant's name, the support persons, and what the forwarder sends the register, each
        sealed to the exclusion they belong to."""
        payload = request.payload
        applicant = payload.third_party.applicant_name if payload.third_party else None
        return Sealed(
            forwarding=self._forwarding(request, exclusion_id),
            applicant_name=self.sealer.seal_text(applicant, f"third_party:{exclusion_id}") if applicant else None,
            support_persons=[
                self.sealer.seal_text(person.model_dump_json(), f"support_person:{exclusion_id}") for person in payload.support_persons
            ],
        )


def _personal(identifier_hash: str) -> bool:
    try:
        return kind_of(identifier_hash) in PERSONAL_KINDS
    except ValueError:
        return False
