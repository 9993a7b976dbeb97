"""Who owns each channel's stream: the rules of the lease log, pure (no Kafka, no clock).

Every ingest follows `onair.ingest.leases` (key = channel, so one channel's records sit in one
partition, in one order for every reader) and folds each record into the channel's `Lease` with
`apply()`, at the record's append time (the topic stamps `LogAppendTime`: one broker clock, the
same number for every reader). The same records in the same order give every ingest the same
answer to "who owns the channel"; an ingest that wrote a claim knows whether it won once it has
read its own record back.

    CLAIM    an ingest wants the channel. A new stream wins when the channel is free (no lease,
             or its stream ended); a resume wins while that stream is resumable (interrupted,
             or its lease lapsed, less than the grace ago), or when the claimant holds the
             lease already (its own publish was fenced and the publisher came back to it)
    RENEW    the holder is alive, and how far its stream got. It counts only while the lease is
             live: a renewal that arrives after the lease expired revives nothing
    RELEASE  the holder lets go: INTERRUPTED (its publisher went away; the grace starts) or
             ENDED (end marker and `StreamEnded` are written)
    END      an ingest claims the ending of a stream nobody resumed in time (its lease lapsed
             or its grace ran out, or the ingest ending it vanished). One END wins; its writer
             reads the stream's last GOP, writes the end marker and `StreamEnded`, and RELEASEs
             ENDED

A lease's `phase` at a time t:

    LIVE       held, t < last claim/renewal + ttl
    RESUMABLE  held but lapsed, t < expiry + grace; or interrupted, t < release + grace
    UNENDED    lapsed or interrupted past the grace, or an END whose ender went quiet (ttl):
               an END may win now
    ENDING     an END won less than ttl ago
    FREE       no lease, or its stream ended: a claim for a new stream may win

`LeaseTimings` holds the holder's side: when it stops trusting its own lease (`fence_after_s`
since the send of its last acknowledged renewal) and how long a GOP may take to be
acknowledged (`delivery_timeout_s`, below the margin, so none lands after an END could win).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any


class Kind(Enum):
    CLAIM = "CLAIM"
    RENEW = "RENEW"
    RELEASE = "RELEASE"
    END = "END"


class Status(Enum):
    HELD = "HELD"
    INTERRUPTED = "INTERRUPTED"
    ENDING = "ENDING"
    ENDED = "ENDED"


class Phase(Enum):
    FREE = "free"
    LIVE = "live"
    RESUMABLE = "resumable"
    UNENDED = "unended"
    ENDING = "ending"


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a stream got, as its holder last said (offsets in `onair.ingest.gops`)."""

    started_ms: int = 0
    next_sequence: int = 0
    gops_partition: int = -1
    gops_first_offset: int = -1
    gops_last_offset: int = -1  # the last chunk acknowledged


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """One record of the lease log. `lease_id` names a claim (CLAIM, END) and the lease it
    won; RENEW and RELEASE carry the id of the lease they speak for."""

    channel: str
    kind: Kind
    lease_id: str
    holder: str  # the ingest process that wrote it
    stream_id: str
    ttl_ms: int
    grace_ms: int
    resume: bool = False  # CLAIM: continue `stream_id` rather than start it
    outcome: Status | None = None  # RELEASE: INTERRUPTED or ENDED
    progress: Progress = field(default_factory=Progress)
    reason: str = ""
    written_ms: int = 0  # the writer's clock; informative only


@dataclass(frozen=True, slots=True)
class Lease:
    """A channel's lease after the records so far. `since_ms`: the append time of the claim
    or renewal that made it live (HELD, ENDING), of the release (INTERRUPTED, ENDED)."""

    channel: str
    status: Status
    lease_id: str
    holder: str
    stream_id: str
    since_ms: int
    ttl_ms: int
    grace_ms: int
    progress: Progress = field(default_factory=Progress)
    reason: str = ""

    def phase(self, at_ms: int) -> Phase:
        if self.status is Status.ENDED:
            return Phase.FREE
        if self.status is Status.ENDING:
            return Phase.ENDING if at_ms < self.since_ms + self.ttl_ms else Phase.UNENDED
        if self.status is Status.HELD and at_ms < self.expires_ms:
            return Phase.LIVE
        return Phase.RESUMABLE if at_ms < self.resumable_until_ms else Phase.UNENDED

    @property
    def expires_ms(self) -> int:
        """When a held lease lapses unless renewed (an ENDING one: when another END may win)."""
        return self.since_ms + self.ttl_ms

    @property
    def resumable_until_ms(self) -> int:
        """A lapsed lease counts as interrupted at its expiry; the grace runs from there."""
        start = self.expires_ms if self.status is Status.HELD else self.since_ms
        return start + self.grace_ms

    @property
    def lapsed_holder(self) -> bool:
        """The holder stopped renewing (it died, froze or lost the broker), as opposed to a
        publisher that went away (interrupted) or an ender that did not finish."""
        return self.status is Status.HELD


