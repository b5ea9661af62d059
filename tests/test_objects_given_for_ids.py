"""Objects, views and text given where an id is meant: a find, a reference, a mutate, a cache's queue key."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import nbdb
from nbdb.models import LogicalRouter, LogicalRouterPort, LogicalSwitch, LogicalSwitchPort, PortGroup


@pytest.mark.parametrize("more", [False, True], ids=["alone", "with-another-field"])
def test_a_cache_find_by_an_object_of_another_model_than_the_field_references_is_refused(more: bool) -> None:
    # find(LogicalSwitchPort, switch=router) took the router's id and silently found nothing (or,
    # were ids shared between tables, another table's object): a caller's mix-up hidden as "no ports".
    with nbdb.connect("memory://") as db:
        switch = db.create(LogicalSwitch(name="s"))
        router = db.create(LogicalRouter(name="r"))
        port = db.create(LogicalSwitchPort(switch=switch, name="p"))
        rport = db.create(
            LogicalRouterPort(router=router, name="rp", mac="0a:00:00:00:00:01", networks=["10.0.0.1/24"])
        )
        group = db.create(PortGroup(name="g", ports=[port]))
        extra: dict[str, Any] = {"name": "p"} if more else {}
        with db.cache([LogicalSwitch, LogicalSwitchPort, LogicalRouterPort, PortGroup]) as cache:
            assert cache.wait_synced(10)
            refused = [
                (LogicalSwitchPort, "switch", router, "LogicalSwitch"),  # a reference to one object
                (PortGroup, "ports", rport, "LogicalSwitchPort"),  # a list of references
                (LogicalSwitch, "id", router, "LogicalSwitch"),  # the id of another table's object
                (LogicalSwitchPort, "name", switch, "name"),  # no reference at all
            ]
            for model, field, value, named in refused:
                with pytest.raises(nbdb.ValidationError, match=named):
                    cache.find(
                        model, **{field: value}, **(extra if model is LogicalSwitchPort and field != "name" else {})
                    )
            # The right objects are still found, by object and by id.
            assert cache.find(LogicalSwitchPort, switch=switch, **extra) == [port]
            assert cache.find(LogicalSwitchPort, switch=switch.id, **extra) == [port]
            assert cache.find(PortGroup, ports=port) == [group]
            assert cache.find(LogicalSwitch, id=switch) == [switch]
            assert cache.find(LogicalRouterPort, router=router) == [rport]


def test_a_projected_caches_view_of_an_object_finds_what_the_object_finds() -> None:
    # find(LogicalSwitchPort, switch=view) with a projected cache's view of the switch was refused as
    # "UUID input should be a string, bytes or UUID object": the view stands for the object it shows.
    with nbdb.connect("memory://") as db:
        switch = db.create(LogicalSwitch(name="s"))
        router = db.create(LogicalRouter(name="r"))
        port = db.create(LogicalSwitchPort(switch=switch, name="p"))
        fields = {LogicalSwitch: ["name"], LogicalRouter: ["name"], LogicalSwitchPort: ["name", "switch"]}
        with db.cache([LogicalSwitch, LogicalRouter, LogicalSwitchPort], fields=fields) as cache:
            assert cache.wait_synced(10)
            view = cache.get(LogicalSwitch, switch.id)
            assert [p.id for p in cache.find(LogicalSwitchPort, switch=view)] == [port.id]
            assert [p.id for p in cache.find(LogicalSwitchPort, switch=view, name="p")] == [port.id]
            assert [s.id for s in cache.find(LogicalSwitch, id=view)] == [switch.id]
            with pytest.raises(nbdb.ValidationError, match="LogicalSwitch"):
                cache.find(LogicalSwitchPort, switch=cache.get(LogicalRouter, router.id))


def test_a_mutate_adding_an_object_of_another_table_or_no_id_is_refused_in_one_line(store_db: nbdb.Database) -> None:
    # add={"ports": [router]} was a ReferenceError naming a port that never was (the router's id); a member
    # that is no id was refused with pydantic's several lines naming its internal schema ("json-or-python[...]").
    db = store_db
    router = db.create(LogicalRouter(name="r"))
    group = db.create(PortGroup(name="g"))
    with pytest.raises(nbdb.ValidationError, match=r"PortGroup\.ports references LogicalSwitchPort: a LogicalRouter"):
        db.mutate(group, add={"ports": [router]})
    for member in ["nope", 5]:
        with pytest.raises(nbdb.ValidationError) as caught:
            db.mutate(group, add={"ports": [member]})
        assert "\n" not in str(caught.value) and "json-or-python" not in str(caught.value)
        assert str(caught.value).startswith(f"PortGroup.ports: {member!r} is not a valid member: ")
    assert db.get(PortGroup, group.id).ports == []


def test_a_model_given_an_object_of_another_table_for_a_reference_is_refused() -> None:
    # LogicalSwitchPort(switch=router) took the router's id: its create was a ReferenceError naming a
    # switch that never was, a replace() or an unwritten copy silently pointed at nothing.
    switch, router = LogicalSwitch(name="s"), LogicalRouter(name="r")
    port = LogicalSwitchPort(switch=switch, name="p")
    assert port.switch == switch.id and PortGroup(name="g", ports=[port]).ports == [port.id]
    for make in (
        lambda: LogicalSwitchPort(switch=router, name="p"),
        lambda: port.replace(switch=router),
        lambda: PortGroup(name="g", ports=[port, router]),
    ):
        with pytest.raises(nbdb.ValidationError, match=r"references LogicalSwitch.*a LogicalRouter"):
            make()


@contextlib.contextmanager
def _port_queue() -> Iterator[tuple[Any, LogicalSwitchPort]]:
    """A cache's queue of ports on memory://, synced, and the one port it holds."""
    with nbdb.connect("memory://") as db:
        switch = db.create(LogicalSwitch(name="s"))
        port = db.create(LogicalSwitchPort(switch=switch, name="p"))
        with db.cache([LogicalSwitchPort]) as cache:
            queue = cache.queue(LogicalSwitchPort)
            assert queue.wait_synced(10)
            yield queue, port


