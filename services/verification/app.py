"""The verification service's FastStream app."""

from faststream import FastStream

from services.verification import handlers
from services.verification.codes import CodeHasher
from services.verification.repository import INDEXES
from services.verification.timers import Timers
from services.verification.verifier import Verifier
from shared.crypto import Sealer
from shared.service import Clock, Service
from shared.settings import Settings


def create_app(settings: Settings | None = None, *, clock: Clock | None = None, database=None) -> FastStream:
    """The app; ``app.timers.tick(now)`` runs one timer round (the loop runs every
    ``settings.verification_timer_seconds``; 0 turns it off)."""
    settings = settings or Settings()
    service = Service("verification", settings, indexes=INDEXES, database=database)
    if clock is not None:
        service.clock = clock
    verifier = Verifier(service, CodeHasher.from_settings(settings), Sealer.from_settings(settings))
    handlers.register(service, verifier)
    timers = Timers(verifier, interval=settings.verification_timer_seconds)
    app = service.app()
    app.after_startup(timers.start)
    app.on_shutdown(timers.stop)
    app.timers = timers  # type: ignore[attr-defined]
    return app
