"""Following a topic from a thread: the handler gets batches, errors are survived.

`Follower` hands every record of the partitions it follows to a handler, in batches, from a
`Start` on; signals `caught_up` once the ends it saw at the start are handled; takes
partitions on and off while running (`add`/`remove`); and on any error — of polling or of
the handler — logs it with its name, counts it, waits (`Backoff`: 0.5 s doubling to 30 s,
reset after a healthy spell), rebuilds its consumer and resumes after the last batch the
handler completed. `probe()` says what is wrong for `pipeline.health.Health.watch`; the
metrics `onair_follower_up`, `onair_follower_restarts_total` and
`onair_follower_records_total` carry the follower's name.

The reading itself (positions, end of partition, error events) is `topics.reader`'s. Offsets
are never committed: positions live in memory, and side effects are the handler's business.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from confluent_kafka import Message

from pipeline.metrics import Registry
from topics.reader import BEGINNING, Reader, Start, Track

logger = logging.getLogger(__name__)

Handler = Callable[[list[Message]], None]


@dataclass
class Backoff:
    """Waits between restarts: `initial_s`, times `factor` after each failure up to `max_s`;
    back to `initial_s` after an attempt that stayed healthy for `healthy_s`."""

    initial_s: float = 0.5
    max_s: float = 30.0
    factor: float = 2.0
    healthy_s: float = 30.0
    failures: int = field(default=0, init=False)

    def next_delay(self, healthy_for_s: float) -> float:
        """The wait after an attempt that failed once it had been healthy `healthy_for_s`."""
        if healthy_for_s >= self.healthy_s:
            self.failures = 0
        delay = min(self.max_s, self.initial_s * self.factor**self.failures)
        self.failures += 1
        return delay


class Follower:
    """A thread that hands every record of the followed partitions to `handler`, in batches
    (per partition in offset order), from `start` on, until `stop()`.

    `partitions` None → every partition of the topic; `()` → none until `add()`. A failure
    of polling or of `handler` is logged with the follower's name and counted; the follower
    waits (`Backoff`), rebuilds its consumer and resumes after the last batch `handler`
    completed: a record is handed again only when the batch holding it failed.

    Metrics (labelled `follower=name`): `onair_follower_up` (1 while reading, 0 while down
    or stopped), `onair_follower_restarts_total`, `onair_follower_records_total` (handled)."""

    def __init__(
        self,
        name: str,
        bootstrap: str,
        topic: str,
        handler: Handler,
        *,
        partitions: Iterable[int] | None = None,
        start: Start = BEGINNING,
        registry: Registry | None = None,
        config: Mapping[str, Any] | None = None,
        max_batch: int = 500,
        poll_s: float = 0.2,
        backoff: Backoff | None = None,
    ) -> None:
        self.name = name
        self.bootstrap = bootstrap
        self.topic = topic
        self._handler = handler
        self._start = start
        self._config = dict(config or {})
        self._max_batch = max_batch
        self._poll_s = poll_s
        self._backoff = backoff or Backoff()
        self._lock = threading.Lock()
        self._all = partitions is None
        self._wanted: dict[int, Start] = {p: start for p in partitions or ()}
        self._initial: set[int] | None = None if partitions is None else set(self._wanted)
        self._removals: dict[int, float] = {}  # partition → when to release it (monotonic)
        self._futures: dict[int, list[_AllOf]] = {}
        self._next: dict[int, int] = {}  # handled up to (exclusive)
        self._ends: dict[int, int] = {}  # high watermark when first assigned
        self._assigned: set[int] = set()
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self.caught_up = threading.Event()
        self._thread: threading.Thread | None = None
        self._down_since: float | None = None
        self._fence: dict[int, int] = {}  # read up to there before the last failure
        self.last_error: str | None = None
        self.restarts = 0
        m = registry or Registry()
        labels = (name,)
        self._up = m.gauge(
            "onair_follower_up", "1 while a follower reads, 0 while down or stopped.", ("follower",)
        ).labels(*labels)
        self._restarts = m.counter(
            "onair_follower_restarts_total",
            "Times a follower rebuilt its consumer after an error.",
            ("follower",),
        ).labels(*labels)
        self._records = m.counter(
            "onair_follower_records_total", "Records a follower's handler completed.", ("follower",)
        ).labels(*labels)

    # ---- control (any thread) ----------------------------------------------------------------

    def start(self) -> None:
        """Start the thread; returns at once (see `wait_caught_up`)."""
        if self._thread is not None:
            raise RuntimeError(f"follower {self.name} already started")
        self._up.set(1)
        self._thread = threading.Thread(target=self._run, name=f"follower-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop after the batch in hand; closes the consumer."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                logger.warning("follower %s: not stopped within %.0f s", self.name, timeout_s)
        self._up.set(0)
        with self._lock:
            trackers = [t for waiting in self._futures.values() for t in waiting]
            self._futures.clear()
        for tracker in trackers:
            tracker.cancel()

    def __enter__(self) -> Follower:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def wait_caught_up(self, timeout_s: float) -> bool:
        """True once every partition followed from the start is handled up to the end it
        had when first assigned (partitions added later do not count)."""
        return self.caught_up.wait(timeout_s)

    def add(self, partitions: Iterable[int], start: Start | None = None) -> Future[None]:
        """Follow these partitions too (from `start`, default the follower's), or keep them
        if a delayed `remove()` is pending. → resolved once all are assigned: anything
        written after that reaches the handler."""
        future: Future[None] = Future()
        with self._lock:
            waiting = set()
            for partition in set(partitions):
                self._removals.pop(partition, None)
                self._wanted.setdefault(partition, start or self._start)
                if partition not in self._assigned:
                    waiting.add(partition)
            if waiting:
                tracker = _AllOf(future, waiting)
                for partition in waiting:
                    self._futures.setdefault(partition, []).append(tracker)
        if not waiting:
            future.set_result(None)
        self._wake.set()
        return future

    def remove(self, partitions: Iterable[int], after_s: float = 0.0) -> None:
        """Stop following these partitions (after `after_s` unless `add()`ed again) and
        forget their positions: added again later, they start anew."""
        at = time.monotonic() + after_s
        with self._lock:
            for partition in set(partitions):
                if partition in self._wanted:
                    self._removals[partition] = at
        self._wake.set()

    def assigned(self) -> set[int]:
        """Partitions the consumer reads now."""
        with self._lock:
            return set(self._assigned)

    def positions(self) -> dict[int, int]:
        """Per partition, the offset after the last record the handler completed."""
        with self._lock:
            return dict(self._next)

    def ends(self) -> dict[int, int]:
        """Per partition, its end when first assigned (records below it existed then)."""
        with self._lock:
            return dict(self._ends)

    def probe(self) -> str | None:
        """For `Health.watch`: None while fine (or stopped), else what is wrong."""
        with self._lock:
            down, error, restarts = self._down_since, self.last_error, self.restarts
        if down is None or self._stopping.is_set():
            return None
        return (
            f"restarting for {time.monotonic() - down:.1f} s ({restarts} restarts), "
            f"last error: {error}"
        )

    # ---- the thread --------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            healthy_at: list[float] = []
            try:
                self._session(healthy_at)
            except Exception as exc:
                healthy_for = time.monotonic() - healthy_at[0] if healthy_at else 0.0
                delay = self._backoff.next_delay(healthy_for)
                self._failed(exc, delay)
                self._stopping.wait(delay)
        self._up.set(0)

    def _failed(self, exc: Exception, delay_s: float) -> None:
        with self._lock:
            self.restarts += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            if self._down_since is None:
                self._down_since = time.monotonic()
            self._assigned.clear()
        self._up.set(0)
        self._restarts.inc()
        logger.error(
            "follower %s: %s; restarting in %.1f s (restart %d)",
            self.name, self.last_error, delay_s, self.restarts, exc_info=exc,
        )  # fmt: skip

    def _healthy(self, healthy_at: list[float]) -> None:
        """This session did something well; after a failure that counts as recovered only
        once it has handled past every position read before the failure."""
        with self._lock:
            down = self._down_since
            if down is not None and any(self._next.get(p, n) < n for p, n in self._fence.items()):
                return
            self._down_since = None
            self._fence.clear()
        if not healthy_at:
            healthy_at.append(time.monotonic())
        if down is not None:
            self._up.set(1)
            logger.info(
                "follower %s: reading again after %.1f s", self.name, time.monotonic() - down
            )

    def _session(self, healthy_at: list[float]) -> None:
        """One consumer's life: until stopped (returns) or an error (raises)."""
        reader = Reader(self.bootstrap, self.topic, config=self._config, max_batch=self._max_batch)
        try:
            self._follow(reader, healthy_at)
        except Exception:
            with self._lock:  # where it had read to: recovered once handled past there
                for partition, position in reader.cursor.next.items():
                    if partition in self._next:
                        fence = max(self._fence.get(partition, 0), position)
                        self._fence[partition] = fence
            raise
        finally:
            reader.close()

    def _follow(self, reader: Reader, healthy_at: list[float]) -> None:
        if self._all:
            every = reader.partitions()
            with self._lock:
                for partition in every:
                    self._wanted.setdefault(partition, self._start)
                self._initial = set(every)
                self._all = False
        while not self._stopping.is_set():
            self._sync(reader)
            if not reader.assigned:
                self._healthy(healthy_at)
                self._wake.wait(self._poll_s)
                self._wake.clear()
                continue
            batch = reader.poll(self._poll_s)
            if batch is not None and batch.messages:
                self._handler(batch.messages)
                self._records.inc(len(batch.messages))
            if batch is not None:
                self._advance(batch.positions)
            if (batch is not None and batch.messages) or reader.idle:
                self._healthy(healthy_at)

    def _sync(self, reader: Reader) -> None:
        """Apply `add()`/`remove()` to the consumer."""
        now = time.monotonic()
        dropped: list[_AllOf] = []  # add() futures of partitions removed before assigned
        with self._lock:
            for partition, at in list(self._removals.items()):
                if at <= now:
                    del self._removals[partition]
                    del self._wanted[partition]
                    self._next.pop(partition, None)
                    self._ends.pop(partition, None)
                    self._fence.pop(partition, None)
                    dropped.extend(self._futures.pop(partition, []))
            gone = reader.assigned - self._wanted.keys()
            new = {p: s for p, s in self._wanted.items() if p not in reader.assigned}
            known = {p: Track(self._next[p], self._ends[p]) for p in new if p in self._next}
        for tracker in dropped:
            tracker.cancel()
        if gone:
            reader.release(gone)
            logger.info("follower %s: released %s[%s]", self.name, self.topic, sorted(gone))
        if new:
            by_start: dict[Start, list[int]] = {}
            for partition, where in new.items():
                if partition not in known:
                    by_start.setdefault(where, []).append(partition)
            tracks = dict(known)
            for where, chosen in by_start.items():
                tracks.update(reader.locate(chosen, where))
            with self._lock:
                for partition, track in tracks.items():
                    self._next.setdefault(partition, track.next)
                    self._ends.setdefault(partition, track.end)
                tracks = {p: Track(self._next[p], self._ends[p]) for p in tracks}
            reader.assign(tracks)
            logger.info(
                "follower %s: reading %s from %s",
                self.name, self.topic, {p: t.next for p, t in sorted(tracks.items())},
            )  # fmt: skip
        if gone or new:
            with self._lock:
                self._assigned = reader.assigned
                ready = [(p, t) for p in self._assigned for t in self._futures.pop(p, [])]
            for partition, tracker in ready:
                tracker.resolve(partition)
        self._check_caught_up()

    def _advance(self, positions: Mapping[int, int]) -> None:
        with self._lock:
            for partition, position in positions.items():
                if partition in self._next:
                    self._next[partition] = max(self._next[partition], position)
        self._check_caught_up()

    def _check_caught_up(self) -> None:
        if self.caught_up.is_set():
            return
        with self._lock:
            if self._initial is None:
                return
            behind = [
                p
                for p in self._initial
                if p in self._wanted and self._next.get(p, -1) < self._ends.get(p, 0)
            ]
        if not behind:
            self.caught_up.set()
            logger.info("follower %s: caught up with %s", self.name, self.topic)


class _AllOf:
    """Resolves `future` once every one of `partitions` is assigned."""

    def __init__(self, future: Future[None], partitions: set[int]) -> None:
        self._future = future
        self._left = set(partitions)
        self._lock = threading.Lock()

    def resolve(self, partition: int) -> None:
        with self._lock:
            self._left.discard(partition)
            finished = not self._left
        if finished and self._future.set_running_or_notify_cancel():
            self._future.set_result(None)

    def cancel(self) -> None:
        self._future.cancel()
