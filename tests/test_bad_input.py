"""Bad input through the public API is a typed nbdb error on the embedded backends, never a crash.

What a controller author gets wrong — a topic passed as a string, a ttl of infinity, a lock name
that is a number, a Database used after close — must be refused with a clear error from
``nbdb.errors`` before anything is written or a background thread dies of it.
"""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nbdb
from nbdb.models import LogicalSwitch, LogicalSwitchPort

pytestmark = pytest.mark.timeout(120)

EMBEDDED = ["memory://", "sqlite://"]


@pytest.fixture(params=EMBEDDED)
def db(request: pytest.FixtureRequest) -> Iterator[nbdb.Database]:
    with nbdb.connect(request.param) as database:
        yield database


def _typed(call: Callable[[], Any], *types: type[nbdb.NbdbError]) -> nbdb.NbdbError:
    """The nbdb error ``call`` raised; anything else (a TypeError, an OverflowError) fails the test."""
    try:
        call()
    except nbdb.NbdbError as exc:
        assert isinstance(exc, types or (nbdb.ValidationError,)), repr(exc)
        return exc
    pytest.fail(f"accepted: {call}")


def _enter(manager: Any) -> Any:
    with manager as handle:
        return handle


NOT_TEXT = st.one_of(st.integers(), st.floats(), st.binary(), st.lists(st.integers(), max_size=2), st.none())
NOT_SECONDS = st.one_of(
    st.sampled_from([math.inf, -math.inf, math.nan, 1e300, -1.0, True, "5", b"5", [1]]),
    st.floats(max_value=0),
)
NOT_TOPICS = st.one_of(
    st.text(min_size=1, max_size=5),
    st.integers(),
    st.lists(st.one_of(st.integers(), st.binary(), st.floats()), min_size=1, max_size=3),
)
PER_EXAMPLE = settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])


@PER_EXAMPLE
@given(name=st.one_of(NOT_TEXT, st.just(""), st.just("a/b"), st.just("lock\ud800")))
def test_lock_and_counter_names_that_are_not_names_are_refused(db: nbdb.Database, name: Any) -> None:
    _typed(lambda: _enter(db.lock(name, timeout=1)))
    _typed(lambda: db.allocate_id(name))


@PER_EXAMPLE
@given(seconds=NOT_SECONDS)
def test_a_ttl_that_no_timer_can_wait_is_refused_before_a_lock_is_taken(db: nbdb.Database, seconds: Any) -> None:
    # ttl=inf was taken, and the lock's renewal thread died of an OverflowError with the lock reported held.
    _typed(lambda: _enter(db.lock("held", ttl=seconds, timeout=1)))
    _typed(lambda: db.create(LogicalSwitch(name="expiring"), ttl=seconds))
    assert db.list(LogicalSwitch) == []


@PER_EXAMPLE
@given(topics=NOT_TOPICS)
def test_topics_that_are_not_a_collection_of_topics_are_refused(db: nbdb.Database, topics: Any) -> None:
    # topics="tenant-a" followed the topics t, e, n, a and -: every change of tenant-a silently missed;
    # topics=[5] killed a sqlite cache's stream thread, and the cache never synced.
    _typed(lambda: db.watch(LogicalSwitch, topics=topics))
    _typed(lambda: db.cache(LogicalSwitch, topics=topics))
    if not isinstance(topics, str):
        _typed(lambda: db.list(LogicalSwitch, topics))


@PER_EXAMPLE
@given(since=st.one_of(st.text(max_size=3), st.floats(), st.integers(max_value=-1), st.booleans()))
def test_a_since_that_is_not_a_revision_is_refused(db: nbdb.Database, since: Any) -> None:
    _typed(lambda: db.watch(LogicalSwitch, since=since))


SURROGATES = st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3)
UNICODE = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=4)


def _with_text(text: str, where: str) -> dict[str, Any]:
    """A LogicalSwitchPort's fields with ``text`` in one place: a text field, a list member, a map key or value."""
    return {
        "parent_name": {"parent_name": text},
        "port_security": {"port_security": ["ok", text]},
        "options key": {"options": {text: "v"}},
        "options value": {"options": {"k": text}},
        "external_ids value": {"external_ids": {"a": "b", "k": text}},
    }[where]


WHERES = st.sampled_from(["parent_name", "port_security", "options key", "options value", "external_ids value"])


