"""cache.find() given an object for a field: it must be an object that field can hold."""

from __future__ import annotations

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
        rport = db.create(LogicalRouterPort(router=router, name="rp", mac="0a:00:00:00:00:01", networks=["10.0.0.1/24"]))
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
                    cache.find(model, **{field: value}, **(extra if model is LogicalSwitchPort and field != "name" else {}))
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
