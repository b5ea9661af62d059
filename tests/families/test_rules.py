"""The commit rules every family shares, and the lease-lock loop (no server)."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nbdb
from nbdb import errors
from nbdb.families import rules
from nbdb.families.lease import hold_lease
from nbdb.pool import SharedResources
from nbdb.spi import Delete, Put, RefKey

pytestmark = pytest.mark.timeout(30)


def key(n: int, table: str = "T") -> RefKey:
    return (table, uuid.UUID(int=n))


def put(me: RefKey, refs: set[RefKey], version: int = 0) -> Put:
    return Put(me[0], me[1], None, b"{}", version, refs=frozenset(refs))


def test_an_object_twice_in_one_transaction_is_refused() -> None:
    with pytest.raises(nbdb.ValidationError, match="appears twice"):
        rules.shape_of([put(key(1), set()), Delete("T", key(1)[1], None)])


def test_shape_names_what_is_created_and_deleted() -> None:
    shape = rules.shape_of([put(key(1), set()), put(key(2), set(), version=3), Delete("T", key(3)[1], None)])
    assert shape.created == {key(1)} and shape.deleted == {key(3)}
    assert shape.keys == (key(1), key(2), key(3))


def test_a_new_reference_to_an_object_deleted_alongside_is_refused() -> None:
    ops = [put(key(1), {key(2)}), Delete("T", key(2)[1], None)]
    with pytest.raises(nbdb.ReferenceError, match="deleted in the same transaction"):
        rules.ref_changes(ops, {}, rules.shape_of(ops))


def test_errors_read_the_same_on_every_backend() -> None:
    assert "use cascade" not in str(rules.dangling(key(1), key(2)))
    message = str(rules.still_referenced(key(9), [key(i) for i in range(7)]))
    assert message.endswith("and 2 more; delete those first or pass cascade=True")
    assert isinstance(rules.stale(key(1), 3, 2), nbdb.ConflictError)
    assert isinstance(rules.topic_changed(key(1), "a", "b"), nbdb.ValidationError)


@given(st.lists(st.integers(0, 20), unique=True, max_size=8), st.data())
def test_a_refusals_unseen_referrers_are_sorted_and_named_in_its_message(ids: list[int], data: st.DataObject) -> None:
    # ReferenceError.unseen (the referrers the Database cannot read: OVSDB's rows of another namespace or
    # client) came in the order the server's rows did, where ``referrers`` is sorted, and str() did not say
    # which they were.
    referrers = sorted((key(i) for i in ids), key=str)
    unseen = data.draw(st.permutations([k for k in referrers if data.draw(st.booleans())]))
    refused = rules.still_referenced(key(99), referrers, every=True, unseen=unseen)
    assert refused.unseen == tuple(sorted(unseen, key=str))
    shown = sorted(unseen, key=str)[:5]
    assert ("cannot read" in str(refused)) == bool(unseen)
    assert all(f"{k[0]} {k[1]}" in str(refused).split("(", 1)[-1] for k in shown)
    assert rules.still_referenced(key(99), referrers, unseen=unseen).unseen == ()


@given(st.lists(st.integers(0, 20), unique=True, max_size=8), st.data())
def test_a_refusals_undroppable_referrers_are_named_apart_from_those_it_cannot_read(
    ids: list[int], data: st.DataObject
) -> None:
    # ReferenceError.undroppable (OVSDB's second parents: no plan drops them, whether the Database reads them or
    # not) were put in ``unseen`` and named as rows the Database "cannot read"; each is named for what it is.
    referrers = sorted((key(i) for i in ids), key=str)
    unseen = [k for k in referrers if data.draw(st.booleans())]
    fixed = data.draw(st.permutations([k for k in referrers if data.draw(st.booleans())]))
    refused = rules.still_referenced(key(99), referrers, every=True, unseen=unseen, undroppable=fixed)
    assert refused.unseen == tuple(unseen) and refused.undroppable == tuple(sorted(fixed, key=str))
    assert ("cannot read" in str(refused)) == bool(unseen)
    assert ("cannot be dropped by any plan" in str(refused)) == bool(fixed)
    assert rules.still_referenced(key(99), referrers, undroppable=fixed).undroppable == ()


refs_strategy = st.sets(st.integers(0, 6).map(key), max_size=4)


@given(old=st.dictionaries(st.integers(10, 14).map(key), refs_strategy, max_size=5), new=st.data())
def test_reference_changes_add_up_to_the_new_state(old: dict[RefKey, set[RefKey]], new: st.DataObject) -> None:
    """For every written object: stored refs - dropped + added == refs after the transaction."""
    ops: list[Put | Delete] = []
    for source, _refs in old.items():
        if new.draw(st.booleans()):
            ops.append(Delete(source[0], source[1], None))
        else:
            ops.append(put(source, new.draw(refs_strategy), version=1))
    shape = rules.shape_of(ops)
    changes = rules.ref_changes(ops, {k: frozenset(v) for k, v in old.items()}, shape)
    for op in ops:
        me = (op.table, op.id)
        after = set(old[me])
        after -= {t for t, sources in changes.dropped.items() if me in sources}
        after |= {t for t, sources in changes.added.items() if me in sources}
        assert after == set(changes.new_refs[me])
        assert after == (set(op.refs) if isinstance(op, Put) else set())


def test_remaining_referrers_skip_those_the_transaction_detaches() -> None:
    target = key(1)
    ops = [put(key(2), set(), version=1), Delete("T", key(3)[1], None)]
    changes = rules.ref_changes(ops, {key(2): frozenset({target}), key(3): frozenset({target})}, rules.shape_of(ops))
    assert rules.remaining_referrers(target, [key(2), key(3), key(4)], changes) == [key(4)]


class Leases:
    """An in-process lease table, with renewal failures on demand."""

    def __init__(self) -> None:
        self.held: dict[str, tuple[bytes, float]] = {}
        self.fail_renewals = 0
        self.lock = threading.Lock()

    def acquire_lease(self, name: str, token: bytes, ttl: float) -> bool:
        with self.lock:
            held = self.held.get(name)
            if held and held[1] > time.monotonic() and held[0] != token:
                return False
            self.held[name] = (token, time.monotonic() + ttl)
            return True

    def renew_lease(self, name: str, token: bytes, ttl: float) -> bool:
        if self.fail_renewals:
            self.fail_renewals -= 1
            raise nbdb.BackendUnavailableError("injected renewal failure")
        with self.lock:
            held = self.held.get(name)
            if not held or held[0] != token or held[1] <= time.monotonic():
                return False
            self.held[name] = (token, time.monotonic() + ttl)
            return True

    def release_lease(self, name: str, token: bytes) -> None:
        with self.lock:
            if self.held.get(name, (b"",))[0] == token:
                del self.held[name]


def test_lease_lock_excludes_renews_and_releases() -> None:
    store = Leases()
    with hold_lease(store, "a", 0.3, None) as handle:
        with pytest.raises(nbdb.LockTimeoutError):
            with hold_lease(store, "a", 0.3, 0.2):
                pass
        time.sleep(0.7)  # longer than the TTL: only renewals keep it
        assert not handle.lost and "a" in store.held
    assert "a" not in store.held


def test_one_failed_renewal_does_not_lose_the_lock() -> None:
    store = Leases()
    with hold_lease(store, "a", 0.6, None) as handle:
        store.fail_renewals = 1
        time.sleep(1.0)
        assert not handle.lost


def test_renewals_failing_until_the_lease_may_have_expired_lose_it() -> None:
    store = Leases()
    with hold_lease(store, "a", 0.3, None) as handle:
        store.fail_renewals = 1000
        deadline = time.monotonic() + 3
        while not handle.lost and time.monotonic() < deadline:
            time.sleep(0.02)
        assert handle.lost


def test_a_lease_taken_by_another_owner_is_lost_at_once() -> None:
    store = Leases()
    with hold_lease(store, "a", 0.3, None) as handle:
        with store.lock:
            store.held["a"] = (b"someone else", time.monotonic() + 60)
        deadline = time.monotonic() + 3
        while not handle.lost and time.monotonic() < deadline:
            time.sleep(0.02)
        assert handle.lost
    assert store.held["a"][0] == b"someone else"  # a lost lock is not released


def test_shared_resources_open_once_and_close_with_the_last_user() -> None:
    closed: list[str] = []
    registry: SharedResources[str, str] = SharedResources("test", closed.append)
    opened: list[str] = []

    def open_it() -> str:
        opened.append("x")
        return "resource"

    first, second = registry.acquire("k", open_it), registry.acquire("k", open_it)
    assert first.value is second.value and opened == ["x"] and registry.users("k") == 2
    first.release()
    first.release()  # a second release of one lease does nothing
    assert closed == [] and registry.users("k") == 1
    second.release()
    assert closed == ["resource"] and registry.users("k") == 0
    registry.acquire("k", open_it).release()
    assert opened == ["x", "x"]


@settings(max_examples=200, deadline=None)
@given(
    value=st.integers()
    | st.integers().map(str)
    | st.integers().map(lambda n: str(n).encode())
    | st.none()
    | st.booleans()
    | st.floats()
    | st.text(max_size=4)
    | st.binary(max_size=4),
    last=st.none() | st.just(2**63 - 1),
    text=st.booleans(),
)
def test_a_counter_holds_a_whole_number_from_0_or_it_is_a_corrupt_record(
    value: object, last: int | None, text: bool
) -> None:
    """The one test of what a stored id counter holds, before it moves (every family but Redis's script).

    Text is a number only on a store that keeps the counter as text: on one that keeps a number (Hazelcast),
    ``"7"`` passed as 7, and the compare-and-swap of 7 against the stored ``"7"`` failed for ever."""
    try:
        number: object = int(value) if text and isinstance(value, str | bytes) else value  # type: ignore[arg-type]
    except ValueError:
        number = None
    valid = type(number) is int and number >= 0 and (last is None or number < last)
    if valid:
        assert rules.counter_value(value, "c", "n/c", last, text=text) == number
    else:
        with pytest.raises(errors.CorruptRecordError, match="counter 'c'") as raised:
            rules.counter_value(value, "c", "n/c", last, text=text)
        assert raised.value.key == "n/c"
