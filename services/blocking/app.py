"""The blocking service's FastStream app: the view is loaded from the newest stored snapshot of it (or,
without one, from blocking's projection) and brought up to the end of the lifecycle topic (as it was
at start) before the instance joins the account-events group; then it is kept current from the
lifecycle events, snapshots of it are stored now and then, and an instance whose view may have
fallen behind answers UNAVAILABLE and is not ready."""

import gc
import time

from faststream import FastStream

from services.blocking import handlers
from services.blocking.accounts import SeenAccounts
from services.blocking.domain import ExclusionView
from services.blocking.follower import ViewFollower
from services.blocking.publisher import BatchPublisher
from services.blocking.repository import INDEXES, MongoExclusionProjection, MongoSeenAccounts, MongoViewSnapshots
from services.blocking.snapshot import ViewSnapshots
from shared.health import GroupMembership
from shared.identity import Hasher
from shared.service import Clock, Service
from shared.settings import Settings

VIEW = "blocking_view"
FOLLOWER = "blocking_follower"
SNAPSHOTS = "blocking_snapshots"
FREEZE_AT = 50_000  # exclusions: below this, full collections are cheap anyway
# A batch of account events holds what it parses and decides until its decisions are out. Collecting
# the youngest objects every 700 allocations (Python's default) walked each batch's many times while
# it was alive and pushed it into the older generations, whose collections walk the whole view: a
# collection every this many allocations instead (README, Performance: blocking's garbage collection).
YOUNG_COLLECTION_EVERY = 20 * handlers.MAX_BATCH


def create_app(settings: Settings | None = None, *, clock: Clock | None = None, database=None) -> FastStream:
    settings = settings or Settings()
    service = Service("blocking", settings, indexes=INDEXES, database=database)
    if clock is not None:
        service.clock = clock
    hasher = Hasher.from_settings(settings)
    view = ExclusionView(canonical=hasher.canonical_all)
    publisher = BatchPublisher(service.broker, settings)
    follower = ViewFollower(
        settings, view, lambda: MongoExclusionProjection(service.db), handlers.lifecycle_group(settings), service.readiness
    )

    snapshots = ViewSnapshots(view, follower, lambda: MongoViewSnapshots(service.db), settings.blocking_snapshot_seconds)

    async def start() -> None:
        if hasher.rotating:  # before anything is followed: see MongoSeenAccounts.rehash_once
            moved = await MongoSeenAccounts(service.db).rehash_once(hasher)
            service.log.info("seen_accounts_rekeyed", key_id=hasher.key_id, moved=moved)
        await follower.checkpoint()  # before the load: what the projection holds, the follower need not read again
        started = time.perf_counter()
        gc.disable()  # a million long-lived objects: collecting while they arrive only costs time
        try:
            source = "snapshot" if await snapshots.load(service.clock()) else "projection"
            if source == "projection":
                async for exclusion in MongoExclusionProjection(service.db).excluding(service.clock()):
                    view.add(exclusion)
        finally:
            gc.enable()
        if len(view) >= FREEZE_AT:  # the view lives as long as the process: keep it out of later collections
            gc.collect()
            gc.freeze()
        gc.set_threshold(YOUNG_COLLECTION_EVERY, *gc.get_threshold()[1:])
        service.log.info("view_loaded", exclusions=len(view), source=source, seconds=round(time.perf_counter() - started, 2))
        await follower.start()
        # Only now do the subscribers start: no account event is decided before the view has caught up.
        await follower.caught_up()
        snapshots.start()

    accounts = SeenAccounts(lambda: MongoSeenAccounts(service.db))
    membership = GroupMembership(service.readiness, "group")
    handlers.register(service, hasher, view, accounts, publisher, follower, listener=membership)
    app = service.app(on_start=start)
    app.context.set_global(VIEW, view)  # for a look from outside (tests, diagnostics); handlers get it directly
    app.context.set_global(FOLLOWER, follower)
    app.context.set_global(SNAPSHOTS, snapshots)
    app.on_shutdown(snapshots.stop)  # while the store is still open
    app.on_shutdown(follower.stop)
    return app
