"""``selfex audit verify``'s work: walk every chain, and check the heads a kept checkpoint names."""

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from services.audit.chain import Finding, Tail, Walk, chain_of
from services.audit.checkpoints import ANCHOR_FIELDS, CheckpointError, check_signature
from services.audit.repository import MongoAuditLog, newest_heads

# Records that may wait, over all chains, for one before them in their chain (the store's own order
# is the writers'); past this, the chain with the most waiting is walked again by query.
MAX_EARLY = 50_000


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


class _InOrder:
    """One chain's walk fed from the store's own order, in which a chain's records come as their
    writer appended them, so in ``seq`` order; a record that comes before one it follows waits for it."""

    def __init__(self, chain: str, anchor: Tail | None) -> None:
        self.walk = Walk(chain, anchor)
        self.after = anchor.seq if anchor else 0  # retention removed what is at or before it
        self.next = self.after + 1
        self.early: dict[int, dict[str, Any]] = {}

    def feed(self, document: dict[str, Any]) -> bool:
        """Take one record; False when the order cannot be trusted (the chain is walked by query then)."""
        seq = document.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq in self.early:
            return False
        if seq <= self.after:
            return True
        if seq < self.next:
            return False
        if seq > self.next:
            self.early[seq] = document
            return True
        self.walk.feed(document)
        self.next += 1
        while self.early and self.next in self.early:
            self.walk.feed(self.early.pop(self.next))
            self.next += 1
        return True

    def end(self) -> tuple[int, Finding | None]:
        for seq in sorted(self.early):  # after a gap, what is left, in order: the walk names the gap
            if self.walk.feed(self.early[seq]) is not None:
                break
        self.early.clear()
        return self.walk.count, self.walk.end()


async def _walk_all(log: MongoAuditLog, anchors: dict[str, Tail], parallel: int, report: Report) -> dict[str, tuple[int, Finding | None]]:
    """Every chain walked in one read of the whole log (one pass costs the store least per record).
    A chain whose records come out of order beyond ``MAX_EARLY`` waiting, or with a ``seq`` that is
    no position, or with a gap or a finding, is walked again on its own, by query, in ``seq`` order.
    """
    walks: dict[str, _InOrder] = {}
    by_query: set[str] = set()
    waiting = 0
    async for batch in log.every_record():
        for document in batch:
            topic, partition = document.get("topic"), document.get("partition")
            if not isinstance(topic, str) or not isinstance(partition, int) or isinstance(partition, bool):
                record_id = str(document.get("_id"))
                report.findings.append(Finding(f"{topic}/{partition}", -1, record_id, "modified", "its topic or partition names no chain"))
                continue
            chain = chain_of(topic, partition)
            if chain in by_query:
                continue
            walk = walks.get(chain)
            if walk is None:
                walk = walks[chain] = _InOrder(chain, anchors.get(chain))
            before = len(walk.early)
            if not walk.feed(document):
                by_query.add(chain)
                waiting -= len(walks.pop(chain).early)
                continue
            waiting += len(walk.early) - before
            if waiting > MAX_EARLY:
                most = max(walks, key=lambda c: len(walks[c].early))
                by_query.add(most)
                waiting -= len(walks.pop(most).early)
    results = {}
    for chain, walk in walks.items():
        # The read in the store's order is the fast way to "intact"; a gap or a finding in it is
        # checked again on the chain read in seq order, which alone decides what is reported.
        if walk.early or (walked := walk.end())[1] is not None:
            by_query.add(chain)
        else:
            results[chain] = walked
    gate = asyncio.Semaphore(parallel)

    async def one(chain: str) -> tuple[int, Finding | None]:
        async with gate:
            return await _walk_one(log, chain, anchors.get(chain))

    again = sorted(by_query)
    results.update(zip(again, await asyncio.gather(*(one(chain) for chain in again)), strict=True))
    return results


async def verify(log: MongoAuditLog, *, against: Iterable[dict[str, Any]] = (), public_key: str | None = None, parallel: int = 2) -> Report:
    """Walk every chain (in one read of the log; any walked again by query, ``parallel`` at a time); with ``against``, the checkpoints a regulator kept,
    check that each signature holds and each chain still reaches its checkpointed head unchanged."""
    started = time.perf_counter()
    report = Report()
    anchors = await signed_anchors(log, public_key, report)
    walked = await _walk_all(log, anchors, parallel, report)
    chains = sorted(walked)
    report.chains = len(chains)
    report.anchored = sum(1 for chain in chains if chain in anchors)
    for count, finding in walked.values():
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
