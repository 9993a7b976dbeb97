"""The lease log's rules (gateway/ingest/lease.py): claims, renewals, releases and ends folded
in log order at their append times give one owner per channel."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from gateway.ingest.lease import (
    Kind,
    Lease,
    LeaseRecord,
    LeaseTimings,
    Phase,
    Progress,
    Status,
    apply,
    from_avro,
    to_avro,
)
from schemas.codec import Codec

TTL, GRACE = 10_000, 5_000  # a lease lapses at +10 s, its stream stays resumable 5 s more
S1, S2 = "demo-1", "demo-2"


def claim(holder: str, lease_id: str, stream: str = S1, *, resume: bool = False) -> LeaseRecord:
    return LeaseRecord("demo", Kind.CLAIM, lease_id, holder, stream, TTL, GRACE, resume=resume)


def renew(holder: str, lease_id: str, stream: str = S1, sequence: int = 0) -> LeaseRecord:
    progress = Progress(next_sequence=sequence)
    return LeaseRecord("demo", Kind.RENEW, lease_id, holder, stream, TTL, GRACE, progress=progress)


def release(holder: str, lease_id: str, outcome: Status, stream: str = S1) -> LeaseRecord:
    return LeaseRecord("demo", Kind.RELEASE, lease_id, holder, stream, TTL, GRACE, outcome=outcome)


def end(holder: str, lease_id: str, stream: str = S1) -> LeaseRecord:
    return LeaseRecord("demo", Kind.END, lease_id, holder, stream, TTL, GRACE)


INT, ENDED = Status.INTERRUPTED, Status.ENDED


@dataclass(frozen=True)
class Case:
    name: str
    steps: list[tuple[LeaseRecord, int, bool]]  # record, its append time, whether it takes
    status: Status | None  # of the lease after the last step
    holder: str = ""
    phase_at: tuple[int, Phase] | None = None


CASES = [
    Case("a first claim wins a free channel", [(claim("a", "L1"), 0, True)], Status.HELD, "a"),
    Case(
        "a second publisher's claim loses while the lease is live",
        [(claim("a", "L1"), 0, True), (claim("b", "L2", S2), 9_999, False)],
        Status.HELD,
        "a",
    ),
    Case(
        "two claims at once: the one appended first wins",
        [(claim("b", "L2", S2), 0, True), (claim("a", "L1"), 0, False)],
        Status.HELD,
        "b",
    ),
    Case(
        "renewals keep the lease live past its first TTL",
        [
            (claim("a", "L1"), 0, True),
            (renew("a", "L1"), 8_000, True),
            (claim("b", "L2", S2), 17_999, False),
        ],
        Status.HELD,
        "a",
        (17_999, Phase.LIVE),
    ),
    Case(
        "a renewal after expiry revives nothing",
        [(claim("a", "L1"), 0, True), (renew("a", "L1"), 10_000, False)],
        Status.HELD,
        "a",
        (10_000, Phase.RESUMABLE),
    ),
    Case(
        "lapsed: a new stream's claim loses during the grace",
        [(claim("a", "L1"), 0, True), (claim("b", "L2", S2), 12_000, False)],
        Status.HELD,
        "a",
    ),
    Case(
        "lapsed: resuming the stream within the grace wins (handoff)",
        [(claim("a", "L1"), 0, True), (claim("b", "L2", resume=True), 14_999, True)],
        Status.HELD,
        "b",
        (14_999, Phase.LIVE),
    ),
    Case(
        "lapsed past the grace: a resume loses, the first END wins, the next loses",
        [
            (claim("a", "L1"), 0, True),
            (claim("b", "L2", resume=True), 15_000, False),
            (end("b", "E1"), 15_000, True),
            (end("c", "E2"), 15_001, False),
        ],
        Status.ENDING,
        "b",
    ),
    Case(
        "an END before expiry + grace loses",
        [(claim("a", "L1"), 0, True), (end("b", "E1"), 14_999, False)],
        Status.HELD,
        "a",
    ),
    Case(
        "an END of another stream loses",
        [(claim("a", "L1"), 0, True), (end("b", "E1", S2), 20_000, False)],
        Status.HELD,
        "a",
    ),
    Case(
        "interrupted, then resumed on another ingest within the grace",
        [
            (claim("a", "L1"), 0, True),
            (release("a", "L1", INT), 3_000, True),
            (claim("b", "L2", resume=True), 7_999, True),
        ],
        Status.HELD,
        "b",
    ),
    Case(
        "interrupted past the grace: a resume loses, an END wins",
        [
            (claim("a", "L1"), 0, True),
            (release("a", "L1", INT), 3_000, True),
            (claim("b", "L2", resume=True), 8_000, False),
            (end("b", "E1"), 8_000, True),
        ],
        Status.ENDING,
        "b",
    ),
    Case(
        "the ender releases ENDED: the channel is free for a new stream",
        [
            (claim("a", "L1"), 0, True),
            (end("b", "E1"), 15_000, True),
            (release("b", "E1", ENDED), 16_000, True),
            (claim("c", "L3", S2), 16_001, True),
        ],
        Status.HELD,
        "c",
    ),
    Case(
        "an ended stream cannot be resumed",
        [
            (claim("a", "L1"), 0, True),
            (release("a", "L1", ENDED), 1_000, True),
            (claim("b", "L2", resume=True), 1_001, False),
        ],
        Status.ENDED,
        "a",
        (1_001, Phase.FREE),
    ),
    Case(
        "an ender that goes quiet: another END wins after its TTL, its late release is ignored",
        [
            (claim("a", "L1"), 0, True),
            (end("b", "E1"), 15_000, True),
            (end("c", "E2"), 24_999, False),
            (end("c", "E2"), 25_000, True),
            (release("b", "E1", ENDED), 25_001, False),
        ],
        Status.ENDING,
        "c",
    ),
    Case(
        "the holder takes its own live lease back (its fenced publish reconnected)",
        [
            (claim("a", "L1"), 0, True),
            (claim("a", "L2", resume=True), 3_000, True),
            (renew("a", "L1"), 3_001, False),
            (renew("a", "L2"), 3_002, True),
        ],
        Status.HELD,
        "a",
    ),
    Case(
        "another ingest cannot resume a live stream",
        [(claim("a", "L1"), 0, True), (claim("b", "L2", resume=True), 3_000, False)],
        Status.HELD,
        "a",
    ),
    Case(
        "a superseded lease's renewal and release are ignored",
        [
            (claim("a", "L1"), 0, True),
            (claim("b", "L2", resume=True), 12_000, True),
            (renew("a", "L1"), 12_001, False),
            (release("a", "L1", INT), 12_002, False),
        ],
        Status.HELD,
        "b",
    ),
    Case(
        "a release after the lease lapsed is ignored (it counts as interrupted at expiry)",
        [(claim("a", "L1"), 0, True), (release("a", "L1", INT), 10_000, False)],
        Status.HELD,
        "a",
        (14_999, Phase.RESUMABLE),
    ),
    Case(
        "a renewal after a release does not make the lease live again",
        [
            (claim("a", "L1"), 0, True),
            (release("a", "L1", INT), 1_000, True),
            (renew("a", "L1"), 1_001, False),
        ],
        Status.INTERRUPTED,
        "a",
        (5_999, Phase.RESUMABLE),
    ),
    Case(
        "nothing happens to an unknown lease's renewal",
        [(renew("a", "L1"), 0, False)],
        None,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_log_decides(case: Case) -> None:
    lease: Lease | None = None
    for index, (record, at_ms, takes) in enumerate(case.steps):
        lease, took = apply(lease, record, at_ms)
        assert took is takes, f"step {index}: {record.kind.value} by {record.holder} at {at_ms}"
    if case.status is None:
        assert lease is None
        return
    assert lease is not None
    assert (lease.status, lease.holder) == (case.status, case.holder)
    if case.phase_at is not None:
        at_ms, phase = case.phase_at
        assert lease.phase(at_ms) is phase


@pytest.mark.parametrize(
    ("steps", "at_ms", "phase"),
    [
        ([], 0, Phase.FREE),
        ([(claim("a", "L1"), 0)], 9_999, Phase.LIVE),
        ([(claim("a", "L1"), 0)], 10_000, Phase.RESUMABLE),
        ([(claim("a", "L1"), 0)], 15_000, Phase.UNENDED),
        ([(claim("a", "L1"), 0), (release("a", "L1", INT), 1_000)], 5_999, Phase.RESUMABLE),
        ([(claim("a", "L1"), 0), (release("a", "L1", INT), 1_000)], 6_000, Phase.UNENDED),
        ([(claim("a", "L1"), 0), (end("b", "E1"), 15_000)], 24_999, Phase.ENDING),
        ([(claim("a", "L1"), 0), (end("b", "E1"), 15_000)], 25_000, Phase.UNENDED),
    ],
    ids=[
        "no lease: free",
        "held: live until the TTL",
        "lapsed: resumable",
        "lapsed past the grace: unended",
        "interrupted: resumable",
        "interrupted past the grace: unended",
        "ending: until the END's TTL",
        "an ender gone quiet: unended",
    ],
)
def test_phases(steps: list[tuple[LeaseRecord, int]], at_ms: int, phase: Phase) -> None:
    lease: Lease | None = None
    for record, append_ms in steps:
        lease, _ = apply(lease, record, append_ms)
    assert (lease.phase(at_ms) if lease is not None else Phase.FREE) is phase


def test_a_resume_keeps_the_progress_the_holder_last_reported() -> None:
    lease, _ = apply(None, claim("a", "L1"), 0)
    lease, _ = apply(lease, renew("a", "L1", sequence=7), 2_000)
    lease, took = apply(lease, claim("b", "L2", resume=True), 13_000)
    assert took and lease is not None
    assert (lease.holder, lease.progress.next_sequence) == ("b", 7)


def test_a_release_carries_the_grace_and_reason_an_ender_uses() -> None:
    lease, _ = apply(None, claim("a", "L1"), 0)
    record = LeaseRecord(
        "demo", Kind.RELEASE, "L1", "a", S1, TTL, 2_000, outcome=INT, reason="went away"
    )
    lease, _ = apply(lease, record, 1_000)
    assert lease is not None
    assert (lease.resumable_until_ms, lease.reason) == (3_000, "went away")


@pytest.mark.parametrize("ttl_s", [2.0, 6.0, 30.0, 600.0], ids=str)
def test_the_holder_stops_before_the_lease_expires_with_room_for_its_last_delivery(
    ttl_s: float,
) -> None:
    timings = LeaseTimings(ttl_s, ttl_s / 3)
    assert timings.fence_after_s + timings.delivery_timeout_s + timings.slack_s == ttl_s
    assert 0 < timings.delivery_timeout_s < ttl_s - timings.fence_after_s
    assert timings.slack_s >= 0.5
    assert timings.tick_s <= timings.renew_s / 2


def test_records_round_trip_through_avro() -> None:
    codec = Codec()
    record = LeaseRecord(
        "demo",
        Kind.RELEASE,
        "L1",
        "a",
        S1,
        TTL,
        GRACE,
        resume=True,
        outcome=ENDED,
        progress=Progress(1, 2, 3, 4, 5),
        reason="r",
        written_ms=9,
    )
    name, data = codec.decode(codec.encode("IngestLease", to_avro(record)))
    assert name == "IngestLease"
    assert from_avro(data) == record
