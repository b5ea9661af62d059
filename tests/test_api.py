"""API behaviour the kit does not cover: lifecycles, threads, and misuse."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nbdb
from nbdb.models import Chassis, LogicalSwitch, LogicalSwitchPort

pytestmark = pytest.mark.timeout(30)


def test_close_stops_caches_and_watches() -> None:
    db = nbdb.connect()
    cache = db.cache(LogicalSwitch)
    assert cache.wait_synced(5)
    watch = db.watch(LogicalSwitch)
    db.close()
    assert not cache._replica._thread.is_alive()
    assert list(watch) == []
    db.close()  # idempotent


def test_iteration_ends_when_closed_from_another_thread() -> None:
    with nbdb.connect() as db:
        watch = db.watch(LogicalSwitch)
        seen: list[nbdb.ChangeEvent[nbdb.Model]] = []
        reader = threading.Thread(target=lambda: seen.extend(watch))
        reader.start()
        db.create(LogicalSwitch(name="a"))
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
        watch.close()
        reader.join(5)
        assert not reader.is_alive()
        assert [e.object.name for e in seen if isinstance(e.object, LogicalSwitch)] == ["a"]


def test_cache_rejects_bad_ids_and_unfollowed_models() -> None:
    with nbdb.connect() as db, db.cache(LogicalSwitch) as cache:
        assert cache.wait_synced(5)
        with pytest.raises(nbdb.ValidationError):
            cache.get(LogicalSwitch, "nope")
        with pytest.raises(nbdb.ValidationError):
            cache.get(Chassis, "00000000-0000-0000-0000-000000000000")
        with pytest.raises(nbdb.ValidationError):
            cache.find(Chassis, name="x")


def test_transaction_results_are_the_stored_copies() -> None:
    with nbdb.connect() as db:
        sw = db.create(LogicalSwitch(name="a"))
        with db.transaction() as txn:
            port = txn.create(LogicalSwitchPort(switch=sw, name="p"))
            txn.update(sw.replace(name="b"))
        created, updated = txn.results
        assert created == db.get(LogicalSwitchPort, port.id)
        assert updated == db.get(LogicalSwitch, sw.id)
        assert updated is not None and updated.version == 2


def test_lock_rejects_bad_names_and_ttl() -> None:
    with nbdb.connect() as db:
        with pytest.raises(nbdb.ValidationError):
            db.lock("a/b")
        with pytest.raises(nbdb.ValidationError):
            with db.lock("a", ttl=0):
                pass


def test_delete_needs_an_id_for_a_model_class() -> None:
    with nbdb.connect() as db, pytest.raises(nbdb.ValidationError):
        db.delete(LogicalSwitch)  # type: ignore[call-overload]


def test_cascade_deletes_dependents_whose_rules_need_the_reference() -> None:
    from nbdb.models import ACL, PortGroup

    with nbdb.connect() as db:
        sw = db.create(LogicalSwitch(name="sw"))
        port = db.create(LogicalSwitchPort(switch=sw, name="p"))
        pg = db.create(PortGroup(name="pg", ports=[port.id]))
        acl = db.create(ACL(port_group=pg, direction="to-lport", priority=1, match="ip4", action="drop"))
        on_switch = db.create(ACL(switch=sw, direction="to-lport", priority=1, match="ip4", action="drop"))
        db.delete(pg, cascade=True)
        with pytest.raises(nbdb.NotFoundError):
            db.get(ACL, acl.id)
        assert db.get(ACL, on_switch.id) == on_switch
        assert db.get(LogicalSwitchPort, port.id) == port


@pytest.mark.timeout(60)
@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["create", "rename", "move", "delete"]), st.integers(0, 5), st.integers(0, 3)),
        max_size=40,
    )
)
def test_cache_indexes_follow_any_sequence_of_changes(steps: list[tuple[str, int, int]]) -> None:
    """Whatever is created, renamed, moved between switches or deleted, find() answers as a scan would."""
    with nbdb.connect("memory://") as db:
        switches = [db.create(LogicalSwitch(name=f"s{i}")) for i in range(2)]
        cache = db.cache([LogicalSwitch, LogicalSwitchPort])
        assert cache.wait_synced(10)
        ports: dict[int, LogicalSwitchPort] = {}
        for action, slot, value in steps:
            port = ports.get(slot)
            if action == "create" and port is None:
                ports[slot] = db.create(LogicalSwitchPort(switch=switches[value % 2], name=f"p{slot}", tag=value + 1))
            elif action == "rename" and port is not None:
                ports[slot] = db.update(port.replace(tag=value + 1))
            elif action == "move" and port is not None:
                ports[slot] = db.update(port.replace(switch=switches[value % 2]))
            elif action == "delete" and port is not None:
                db.delete(ports.pop(slot))
        assert cache.wait_for(db.list(LogicalSwitch).revision, 10)
        for sw in switches:
            expected = sorted(p.id for p in ports.values() if p.switch == sw.id)
            assert sorted(p.id for p in cache.find(LogicalSwitchPort, switch=sw.id)) == expected
        for slot, port in ports.items():
            assert [p.id for p in cache.find(LogicalSwitchPort, name=f"p{slot}")] == [port.id]
            assert cache.get(LogicalSwitchPort, port.id) == port
        assert cache.find(LogicalSwitchPort, name="nobody") == []


def test_find_of_none_follows_objects_that_become_and_stop_being_none() -> None:
    with nbdb.connect("memory://") as db:
        switch = db.create(LogicalSwitch(name="s"))
        ch = db.create(Chassis(name="c"))
        cache = db.cache([LogicalSwitchPort])
        assert cache.wait_synced(10)
        port = db.create(LogicalSwitchPort(switch=switch, name="p", chassis=ch))
        assert cache.wait_for(port, 10)
        assert cache.find(LogicalSwitchPort, chassis=None) == []  # indexed from here on
        port = db.update(port.replace(chassis=None))
        assert cache.wait_for(port, 10)
        assert cache.find(LogicalSwitchPort, chassis=None) == [port]
        assert cache.find(LogicalSwitchPort, chassis=ch) == []
        port = db.update(port.replace(chassis=ch))
        assert cache.wait_for(port, 10)
        assert cache.find(LogicalSwitchPort, chassis=None) == []
        assert cache.find(LogicalSwitchPort, chassis=ch) == [port]
        db.delete(port)
        assert cache.wait_for(db.list(LogicalSwitch).revision, 10)
        assert cache.find(LogicalSwitchPort, chassis=ch) == []


@pytest.mark.timeout(120)
@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["create", "bind", "unbind", "delete", "ask"]), st.integers(0, 5), st.integers(0, 3)),
        max_size=40,
    ),
    st.booleans(),
)
def test_find_of_none_answers_as_a_scan_whenever_it_is_first_asked(
    steps: list[tuple[str, int, int]], early: bool
) -> None:
    """A field's None values are indexed from the first find() that asks for them (``index_nulls``).

    Whether that first find() comes before the load, in the middle of any changes, or at the end, and
    whether it goes through the one-field lookup or a several-field one, find() answers as a scan would.
    """
    with nbdb.connect("memory://") as db:
        switches = [db.create(LogicalSwitch(name=f"s{i}")) for i in range(2)]
        chassis = [db.create(Chassis(name=f"c{i}")) for i in range(2)]
        ports: dict[int, LogicalSwitchPort] = {}
        cache = db.cache([LogicalSwitch, LogicalSwitchPort])
        assert cache.wait_synced(10)
        if early:
            assert cache.find(LogicalSwitchPort, chassis=None) == []

        def check() -> None:
            assert cache.wait_for(db.list(LogicalSwitch).revision, 10)
            for ch in [None, *(c.id for c in chassis)]:
                for sw in switches:  # first: the first find() of None may be this several-field one
                    both = sorted(p.id for p in ports.values() if p.chassis == ch and p.switch == sw.id)
                    assert sorted(p.id for p in cache.find(LogicalSwitchPort, chassis=ch, switch=sw.id)) == both
                expected = sorted(p.id for p in ports.values() if p.chassis == ch)
                assert sorted(p.id for p in cache.find(LogicalSwitchPort, chassis=ch)) == expected
            unbound = sorted(p.id for p in ports.values() if p.dhcpv4_options is None)
            assert cache.find(LogicalSwitchPort, dhcpv4_options=None, name=None) == []  # a name is never None
            assert sorted(p.id for p in cache.find(LogicalSwitchPort, dhcpv4_options=None)) == unbound

        for action, slot, value in steps:
            port = ports.get(slot)
            bound = chassis[value % 2].id if value < 2 else None
            if action == "create" and port is None:
                ports[slot] = db.create(LogicalSwitchPort(switch=switches[value % 2], name=f"p{slot}", chassis=bound))
            elif action == "bind" and port is not None:
                ports[slot] = db.update(port.replace(chassis=chassis[value % 2].id))
            elif action == "unbind" and port is not None:
                ports[slot] = db.update(port.replace(chassis=None))
            elif action == "delete" and port is not None:
                db.delete(ports.pop(slot))
            elif action == "ask":
                check()
        check()


def test_list_pauses_the_collector_over_its_scan_and_restores_it() -> None:
    """The scan's records stay alive until decoded: the cyclic collector is off from the scan on, and back after."""
    import gc

    from nbdb.backends.memory.backend import MemoryBackend

    seen: list[bool] = []

    class Observed(MemoryBackend):
        def scan(self, tables: Any, topics: Any) -> Any:
            seen.append(gc.isenabled())
            return super().scan(tables, topics)

        def scan_page(self, tables: Any, topics: Any, limit: int, after: str | None) -> Any:
            seen.append(gc.isenabled())
            return super().scan_page(tables, topics, limit, after)

    with nbdb.Database(Observed()) as db:
        made = {db.create(LogicalSwitch(name=f"s{i}")).id for i in range(5)}
        assert gc.isenabled()
        assert {s.id for s in db.list(LogicalSwitch)} == made
        page = db.list(LogicalSwitch, limit=2)
        assert len(page) == 2 and seen == [False, False] and gc.isenabled()
        with pytest.raises(nbdb.ValidationError):
            db.list(LogicalSwitch, limit=0)  # refused before any scan, the collector left as it was
        assert seen == [False, False] and gc.isenabled()
        gc.disable()
        try:
            db.list(LogicalSwitch)
            assert not gc.isenabled()  # a caller's own setting is kept
        finally:
            gc.enable()
