"""Registration's consumers: translate the message, delegate to the registrar."""

from shared import topics
from shared.events import ExclusionCommand, ExclusionVerified, RequestExclusion, VerificationEvent, VerificationFailed
from shared.service import Service

from services.registration.registrar import Registrar


def register(service: Service, registrar: Registrar) -> None:
    @service.subscriber(topics.EXCLUSION_COMMANDS, title="registration.exclusion_commands")
    async def on_exclusion_command(command: ExclusionCommand) -> None:
        """Register an exclusion request (new, or extending a running one), or a request to lift one."""
        if isinstance(command, RequestExclusion):
            await registrar.request(command)
        else:
            await registrar.lift(command)

    @service.subscriber(topics.VERIFICATION_EVENTS, title="registration.verification_events")
    async def on_verification_event(event: VerificationEvent) -> None:
        """A verified request takes effect (after any cooling-off); a failed one is cancelled."""
        if isinstance(event, (ExclusionVerified, VerificationFailed)):
            await registrar.verification(event)