def apply(lease: Lease | None, record: LeaseRecord, at_ms: int) -> tuple[Lease | None, bool]:
    """The lease after `record`, appended at `at_ms`, and whether the record took effect (a
    claim won, a renewal or release counted)."""
    phase = lease.phase(at_ms) if lease is not None else Phase.FREE
    kind = record.kind
    if kind is Kind.CLAIM:
        if _claim_wins(lease, phase, record):
            kept = lease.progress if record.resume and lease is not None else record.progress
            return _held(record, at_ms, kept), True
        return lease, False
    if kind is Kind.END:
        if lease is not None and _end_wins(lease, phase, record):
            return _ending(lease, record, at_ms), True
        return lease, False
    if lease is None or record.lease_id != lease.lease_id:
        return lease, False
    if kind is Kind.RENEW and lease.status is Status.HELD and phase is Phase.LIVE:
        return replace(lease, since_ms=at_ms, ttl_ms=record.ttl_ms, progress=record.progress), True
    if kind is Kind.RELEASE:
        if record.outcome is Status.INTERRUPTED and phase is Phase.LIVE:
            return _released(lease, record, at_ms, Status.INTERRUPTED), True
        live_holder = lease.status is Status.HELD and phase is Phase.LIVE
        if record.outcome is Status.ENDED and (live_holder or lease.status is Status.ENDING):
            return _released(lease, record, at_ms, Status.ENDED), True
    return lease, False


def _claim_wins(lease: Lease | None, phase: Phase, record: LeaseRecord) -> bool:
    if not record.resume:
        return phase is Phase.FREE
    if lease is None or record.stream_id != lease.stream_id:
        return False
    if phase is Phase.RESUMABLE:
        return True
    return phase is Phase.LIVE and record.holder == lease.holder


def _end_wins(lease: Lease, phase: Phase, record: LeaseRecord) -> bool:
    return phase is Phase.UNENDED and record.stream_id == lease.stream_id


def _held(record: LeaseRecord, at_ms: int, progress: Progress) -> Lease:
    return Lease(
        record.channel,
        Status.HELD,
        record.lease_id,
        record.holder,
        record.stream_id,
        at_ms,
        record.ttl_ms,
        record.grace_ms,
        progress,
    )


def _ending(lease: Lease, record: LeaseRecord, at_ms: int) -> Lease:
    return replace(
        lease,
        status=Status.ENDING,
        lease_id=record.lease_id,
        holder=record.holder,
        since_ms=at_ms,
        ttl_ms=record.ttl_ms,
    )


def _released(lease: Lease, record: LeaseRecord, at_ms: int, status: Status) -> Lease:
    return replace(
        lease,
        status=status,
        since_ms=at_ms,
        grace_ms=record.grace_ms,
        progress=record.progress,
        reason=record.reason,
    )


# ---- the holder's timings -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LeaseTimings:
    """A lease lives `ttl_s` after the append of its last claim or renewal; the holder renews
    every `renew_s`. The holder measures from the moment it *sent* a renewal that was then
    acknowledged (the append came later, so the lease lives at least that long by the broker's
    clock) and stops accepting media `fence_after_s` (half the TTL) after it. The other half is
    the margin: a GOP produced at the last moment is acknowledged or failed within
    `delivery_timeout_s` (the producer's message timeout), and `slack_s` is left over for the
    two clocks running at slightly different rates and for the holder's own scheduling."""

    ttl_s: float = 30.0
    renew_s: float = 3.0

    @property
    def ttl_ms(self) -> int:
        return int(self.ttl_s * 1000)

    @property
    def fence_after_s(self) -> float:
        return self.ttl_s / 2

    @property
    def slack_s(self) -> float:
        return max(0.5, self.ttl_s / 10)

    @property
    def delivery_timeout_s(self) -> float:
        return self.ttl_s - self.fence_after_s - self.slack_s

    @property
    def tick_s(self) -> float:
        """How often the keeper looks at its leases and the log."""
        return min(0.5, self.renew_s / 2)


# ---- Avro ----------------------------------------------------------------------------------

SCHEMA = "IngestLease"


def to_avro(record: LeaseRecord) -> dict[str, Any]:
    p = record.progress
    return {
        "channel": record.channel,
        "kind": record.kind.value,
        "lease_id": record.lease_id,
        "holder": record.holder,
        "stream_id": record.stream_id,
        "ttl_ms": record.ttl_ms,
        "grace_ms": record.grace_ms,
        "resume": record.resume,
        "outcome": record.outcome.value if record.outcome is not None else None,
        "started_ms": p.started_ms,
        "next_sequence": p.next_sequence,
        "gops_partition": p.gops_partition,
        "gops_first_offset": p.gops_first_offset,
        "gops_last_offset": p.gops_last_offset,
        "reason": record.reason,
        "written_ms": record.written_ms,
    }


def from_avro(data: dict[str, Any]) -> LeaseRecord:
    outcome = data.get("outcome")
    return LeaseRecord(
        channel=data["channel"],
        kind=Kind(data["kind"]),
        lease_id=data["lease_id"],
        holder=data["holder"],
        stream_id=data["stream_id"],
        ttl_ms=data["ttl_ms"],
        grace_ms=data["grace_ms"],
        resume=data["resume"],
        outcome=Status(outcome) if outcome is not None else None,
        progress=Progress(
            data["started_ms"],
            data["next_sequence"],
            data["gops_partition"],
            data["gops_first_offset"],
            data["gops_last_offset"],
        ),
        reason=data["reason"],
        written_ms=data["written_ms"],
    )
