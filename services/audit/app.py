"""The audit service's FastStream app: the log's appends, its signed checkpoints, and the periodic
verification of every chain, whose results the console's "Audit chain" page shows."""

import os
import socket
from datetime import datetime

from faststream import FastStream

from services.audit import handlers
from services.audit.checkpoints import Signer
from services.audit.repository import INDEXES, MongoAuditLog, MongoVerifications, verification_result
from services.audit.verifier import verify
from shared.identity import Hasher
from shared.service import Clock, Service, Ticker
from shared.settings import Settings


def create_app(settings: Settings | None = None, *, clock: Clock | None = None, database=None) -> FastStream:
    settings = settings or Settings()
    service = Service("audit", settings, indexes=INDEXES, database=database)
    if clock is not None:
        service.clock = clock
    log: list[MongoAuditLog] = []
    signer = Signer.from_settings(settings)  # refuses an insecure key before anything starts
    writer = f"{socket.gethostname()}:{os.getpid()}"

    async def checkpoint() -> None:
        """Write the heads of the chains this instance appends to, signed."""
        if signer is not None and log and (tails := log[0].tails()):
            await log[0].save_checkpoint(signer.checkpoint(tails, service.clock(), writer))

    ticker = Ticker("audit.checkpoints", checkpoint, settings.audit_checkpoint_seconds if signer else 0)
    every = settings.audit_verify_seconds

    async def verify_log() -> None:
        """Walk every chain once a period (the instance that claims the period first) and keep the result."""
        started = service.clock()
        period = period_of(started, every)
        if not await MongoVerifications(service.db).claim(period, writer, started):
            return
        # The newest checkpoints too: a chain's tail cut off after one is named (the walk alone cannot tell).
        report = await verify(log[0], against=await log[0].recent_checkpoints(CHECKPOINTS_CHECKED))
        result = verification_result(report, period=period, started=started, ended=service.clock(), writer=writer, every=every)
        await MongoVerifications(service.db).save(result)
        if report.intact:
            service.log.info("audit_chain_verified", records=report.records, chains=report.chains, seconds=round(report.seconds, 3))
        else:
            first = report.findings[0] if report.findings else None
            service.log.error(
                "audit_chain_broken",
                records=report.records,
                findings=len(report.findings),
                problems=len(report.problems),
                chain=first.chain if first else None,
                seq=first.seq if first else None,
                record_id=first.record_id if first else None,
                kind=first.what if first else None,
            )

    # Checked more often than the period (at most a minute apart), so a period starts being verified
    # soon after it begins whatever the instances' start times; the claim keeps it to one run.
    verifier = Ticker("audit.verification", verify_log, min(every, 60.0))

    async def open_log() -> None:
        log[:] = [MongoAuditLog(service.db)]
        if signer is None:
            service.log.warning("audit_checkpoints_off", reason="SELFEX_AUDIT_SIGNING_KEY is not set")
        ticker.start()
        verifier.start()

    handlers.register(service, Hasher.from_settings(settings), log)
    app = service.app(on_start=open_log)

    @app.on_shutdown
    async def stop_ticker() -> None:
        await verifier.stop()
        await ticker.stop()
        try:
            await checkpoint()  # the heads as this instance leaves them
        except Exception:  # noqa: BLE001 — the store may be gone already; the next instance writes one
            service.log.warning("audit_checkpoint_failed_on_stop")

    return app


CHECKPOINTS_CHECKED = 100  # the newest checkpoints each verification checks the chains' heads against


def period_of(at: datetime, every: float) -> str:
    """The verification period a moment falls in (periods of ``every`` seconds from the epoch)."""
    return f"{every:g}s:{int(at.timestamp() // every)}"
