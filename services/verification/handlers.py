"""Verification's consumers: translate the message, delegate to the verifier, which emits what follows."""

from services.verification import domain
from services.verification.verifier import Verifier
from shared import topics
from shared.events import ExclusionCancelled, ExclusionRequested, LifecycleEvent, VerificationInput
from shared.service import Service


def register(service: Service, verifier: Verifier) -> None:
    @service.subscriber(topics.EXCLUSION_LIFECYCLE, title="verification.exclusion_lifecycle")
    async def on_exclusion_lifecycle(event: LifecycleEvent) -> None:
        """Start verifying a portal request (a code, or a document check); close one whose exclusion was cancelled."""
        if isinstance(event, ExclusionRequested) and domain.needs_verification(event):
            await verifier.open(event)
        elif isinstance(event, ExclusionCancelled):
            await verifier.cancel(event)

    @service.subscriber(topics.VERIFICATION_INPUTS, title="verification.inputs")
    async def on_verification_input(command: VerificationInput) -> None:
        """Check a code, send a new one, start a lift verification, take a document in, or apply a reviewer's decision."""
        outcome = await verifier.submit(command)
        service.log.info(
            "submission_handled",
            submission_id=str(command.id),
            exclusion_id=str(outcome.exclusion_id),
            type=command.type,
            status=outcome.status.value,
        )
