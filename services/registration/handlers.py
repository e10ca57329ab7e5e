"""Registration's consumers: translate the message, delegate to the registrar."""

from services.registration.domain import UnverifiedLiftError
from services.registration.registrar import Registrar
from shared import topics
from shared.events import (
    CancelExclusion,
    EndAtOrigin,
    ExclusionCommand,
    ExclusionVerified,
    ImportExclusion,
    LiftVerified,
    RequestExclusion,
    VerificationEvent,
    VerificationFailed,
)
from shared.service import Service

# How long the broker may hold the commands' fetch when it has nothing: an operator's request waits
# for its answer through this hop, and the embedded broker (Tansu) holds a fetch for the whole wait
# even when a record arrives meanwhile (aiokafka's default, 500 ms, cost up to a quarter of a second).
COMMANDS_FETCH_MAX_WAIT_MS = 10


def register(service: Service, registrar: Registrar) -> None:
    @service.subscriber(topics.EXCLUSION_COMMANDS, title="registration.exclusion_commands", fetch_max_wait_ms=COMMANDS_FETCH_MAX_WAIT_MS)
    async def on_exclusion_command(command: ExclusionCommand) -> None:
        """Register an exclusion request (new, or extending a running one), an exclusion imported from the
        register, register staff's cancellation of one made in error, or the end at its origin of one
        forwarded here. A lift request here is refused (dead-lettered): only a verified lift ends anything."""
        if isinstance(command, RequestExclusion):
            await registrar.request(command)
        elif isinstance(command, CancelExclusion):
            await registrar.cancel(command)
        elif isinstance(command, ImportExclusion):
            await registrar.import_exclusion(command)
        elif isinstance(command, EndAtOrigin):
            await registrar.end_at_origin(command)
        else:
            raise UnverifiedLiftError(
                "a lift request must be verified with the person's code (verification.lift_verified); this one ends nothing"
            )

    @service.subscriber(topics.VERIFICATION_EVENTS, title="registration.verification_events")
    async def on_verification_event(event: VerificationEvent) -> None:
        """A verified request takes effect (after any cooling-off); a failed one is cancelled; a verified
        lift request goes to the policy, which says whether and when the exclusion ends."""
        if isinstance(event, LiftVerified):
            await registrar.lift(event)
        elif isinstance(event, (ExclusionVerified, VerificationFailed)) and event.payload.lift_id is None:
            await registrar.verification(event)
