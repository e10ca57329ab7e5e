"""The notification service's FastStream app."""

from faststream import FastStream

from services.notification import handlers
from services.notification.channels import EmailChannel, SmsWebhookChannel
from services.notification.courier import Courier
from services.notification.repository import INDEXES
from services.notification.templates import Templates
from shared.crypto import Sealer
from shared.service import Clock, Service, Ticker
from shared.settings import Settings


def create_app(settings: Settings | None = None, *, clock: Clock | None = None, database=None) -> FastStream:
    """The app; ``app.courier.tick()`` delivers the deferred notifications now due (the loop runs every
    ``settings.notification_timer_seconds``; 0 turns it off)."""
    settings = settings or Settings()
    service = Service("notification", settings, indexes=INDEXES, database=database)
    if clock is not None:
        service.clock = clock
    courier = Courier(
        service,
        Sealer.from_settings(settings),
        Templates(settings.notification_templates_dir),
        EmailChannel(settings),
        SmsWebhookChannel(settings),
    )
    handlers.register(service, courier)
    ticker = Ticker("notification.deferred", courier.tick, settings.notification_timer_seconds)

    async def start_ticker() -> None:  # async: FastStream runs a plain function's hook in a thread, without the loop
        ticker.start()

    app = service.app()
    app.after_startup(start_ticker)
    app.on_shutdown(ticker.stop)
    app.courier = courier  # type: ignore[attr-defined]
    return app