@PER_EXAMPLE
@given(bad=SURROGATES, good=UNICODE, where=WHERES)
def test_text_with_lone_surrogates_is_refused_by_every_store(
    db: nbdb.Database, bad: str, good: str, where: str
) -> None:
    # memory:// keeps objects, not bytes, and took such text, which every store of bytes refuses:
    # code tested on the embedded default then failed on a real backend (and on memory's own bytes).
    switch = db.create(LogicalSwitch(name=f"s-{where}-{len(db.list(LogicalSwitch))}"))
    port = LogicalSwitchPort(switch=switch.id, name=f"p-{switch.id}", **_with_text(bad, where))
    _typed(lambda: db.create(port))
    stored = db.create(port.replace(**_with_text(good, where)))  # any other Unicode is taken
    assert db.get(LogicalSwitchPort, stored.id) == stored
    _typed(lambda: db.update(stored.replace(**_with_text(bad, where))))
    if where.startswith("options"):
        member = {bad: "v"} if where == "options key" else {"k": bad}
        _typed(lambda: db.mutate(stored, add={"options": member}))
    txn = db.transaction()
    with pytest.raises(nbdb.ValidationError), txn:
        txn.create(LogicalSwitch(name=f"t-{switch.id}"))
        txn.create(port.replace(id=uuid.uuid4(), name=f"q-{switch.id}"))
    assert db.get(LogicalSwitchPort, stored.id) == stored
    assert [p.id for p in db.list(LogicalSwitchPort) if p.switch == switch.id] == [stored.id]
    assert f"t-{switch.id}" not in {s.name for s in db.list(LogicalSwitch)}


def test_wrong_shapes_of_arguments_are_refused(db: nbdb.Database) -> None:
    stored = db.create(LogicalSwitch(name="s"))
    _typed(lambda: db.cache(5))  # type: ignore[arg-type]
    _typed(lambda: db.watch("LogicalSwitch"))  # type: ignore[arg-type]
    _typed(lambda: db.mutate(stored, add=[("external_ids", {"k": "v"})]))  # type: ignore[arg-type]
    _typed(lambda: db.mutate(stored, remove="external_ids"))  # type: ignore[arg-type]
    page = db.list(LogicalSwitch, limit=10**30)  # a page larger than any store counts: the whole table
    assert page == [stored] and page.continue_token is None


@pytest.mark.parametrize("scheme", ["memory", "sqlite"])
def test_a_closed_database_refuses_everything_and_commits_nothing(scheme: str, tmp_path: Path) -> None:
    url = "memory://closed-database" if scheme == "memory" else f"sqlite://{tmp_path}/nb.db"
    keeper = nbdb.connect(url)  # keeps a named memory store alive, and reads what was committed
    db = nbdb.connect(url)
    stored = db.create(LogicalSwitch(name="s"))
    txn = db.transaction()
    with pytest.raises(nbdb.BackendUnavailableError), txn:
        txn.create(LogicalSwitch(name="open across close"))
        db.close()
    for call in [
        lambda: db.create(LogicalSwitch(name="after")),
        lambda: db.get(LogicalSwitch, stored.id),
        lambda: db.update(stored.replace(name="t")),
        lambda: db.delete(stored),
        lambda: db.list(LogicalSwitch),
        lambda: db.watch(LogicalSwitch),
        lambda: db.cache(LogicalSwitch),  # on sqlite: a cache that retried against the closed file forever
        lambda: _enter(db.lock("l", timeout=1)),
        lambda: db.allocate_id("c"),
        lambda: db.transaction(),
        lambda: db.mutate(stored, add={"external_ids": {"k": "v"}}),
    ]:
        _typed(call, nbdb.BackendUnavailableError)
    assert keeper.list(LogicalSwitch) == [stored]
    keeper.close()


NOT_TIMEOUTS = st.sampled_from([math.nan, "1", b"1", [1], True, False, 1j])
LONGER_THAN_ANY_WAIT = st.sampled_from([math.inf, 1e300, 10.0**20])


def _returns(call: Callable[[], Any]) -> Any:
    """What ``call`` returns, run on a thread: a call that never returns fails the test instead of hanging it."""
    box: list[Any] = []
    worker = threading.Thread(target=lambda: box.append(call()), daemon=True)
    worker.start()
    worker.join(20)
    assert box, f"{call} did not return"
    return box[0]


@PER_EXAMPLE
@given(timeout=NOT_TIMEOUTS)
def test_a_timeout_that_is_no_number_is_refused_by_every_wait(db: nbdb.Database, timeout: Any) -> None:
    # NaN made a work queue's get() and a watch's poll() wait forever.
    stored = db.create(LogicalSwitch(name="s"))
    queue: nbdb.WorkQueue[str] = nbdb.WorkQueue()
    with db.cache(LogicalSwitch) as cache, db.watch(LogicalSwitch) as watch:
        subscription = cache.subscribe(lambda event: None)
        controller = nbdb.run_controller(cache, lambda key, obj: None, LogicalSwitch)
        for call in [
            lambda: queue.get(timeout),
            lambda: queue.wait_idle(timeout),
            lambda: queue.add_after("k", timeout),
            lambda: cache.wait_synced(timeout),
            lambda: cache.wait_for(stored, timeout),
            lambda: watch.poll(timeout),
            lambda: subscription.wait_replayed(timeout),
            lambda: subscription.close(timeout),
            lambda: controller.wait_idle(timeout),
            lambda: controller.close(timeout),
            lambda: _enter(db.lock("l", timeout=timeout)),
        ]:
            _returns(lambda call=call: _typed(call))
        controller.close()
    db.delete(stored)


