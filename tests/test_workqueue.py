"""The work queue's rules, without a server: coalescing, one worker per key, backoff, rate limit, delays."""

from __future__ import annotations

import itertools
import threading
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import nbdb
from nbdb.workqueue import RateLimiter, WorkQueue

pytestmark = pytest.mark.timeout(60)


class FakeClock:
    """Monotonic seconds that move only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _queue(clock: FakeClock, **limiter: float) -> WorkQueue[str]:
    return WorkQueue("test", RateLimiter(clock=clock, **limiter), clock=clock)  # type: ignore[arg-type]


def test_a_key_added_many_times_while_waiting_is_handed_out_once() -> None:
    q: WorkQueue[str] = WorkQueue()
    for _ in range(5):
        q.add("a")
    q.add("b")
    q.add("a")
    assert len(q) == 2
    assert [q.get(0), q.get(0), q.get(0)] == ["a", "b", None]


def test_a_key_added_while_processing_waits_for_its_worker() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    assert q.get(0) == "a"
    q.add("a")
    q.add("a")
    assert q.get(0) is None, "never handed to a second worker while the first has it"
    q.done("a")
    assert q.get(0) == "a", "queued again once released: the change is not lost"
    q.done("a")
    assert q.get(0) is None


def test_releasing_a_key_twice_is_an_error() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    q.done(q.get(0))  # type: ignore[arg-type]
    with pytest.raises(nbdb.ValidationError):
        q.done("a")


def test_retry_backs_off_exponentially_per_key_and_done_forgets() -> None:
    clock = FakeClock()
    q = _queue(clock, base=0.01, max_delay=0.1, rate=1e6, burst=1000)
    delays = []
    q.add("a")
    for _ in range(6):
        key = q.get(0)
        assert key == "a"
        delays.append(q.retry(key))
        assert q.get(0) is None, "not before its backoff"
        clock.now += delays[-1]
    assert delays == pytest.approx([0.01, 0.02, 0.04, 0.08, 0.1, 0.1])
    assert q.failures("a") == 6
    q.done(q.get(0))  # type: ignore[arg-type]
    assert q.failures("a") == 0
    q.add("a")
    assert q.retry(q.get(0)) == pytest.approx(0.01)  # type: ignore[arg-type]


def test_backoff_is_per_key() -> None:
    clock = FakeClock()
    q = _queue(clock, base=0.01, max_delay=10, rate=1e6, burst=1000)
    q.add("a")
    for _ in range(3):
        q.retry(q.get(0))  # type: ignore[arg-type]
        clock.now += 1
    q.add("b")
    assert q.get(0) in {"a", "b"}


def test_overall_rate_limit_spaces_retries_of_many_keys() -> None:
    clock = FakeClock()
    limiter: RateLimiter[str] = RateLimiter(base=0.001, max_delay=1, rate=10, burst=2, clock=clock)
    delays = [limiter.when(f"k{i}") for i in range(6)]
    # Two go through at once (the burst), then one every 1/rate seconds.
    assert delays == pytest.approx([0.001, 0.001, 0.1, 0.2, 0.3, 0.4])
    clock.now += 10  # the bucket refills, up to the burst
    assert limiter.when("later") == pytest.approx(0.001)


def test_a_key_added_during_a_failed_attempt_is_tried_again_at_once() -> None:
    clock = FakeClock()
    q = _queue(clock, base=5, max_delay=5)
    q.add("a")
    key = q.get(0)
    q.add("a")  # new information arrived while it was failing
    q.retry(key)  # type: ignore[arg-type]
    assert q.get(0) == "a"


def test_add_after_keeps_the_earliest_time() -> None:
    clock = FakeClock()
    q = _queue(clock)
    q.add_after("a", 10)
    q.add_after("a", 2)
    q.add_after("a", 5)
    clock.now += 2
    assert q.get(0) == "a"
    q.done("a")
    clock.now += 10
    assert q.get(0) is None, "the later times were merged into the earlier one"
    q.add_after("b", 0)
    assert q.get(0) == "b"


def test_get_wakes_for_a_delay_that_passes() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add_after("a", 0.05)
    assert q.waiting == 1
    assert q.get(5) == "a"


def test_close_lets_workers_drain_then_stop() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    q.add_after("late", 0.01)
    got: list[str | None] = []
    blocked = threading.Thread(target=lambda: got.append(q.get()))
    q.close()
    q.add("ignored")
    assert list(q) == ["a"]
    blocked.start()
    blocked.join(5)
    assert got == [None]
    q.done("a")


def test_concurrent_producers_coalesce_and_no_key_is_processed_twice_at_once() -> None:
    q: WorkQueue[int] = WorkQueue()
    keys = 20
    lock = threading.Lock()
    busy: set[int] = set()
    overlaps: list[int] = []
    processed: Counter[int] = Counter()
    last_add = {k: 0 for k in range(keys)}  # producer sequence of the last add of each key
    seen_after = {k: 0 for k in range(keys)}  # producer sequence seen when a worker last took the key
    seq = [0]
    go = threading.Barrier(5)  # four producers and this thread

    def produce() -> None:
        go.wait()
        for i in range(2000):
            k = i % keys
            with lock:
                seq[0] += 1
                last_add[k] = seq[0]
            q.add(k)

    def work() -> None:
        for key in q:
            with lock:
                if key in busy:
                    overlaps.append(key)
                busy.add(key)
                seen_after[key] = seq[0]
            processed[key] += 1
            with lock:
                busy.discard(key)
            q.done(key)

    producers = [threading.Thread(target=produce) for _ in range(4)]
    workers = [threading.Thread(target=work) for _ in range(4)]
    for t in producers + workers:
        t.start()
    go.wait()
    for t in producers:
        t.join(30)
    assert q.wait_idle(30)
    q.close()
    for t in workers:
        t.join(30)
    assert overlaps == []
    assert sum(processed.values()) < 4 * 2000, "adds were coalesced"
    assert all(seen_after[k] >= last_add[k] for k in range(keys)), "every key was processed after its last add"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from("abcd"), max_size=30))
def test_each_distinct_waiting_key_is_handed_out_once_in_first_add_order(adds: list[str]) -> None:
    q: WorkQueue[str] = WorkQueue()
    for key in adds:
        q.add(key)
    out = []
    while (key := q.get(0)) is not None:
        out.append(key)
    assert out == list(dict.fromkeys(adds))


@settings(max_examples=200, deadline=None)
@given(
    base=st.floats(0.001, 1),
    cap=st.floats(1, 100),
    failures=st.integers(1, 80),
)
def test_backoff_grows_monotonically_and_never_exceeds_its_cap(base: float, cap: float, failures: int) -> None:
    clock = FakeClock()
    limiter: RateLimiter[str] = RateLimiter(base=base, max_delay=cap, rate=1e9, burst=10**6, clock=clock)
    delays = [limiter.when("k") for _ in range(failures)]
    assert delays[0] == pytest.approx(base)
    assert all(a <= b for a, b in itertools.pairwise(delays))
    assert max(delays) <= cap


class QueueMachine(RuleBasedStateMachine):
    """Random adds, takes, releases and retries by several workers against the rules."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.q = _queue(self.clock, base=0.5, max_delay=4, rate=1e6, burst=10**6)
        self.held: dict[int, set[str]] = {w: set() for w in range(3)}
        self.owed: set[str] = set()  # keys added since they were last taken: must be handed out again

    @rule(key=st.sampled_from("abcde"))
    def add(self, key: str) -> None:
        self.q.add(key)
        self.owed.add(key)

    @rule(worker=st.integers(0, 2))
    def take(self, worker: int) -> None:
        key = self.q.get(0)
        if key is not None:
            assert all(key not in keys for keys in self.held.values()), "handed to two workers at once"
            self.held[worker].add(key)
            self.owed.discard(key)

    @precondition(lambda self: any(self.held.values()))
    @rule(worker=st.integers(0, 2), fail=st.booleans())
    def release(self, worker: int, fail: bool) -> None:
        if not self.held[worker]:
            return
        key = sorted(self.held[worker])[0]
        self.held[worker].discard(key)
        if fail:
            self.q.retry(key)
            self.owed.add(key)
        else:
            self.q.done(key)

    @rule(seconds=st.floats(0, 5))
    def time_passes(self, seconds: float) -> None:
        self.clock.now += seconds

    @invariant()
    def nothing_is_lost(self) -> None:
        for key in self.owed:
            held = any(key in keys for keys in self.held.values())
            assert held or self.q.is_pending(key), f"{key} was added but is neither held nor pending"


QueueMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
test_queue_rules_hold_for_random_schedules = QueueMachine.TestCase


def test_one_limiter_shared_by_threads_counts_every_retry() -> None:
    # Two controllers may share one RateLimiter, each queue calling it under its own lock: the bucket's
    # read-modify-write lost about half the retries of 8 threads, so the overall rate let more through.
    import sys
    import threading

    limiter: RateLimiter[tuple[int, int]] = RateLimiter(base=1e-6, max_delay=1, rate=1.0, burst=10, clock=lambda: 0.0)
    threads, each = 8, 10_000
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as CPython will, to meet the race if there is one
    try:
        workers = [threading.Thread(target=lambda t=t: [limiter.when((t, i)) for i in range(each)]) for t in range(8)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
    finally:
        sys.setswitchinterval(interval)
    # With the clock still, every retry past the burst owes a token: the next one waits for all of them.
    assert limiter.when((-1, -1)) == threads * each + 1 - 10
    assert all(limiter.failures((t, i)) == 1 for t in range(threads) for i in (0, each - 1))
