"""Registration's consumers: translate the message, delegate to the domain, emit what follows."""

from shared import topics
from shared.events import RequestExclusion, derived_id
from shared.identity import Hasher
from shared.service import Service

from services.registration import domain
from services.registration.repository import MongoExclusions


def register(service: Service, hasher: Hasher) -> None:
    @service.subscriber(topics.EXCLUSION_COMMANDS, title="registration.exclusion_commands")
    async def on_exclusion_requested(request: RequestExclusion) -> None:
        """Store the person and a new exclusion, then announce it."""
        exclusions = MongoExclusions(service.db)
        identifiers = domain.person_identifiers(hasher.identifiers(request.payload.identity))
        person_id = await exclusions.find_person(identifiers) or str(derived_id(request.id, "person"))
        await exclusions.save_person(person_id, identifiers, request.payload.year_of_birth, request.payload.gender)
        exclusion = await exclusions.add(domain.exclude(request, person_id=person_id, identifiers=identifiers, now=service.clock()))
        await service.publish(domain.activated(exclusion, request))
        service.log.info("exclusion_activated", exclusion_id=str(exclusion.id), subject=person_id)