@PER_EXAMPLE
@given(timeout=LONGER_THAN_ANY_WAIT)
def test_a_timeout_longer_than_any_wait_waits_without_bound(db: nbdb.Database, timeout: float) -> None:
    # Each raised OverflowError ("timestamp out of range for platform time_t").
    stored = db.create(LogicalSwitch(name="s"))
    queue: nbdb.WorkQueue[str] = nbdb.WorkQueue()
    queue.add("ready")
    queue.add_after("never", timeout)
    with db.cache(LogicalSwitch) as cache, db.watch(LogicalSwitch) as watch:
        subscription = cache.subscribe(lambda event: None, replay=True)
        controller = nbdb.run_controller(cache, lambda key, obj: None, LogicalSwitch)
        assert _returns(lambda: queue.get(timeout)) == "ready"
        assert _returns(lambda: cache.wait_synced(timeout)) is True
        assert _returns(lambda: cache.wait_for(stored, timeout)) is True
        changed = db.update(stored.replace(name="t"))
        assert [e.new for e in _returns(lambda: watch.poll(timeout))] == [changed]
        assert _returns(lambda: subscription.wait_replayed(timeout)) is True
        assert _returns(lambda: controller.wait_idle(timeout)) is True
        assert _returns(lambda: controller.close(timeout)) is True
        assert _returns(lambda: subscription.close(timeout)) is True
        with db.lock("l", timeout=timeout) as handle:
            assert not handle.lost
    queue.done("ready")
    assert queue.get(0) is None  # the key added after an infinite delay never comes
    db.delete(changed)


class _Meter(nbdb.Model):
    """A model with numbers JSON may not hold."""

    nbdb_table: ClassVar[str] = "TestBadInputMeter"
    rate: float = 0.0
    rates: list[float] = pydantic.Field(default_factory=list)
    limits: dict[str, float] = pydantic.Field(default_factory=dict)


@PER_EXAMPLE
@given(number=st.floats(allow_nan=True, allow_infinity=True), where=st.sampled_from(["rate", "rates", "limits"]))
def test_a_number_json_cannot_hold_is_refused_and_any_other_is_kept_exactly(
    db: nbdb.Database, number: float, where: str
) -> None:
    # An infinity or a NaN was stored as null by the stores of bytes: the create was acknowledged and
    # every read of the object then failed to decode. memory:// kept it, so the two stores disagreed.
    fields = {"rate": {"rate": number}, "rates": {"rates": [1.5, number]}, "limits": {"limits": {"k": number}}}[where]
    if not math.isfinite(number):
        _typed(lambda: _Meter(**fields))
        stored = db.create(_Meter())
        _typed(lambda: stored.replace(**fields))
        assert db.get(_Meter, stored.id) == stored
        return
    stored = db.create(_Meter(**fields))
    assert db.get(_Meter, stored.id) == stored
    assert getattr(db.get(_Meter, stored.id), where) == fields[where]


class _Nested(pydantic.BaseModel):
    """A plain pydantic model inside an nbdb model: its own config, not Model's."""

    model_config = pydantic.ConfigDict(frozen=True)
    ratio: float = 0.0
    counts: dict[str, int] = pydantic.Field(default_factory=dict)


class BadInputHolder(nbdb.Model):
    nbdb_table: ClassVar[str] = "BadInputHolder"
    nested: _Nested = _Nested()
    anything: Any = None


NOT_FINITE = st.sampled_from([math.inf, -math.inf, math.nan])


@PER_EXAMPLE
@given(bad=NOT_FINITE, surrogate=SURROGATES)
def test_what_json_cannot_hold_is_refused_inside_any_field(db: nbdb.Database, bad: float, surrogate: str) -> None:
    # allow_inf_nan=False and the serializer's refusals reach a model's own fields only: a nested
    # plain pydantic model's infinity was stored as null (every read then failed), one under Any
    # silently became None, and a lone surrogate in a nested map's key came back as U+FFFD
    # characters; memory:// kept each as it was.
    for given_ in (
        BadInputHolder(nested=_Nested(ratio=bad)),
        BadInputHolder(anything=bad),
        BadInputHolder(anything={"k": [1.0, bad]}),
        BadInputHolder(nested=_Nested(counts={surrogate: 1})),
    ):
        _typed(lambda obj=given_: db.create(obj))
    stored = db.create(BadInputHolder(nested=_Nested(ratio=1.5), anything={"k": [1.0, "é"]}))
    _typed(lambda: db.update(stored.replace(anything=bad)))
    assert db.get(BadInputHolder, stored.id) == stored
    assert all((h.nested, h.anything) == (stored.nested, stored.anything) for h in db.list(BadInputHolder))