def test_a_caches_queue_takes_an_id_given_as_text_for_the_objects_own_key() -> None:
    # queue.add((LogicalSwitchPort, str(port.id))) queued another key than the cache's (LogicalSwitchPort,
    # port.id): handed out while the object's own key was processing, two workers had one object at once.
    with _port_queue() as (queue, port):
        key = queue.get(timeout=10)
        assert key == (LogicalSwitchPort, port.id)
        for text in (str(port.id), str(port.id).upper()):
            queue.add((LogicalSwitchPort, text))
            queue.add_after((LogicalSwitchPort, text), 0)
        assert queue.get(timeout=0) is None  # the object is processing: its key waits
        queue.done(key)
        again = queue.get(timeout=10)
        assert again == key and type(again[1]) is uuid.UUID
        queue.recheck((LogicalSwitchPort, str(port.id)), 3600)
        queue.done(again)
        assert queue.is_pending(key) and queue.wait_idle(10)  # re-checked later, as its own key
        queue.shutdown()


def test_every_call_of_a_caches_queue_that_names_a_key_takes_its_id_as_text() -> None:
    # add() took a text id as the object's key, but is_pending() said False of it, failures() counted
    # nothing and retry() and done() refused it as "not being processed".
    with _port_queue() as (queue, port):
        text = (LogicalSwitchPort, str(port.id))
        assert queue.get(timeout=10) == (LogicalSwitchPort, port.id)
        assert queue.is_pending(text)
        assert queue.retry(text) >= 0
        assert queue.failures(text) == 1
        assert queue.get(timeout=10) == (LogicalSwitchPort, port.id)
        queue.done(text)
        assert queue.failures(text) == 0 and not queue.is_pending(text)
        queue.shutdown()
