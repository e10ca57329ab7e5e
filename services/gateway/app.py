"""The gateway's FastAPI app: the operator APIs, the portal, and the consumers that keep its reads current."""

import gc
from contextlib import asynccontextmanager

import structlog
from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from services.gateway import chipout, compliance, gamstop, handlers, native, problems, register
from services.gateway.access import Gatekeeper
from services.gateway.coalescing import CoalescingLookup
from services.gateway.context import Arrivals, Gateway
from services.gateway.edge import Edge
from services.gateway.feed import LifecycleFeed
from services.gateway.repository import INDEXES, MongoCommandEffects, MongoDecisions, MongoLookup, MongoOperators, MongoViews
from services.gateway.requestlog import RequestLog
from shared.broker import publish as publish_event
from shared.crypto import Sealer
from shared.events import Event, RequestHandled
from shared.identity import Hasher
from shared.policies import Policy, load_policies
from shared.service import Clock, Service
from shared.settings import Settings

log = structlog.get_logger("gateway")

DESCRIPTION = """
The HTTP face of Selfex for operators.

* **ChipOut-compatible** (`/api/v1.3/exclude-customers`, `/v1.3/customer-status`, both host prefixes):
  the key in the body or the query, exactly as the Swedish register's v1.3.
* **GAMSTOP-compatible** (`POST /`, `POST /gamstop/v2`, `POST /gamstop/v2/batch`): form fields in,
  `X-Exclusion`, `X-Unique-Id` and `Date` headers out; `X-API-Key`; bare status codes on errors.
* **Native** (`/v1/...`): exclusions, people, checks (batches of up to 10,000), the operator's own
  decisions and document reviews. Send the key in `X-API-Key` (or `Authorization: Bearer`).

Every answer carries `Date` and `X-Request-Id`; every request is written to the audit log (who,
what, when, outcome, trace id; never the personal data in it). Keys are rate limited (`429` with
`Retry-After`); bodies are size limited (`413`) and JSON bodies nested at most 32 deep (`400`).

**Fail closed.** When Selfex cannot tell (its view of exclusions is starting, lagging or stopped, or
a server it needs is away) it says so instead of answering "not excluded": GAMSTOP checks `503` with
`Retry-After`, ChipOut's status `500`, native checks `503` with `"status": "unavailable"`, and
`GET /readyz` answers `503` with the reasons. Treat each of these as a block, and retry.
"""


def create_app(
    settings: Settings | None = None,
    *,
    database: AsyncDatabase | None = None,
    clock: Clock | None = None,
    policies: dict[str, Policy] | None = None,
) -> FastAPI:
    """The app: the operator APIs and the portal, with the consumers that keep its reads current."""
    settings = settings or Settings()
    service = Service("gateway", settings, indexes=INDEXES, database=database)
    if clock is not None:
        service.clock = clock
    policies = policies or load_policies()
    arrivals = Arrivals()  # the lifecycle consumer wakes the write waiting for its effect
    lifecycle = handlers.register(service, Hasher.from_settings(settings), arrivals)
    feed = LifecycleFeed(settings, service.readiness, lambda: lifecycle, group=handlers.lifecycle_group(service))
    stream = service.app()

    async def publish(event: Event) -> None:
        await publish_event(service.broker, settings, event)

    requests = RequestLog(service.broker, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async with stream:
            await requests.start()
            await feed.start()
            db = service.db
            app.state.settings = settings
            app.state.db = db
            app.state.publish = publish
            app.state.hasher = Hasher.from_settings(settings)
            app.state.sealer = Sealer.from_settings(settings)
            app.state.policies = policies
            app.state.gateway = Gateway(
                settings=settings,
                hasher=app.state.hasher,
                policies=policies,
                clock=service.clock,
                gatekeeper=Gatekeeper(MongoOperators(db), settings),
                lookup=MongoLookup(db),
                checks=CoalescingLookup(MongoLookup(db)),
                views=MongoViews(db),
                effects=MongoCommandEffects(db),
                decisions=MongoDecisions(db),
                publish=publish,
                feed=feed,
                arrivals=arrivals,
            )
            app.state.feed = feed
            app.state.record_request = requests.record
            log.info("gateway_started", host=settings.gateway_host, port=settings.gateway_port)
            gc.collect()
            gc.freeze()  # what start-up made lives as long as the process: keep it out of every collection
            try:
                # Lifespan state: the server copies it into each request's scope, where a route finds
                # the gateway with one dict lookup (``app.state`` costs a property and a __getattr__).
                yield {"gateway": app.state.gateway}
            finally:
                await feed.stop()
                await requests.stop()

    app = FastAPI(title="Selfex", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)

    # Routes are matched in order: the checks, the hottest, first.
    mount(app, gamstop.router)
    mount(app, chipout.router)
    mount(app, native.router)
    mount(app, compliance.router)
    mount(app, register.router)
    try:
        from services.gateway import portal
    except ImportError:
        log.info("portal_not_mounted")
    else:
        mount(app, portal.router)
    from services.gateway import web

    web.install(app)  # the landing page, the portal's and the console's pages, their static files

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> JSONResponse:
        """200 when the gateway can reach its store, 503 when it cannot."""
        try:
            await app.state.db.command("ping")
        except PyMongoError as exc:
            return JSONResponse({"status": "unavailable", "store": type(exc).__name__}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get(
        "/readyz",
        tags=["operations"],
        responses={
            200: {"description": "ready: the lookup holds every exclusion the lifecycle topic held a moment ago"},
            503: {
                "description": "cannot decide now (feed starting, lagging or stopped, …); the reasons are named. Checks answer 503 meanwhile"
            },
        },
    )
    async def readyz() -> JSONResponse:
        """200 when the gateway can answer checks, 503 with the reasons when it cannot."""
        feed.reason()
        status, body = service.readiness.answer()
        return JSONResponse(body, status_code=status, headers={"Retry-After": problems.RETRY_AFTER} if status == 503 else None)

    problems.install(app)

    async def record_request(event: RequestHandled) -> None:
        await app.state.record_request(event)

    app.add_middleware(Edge, settings=settings, record=record_request)
    return app


def mount(app: FastAPI, router: APIRouter) -> None:
    """The router's routes, straight into the app's own.

    ``include_router`` keeps the router whole behind an ``_IncludedRouter``: every request that
    reaches it pays two more layers and a second match (the README's performance notes say what
    that cost a check). Our routers carry their prefix and tags on their routes and include nothing
    themselves, so their routes are the same in the app's router, where they are matched in one pass.
    """
    if router.routes and not all(isinstance(route, APIRoute) for route in router.routes):
        raise TypeError("mount takes a router of plain API routes; include_router the others")
    if router.dependencies or router.on_startup or router.on_shutdown:
        raise TypeError("mount would drop the router's own dependencies and events; include_router it")
    app.router.routes.extend(router.routes)
