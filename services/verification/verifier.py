"""Load, decide, write, publish: the path every verification message takes, safe under redelivery.

A state change is one conditional write (on ``version``) that carries its events in an outbox; the
outbox is published right after and then cleared. A redelivered message finds its outcome recorded
and repeats it instead of deciding again; a crash between write and publish leaves the outbox for
the next redelivery or the timer to publish.
"""

import json
import uuid
from collections.abc import Callable
from datetime import datetime

from services.verification import domain
from services.verification.codes import CodeHasher, new_code, same, submission_context
from services.verification.domain import Decision, IssuedCode, SubmissionOutcome, Verification
from services.verification.repository import MongoOutcomes, MongoVerifications
from shared.crypto import Sealer
from shared.events import (
    Event,
    ExclusionCancelled,
    ExclusionRequested,
    RequestLiftVerification,
    ResendCode,
    ReviewDocument,
    SubmitCode,
    SubmitDocument,
    parse_event,
)
from shared.service import Service

WRITE_ATTEMPTS = 10


class ConcurrentUpdateError(RuntimeError):
    """Another writer kept changing the verification between our read and our write."""


class Verifier:
    def __init__(self, service: Service, hasher: CodeHasher, sealer: Sealer) -> None:
        self.service = service
        self.hasher = hasher
        self.sealer = sealer
        self.log = service.log

    @property
    def verifications(self) -> MongoVerifications:
        return MongoVerifications(self.service.db)

    @property
    def outcomes(self) -> MongoOutcomes:
        return MongoOutcomes(self.service.db)

    # --- lifecycle -------------------------------------------------------------------------

    async def open(self, requested: ExclusionRequested) -> None:
        """Start verifying a portal request: send a code, or ask for a document."""
        exclusion_id = requested.payload.exclusion_id
        verification = await self.verifications.get(exclusion_id)
        if verification is None:
            issued = self._issue(exclusion_id, requested) if domain.method_for(requested) == "code" else None
            verification = domain.start(requested, self.service.clock(), issued)
            if await self.verifications.add(verification):
                self.log.info("verification_started", exclusion_id=str(exclusion_id), method=verification.method)
            else:
                verification = await self.verifications.get(exclusion_id)
        if verification is not None:
            await self.flush(verification)

    async def cancel(self, cancelled: ExclusionCancelled) -> None:
        """The exclusion was cancelled: close its verification if still open."""
        await self._change(cancelled.payload.exclusion_id, lambda v, now: domain.cancel(v, cancelled.payload.reason, now))

    # --- submissions -----------------------------------------------------------------------

    async def submit(
        self, command: SubmitCode | ResendCode | SubmitDocument | ReviewDocument | RequestLiftVerification
    ) -> SubmissionOutcome:
        """Decide what one submission leads to, once; a redelivery repeats the recorded outcome."""
        for _ in range(WRITE_ATTEMPTS):
            verification = await self._addressed(command)
            earlier = (verification.outcome_of(command.id) if verification else None) or await self.outcomes.get(command.id)
            if earlier is not None:
                await self._repeat(verification, command, earlier)
                return earlier
            decision = await self._decide(verification, command)
            if decision.verification is None:
                await self.outcomes.record(decision.outcome)
                await self._publish(decision.events)
                return decision.outcome
            if verification is None:
                written = await self.verifications.add(decision.verification)
            else:
                written = await self.verifications.replace(decision.verification, expected_version=verification.version)
            if written:
                await self.outcomes.record(decision.outcome)
                await self.flush(decision.verification)
                return decision.outcome
        raise ConcurrentUpdateError(f"verification {command.payload.exclusion_id} kept changing")

    async def _addressed(self, command: Event) -> Verification | None:
        """The verification a submission is for: its lift verification (``lift_id``), else its exclusion's.
        A lift's code never reaches an exclusion's verification, nor the other way round."""
        lift_id = getattr(command.payload, "lift_id", None)
        verification = await self.verifications.get(lift_id or command.payload.exclusion_id)
        if isinstance(command, RequestLiftVerification):
            return verification  # whatever holds that id: a second start is refused, never written over it
        if verification is None or verification.lift_id != lift_id or verification.exclusion_id != command.payload.exclusion_id:
            return None
        return verification

    async def _decide(self, verification: Verification | None, command: Event) -> Decision:
        now = self.service.clock()
        match command:
            case SubmitCode():
                key = command.payload.lift_id or command.payload.exclusion_id
                code = self.sealer.open_text(command.payload.sealed_code, submission_context(key))
                elsewhere = await self._issued_for_another_request(verification, code)
                return domain.submit_code(verification, command, now, submitted=self.hasher.hash(key, code), elsewhere=elsewhere)
            case ResendCode():
                key = command.payload.lift_id or command.payload.exclusion_id
                return domain.resend(verification, command, now, issued=self._issue(key, command))
            case RequestLiftVerification():
                return domain.start_lift(verification, command, now, issued=self._issue(command.payload.lift_id, command))
            case SubmitDocument():
                return domain.submit_document(verification, command, now)
            case ReviewDocument():
                return domain.review_document(verification, command, now)
        raise TypeError(f"not a verification input: {type(command).__name__}")

    async def _issued_for_another_request(self, verification: Verification | None, code: str) -> bool:
        if verification is None or verification.subject is None:
            return False
        others = await self.verifications.of_subject(verification.subject, besides=verification.key)
        for other in others:
            hashed = self.hasher.hash(other.key, code)
            if any(same(hashed, h) for h in (other.code_hash, *other.earlier_code_hashes)):
                return True
        return False

    async def _repeat(self, verification: Verification | None, command: Event, earlier: SubmissionOutcome) -> None:
        await self.outcomes.record(earlier)
        if verification is not None and verification.outcome_of(command.id) is not None:
            await self.flush(verification)  # its events rode in the outbox
        else:
            await self._publish(domain.refusal_events(verification, command, earlier))
        self.log.info("submission_repeated", submission_id=str(command.id), status=earlier.status.value)

    # --- time ------------------------------------------------------------------------------

    async def tick(self, now: datetime) -> int:
        """Fail the verifications whose code expired by ``now``; publish outboxes left behind.
        Returns how many expired."""
        expired = 0
        for verification in await self.verifications.due(now):
            changed = domain.expire(verification, now)
            if changed is None:
                await self.flush(verification, now)
            elif await self.verifications.replace(changed, expected_version=verification.version):
                expired += 1
                self.log.info("verification_expired", exclusion_id=str(verification.exclusion_id))
                await self.flush(changed, now)
        return expired

    # --- plumbing --------------------------------------------------------------------------

    def _issue(self, key: uuid.UUID, cause: Event) -> IssuedCode:
        """A fresh code for the verification stored under ``key``: only its keyed hash is kept; the
        code itself travels sealed to notification."""
        code = new_code()
        context = domain.sealed_context(domain.code_notice_id(cause))
        return IssuedCode(hash=self.hasher.hash(key, code), sealed_params=self.sealer.seal_text(json.dumps({"code": code}), context))

    async def _change(self, exclusion_id: uuid.UUID, change: Callable[[Verification, datetime], Verification | None]) -> None:
        for _ in range(WRITE_ATTEMPTS):
            verification = await self.verifications.get(exclusion_id)
            if verification is None:
                return
            changed = change(verification, self.service.clock())
            if changed is None:
                await self.flush(verification)
                return
            if await self.verifications.replace(changed, expected_version=verification.version):
                self.log.info("verification_changed", exclusion_id=str(exclusion_id), state=changed.state.value)
                await self.flush(changed)
                return
        raise ConcurrentUpdateError(f"verification {exclusion_id} kept changing")

    async def flush(self, verification: Verification, now: datetime | None = None) -> None:
        """Publish the outbox, then clear it (if nobody changed the verification meanwhile: their
        copy of the outbox then goes out again, under the same event ids)."""
        if not verification.outbox:
            return
        await self._publish(parse_event(json.loads(item)) for item in verification.outbox)
        await self.verifications.replace(domain.flushed(verification, now or self.service.clock()), expected_version=verification.version)

    async def _publish(self, events) -> None:
        for event in events:
            await self.service.publish(event)
            self.log.info("event_published", event_id=str(event.id), type=event.type)
