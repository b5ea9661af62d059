"""How a large commit fits etcd's --max-txn-ops and --max-request-bytes: nesting writes, merging absence checks,
splitting reads (no server)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from nbdb.backends.etcd.txnshape import (
    FRAME,
    Nested,
    etcd_count,
    fewest_runs,
    fitting,
    merge_runs,
    nest,
    run_bytes,
    runs_within,
    shape_writes,
    split,
)


def _leaves(items: list[int | Nested[int]]) -> list[int]:
    out: list[int] = []
    for item in items:
        out += _leaves(item.items) if isinstance(item, Nested) else [item]
    return out


def _widest(items: list[int | Nested[int]]) -> int:
    return max([len(items), *(_widest(i.items) for i in items if isinstance(i, Nested))])


def test_etcd_counts_a_nested_transaction_against_what_its_parent_leaves() -> None:
    # checkTxnRequest: own count = longest list; each nested one gets the limit minus the parent's count.
    assert etcd_count(3, [1, 2], 1) == 3
    assert etcd_count(100, [Nested([1] * 28)], 1) == 128
    assert etcd_count(2, [Nested([Nested([1, 2, 3]), 4]), Nested([5])], 0) == 2 + 2 + 3


@given(
    compares=st.integers(0, 140),
    writes=st.integers(0, 3000),
    failure=st.integers(0, 1),
    limit=st.sampled_from([4, 16, 128, 1000]),
)
def test_every_write_lands_once_in_order_and_the_count_is_what_etcd_counts(
    compares: int, writes: int, failure: int, limit: int
) -> None:
    shape = shape_writes(compares, writes, failure, limit)
    laid = nest(list(range(writes)), shape)
    assert _leaves(laid) == list(range(writes))  # each write exactly once, in order
    assert etcd_count(compares, laid, failure) == shape.count
    if shape.depth:
        # Nested only when flat does not fit, and then no nested transaction is wider than the fan-out.
        assert max(compares, writes, failure) > limit
        assert all(_widest(item.items) <= shape.fanout for item in laid if isinstance(item, Nested))
        assert all(isinstance(item, Nested) for item in laid)
    else:
        assert shape.count == max(compares, writes, failure)


@given(compares=st.integers(0, 100), writes=st.integers(0, 50_000))
def test_the_shape_is_no_worse_than_any_single_level_split(compares: int, writes: int) -> None:
    shape = shape_writes(compares, writes, 1, 128)
    if shape.count <= 128 and shape.depth == 0:
        return
    for fanout in range(2, 129):
        single = max(compares, 1, -(-writes // fanout)) + fanout
        assert shape.count <= single


def test_a_hundred_port_create_fits_a_default_server() -> None:
    # 400 writes and the token's; 2 exact checks (the switch exists, the token is new) and 200 absence checks.
    writes, failure = 401, 1
    assert shape_writes(202, writes, failure, 128).count > 128
    room = max(c for c in range(203) if shape_writes(c, writes, failure, 128).count <= 128)
    assert room >= 120
    index = [f"p/i/LogicalSwitchPort/{n:032x}" for n in range(0, 100 * 7919, 7919)]
    unique = [f"p/u/LogicalSwitchPort/name/{n:040x}" for n in range(5, 100 * 104729, 104729)]
    runs = merge_runs(index + unique, room - 2)
    assert 2 + len(runs) <= room


_directories = st.sampled_from(["a/i/T", "a/u/T/name", "a/i/U"])
_keys = st.lists(
    st.builds(lambda d, k: f"{d}/{k}", _directories, st.text("0123456789abcdef", min_size=1, max_size=6)),
    max_size=80,
)


@given(keys=_keys, runs=st.integers(0, 90))
def test_runs_cover_each_key_once_stay_in_one_directory_and_hold_no_stranger(keys: list[str], runs: int) -> None:
    merged = merge_runs(keys, runs)
    ordered = sorted(set(keys))
    assert [k for run in merged for k in run] == ordered  # every key once, in key order
    directories = {k.rpartition("/")[0] for k in ordered}
    # As few runs as asked for, but never fewer than one per directory, nor a run of nothing.
    assert len(merged) == max(min(runs, len(ordered)), len(directories))
    assert fewest_runs(keys) == len(merge_runs(keys, 0)) == len(directories)
    for run in merged:
        assert len({k.rpartition("/")[0] for k in run}) == 1
        # A run's key range [first, last] holds no key of the input outside the run.
        assert [k for k in ordered if run[0] <= k <= run[-1]] == run


def test_runs_join_the_closest_neighbours_first() -> None:
    keys = ["d/00", "d/01", "d/50", "d/90", "d/91"]
    assert merge_runs(keys, 3) == [["d/00", "d/01"], ["d/50"], ["d/90", "d/91"]]
    assert merge_runs(keys, 5) == [[k] for k in keys]


@given(
    sizes=st.lists(st.integers(0, 300), max_size=60),
    count=st.integers(-2, 70),
    budget=st.none() | st.integers(0, 2000),
)
def test_split_keeps_every_item_in_order_within_the_count_and_the_bytes(
    sizes: list[int], count: int, budget: int | None
) -> None:
    """The rule every request built from a caller-sized list follows (reads, prune transactions, registry puts):
    each slice holds at most ``count`` items and ``budget`` bytes (with FRAME each) unless one item alone is
    larger, is as long as both allow, and the slices are the items in order, none dropped or repeated."""
    items = [b"x" * size for size in sizes]
    chunks = [list(chunk) for chunk in split(items, count, budget)]
    assert [item for chunk in chunks for item in chunk] == items
    for i, chunk in enumerate(chunks):
        assert 1 <= len(chunk) <= max(1, count)
        weight = sum(len(item) + FRAME for item in chunk)
        assert budget is None or weight <= budget or len(chunk) == 1
        if i + 1 < len(chunks) and len(chunk) < max(1, count):  # cut by the bytes: the next item did not fit
            assert budget is not None and weight + len(chunks[i + 1][0]) + FRAME > budget
    if items and count >= len(items):  # the first slice is what fitting says one request holds
        assert fitting(items, budget) == len(chunks[0])


@given(
    names=st.lists(st.text("abz09", min_size=1, max_size=40), min_size=1, max_size=40, unique=True),
    most=st.integers(0, 45),
    room=st.integers(0, 3000),
)
def test_runs_within_takes_the_most_runs_that_fit_the_room(names: list[str], most: int, room: int) -> None:
    keys = [f"o/t/T/{name}" for name in names]
    runs = runs_within(keys, most, room)
    assert runs == max(0, most) or runs >= fewest_runs(keys)
    taken = sum(run_bytes(run) for run in merge_runs(keys, runs))
    if runs > fewest_runs(keys):
        assert taken <= room
    if runs < most:  # one more run would not have fitted
        assert sum(run_bytes(run) for run in merge_runs(keys, runs + 1)) > room
