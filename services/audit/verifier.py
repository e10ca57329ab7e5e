"""``selfex audit verify``'s work: walk every chain, and check the heads a kept checkpoint names."""

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from services.audit.chain import Finding, Tail, Walk
from services.audit.checkpoints import ANCHOR_FIELDS, CheckpointError, check_signature
from services.audit.repository import MongoAuditLog, newest_heads


@dataclass
class Report:
    records: int = 0
    chains: int = 0
    seconds: float = 0.0
    findings: list[Finding] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # checkpoints that do not hold
    heads_checked: int = 0
    anchored: int = 0  # chains whose oldest records retention removed (walked from their signed anchor)
    heads_retired: int = 0  # checkpointed heads that retention removed since (at or before an anchor)

    @property
    def intact(self) -> bool:
        return not self.findings and not self.problems

    def describe(self) -> str:
        if self.intact:
            against = f", {self.heads_checked} checkpointed heads match" if self.heads_checked else ""
            if self.heads_retired:
                against += f" ({self.heads_retired} of them removed by retention, at or before a signed anchor)"
            anchored = f", {self.anchored} chains walked from a retention anchor" if self.anchored else ""
            return f"intact: {self.records} records in {self.chains} chains verified in {self.seconds:.1f} s{anchored}{against}"
        lines = [f"TAMPERED: {self.records} records in {self.chains} chains read in {self.seconds:.1f} s"]
        lines += [f.describe() for f in self.findings] + self.problems
        return "\n".join(lines)


async def _walk_one(log: MongoAuditLog, chain: str, anchor: Tail | None = None) -> tuple[int, Finding | None]:
    checker = Walk(chain, anchor)
    async for document in log.records(chain, after=anchor.seq if anchor else 0):
        if checker.feed(document) is not None:
            break
    return checker.count, checker.end()


async def verify(log: MongoAuditLog, *, against: Iterable[dict[str, Any]] = (), public_key: str | None = None, parallel: int = 2) -> Report:
    """Walk every chain (``parallel`` at a time); with ``against``, the checkpoints a regulator kept,
    check that each signature holds and each chain still reaches its checkpointed head unchanged."""
    started = time.perf_counter()
    report = Report()
    chains = await log.chains()
    report.chains = len(chains)
    gate = asyncio.Semaphore(parallel)
    anchors = await signed_anchors(log, public_key, report)
    report.anchored = sum(1 for chain in chains if chain in anchors)

    async def one(chain: str) -> tuple[int, Finding | None]:
        async with gate:
            return await _walk_one(log, chain, anchors.get(chain))

    for count, finding in await asyncio.gather(*(one(chain) for chain in chains)):
        report.records += count
        if finding is not None:
            report.findings.append(finding)
    for chain in sorted(set(anchors) - set(chains)):  # retention always leaves a chain's newest record
        cut = anchors[chain]
        report.findings.append(
            Finding(chain, cut.seq + 1, "-", "deleted", f"every record after the retention anchor at seq {cut.seq} is gone")
        )
    kept = list(against)
    for checkpoint in kept:
        try:
            check_signature(checkpoint, public_key)
        except CheckpointError as error:
            report.problems.append(f"checkpoint: {error}")
    for chain, head in sorted(newest_heads(kept).items()):
        report.heads_checked += 1
        if chain in anchors and head["seq"] <= anchors[chain].seq:
            report.heads_retired += 1  # retention removed it, and signed where it cut
            continue
        found = await log.record_at(chain, head["seq"])
        if found is None:
            report.problems.append(
                f"rewritten: chain {chain} no longer has seq {head['seq']}, which the checkpoint names (its tail was cut)"
            )
        elif found.get("hash") != head["hash"]:
            report.problems.append(
                f"rewritten: chain {chain} at seq {head['seq']} (record {found.get('_id')}) differs from the checkpoint: its tail was rewritten after it"
            )
    report.findings.sort(key=lambda f: (f.chain, f.seq))
    report.seconds = time.perf_counter() - started
    return report


async def signed_anchors(log: MongoAuditLog, public_key: str | None, report: Report) -> dict[str, Tail]:
    """Each chain's furthest retention anchor whose signature holds; one that does not is a problem
    (and is not used: the chain is walked as if it had none, so its missing start is named too)."""
    anchors: dict[str, Tail] = {}
    for anchor in await log.anchors():
        try:
            check_signature(anchor, public_key, ANCHOR_FIELDS, "retention anchor")
        except CheckpointError as error:
            report.problems.append(f"anchor: {error}")
            continue
        chain = anchor["chain"]
        if chain not in anchors or anchor["seq"] > anchors[chain].seq:
            anchors[chain] = Tail(anchor["seq"], -1, anchor["hash"])
    return anchors
