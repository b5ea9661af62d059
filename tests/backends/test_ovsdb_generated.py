"""Models generated from a schema (``nbdb models generate``), used on ovsdb-server serving that schema."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import threading
import types
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import nbdb
from nbdb.cli import main
from nbdb.conformance.kit import eventually
from nbdb.families.ovsdb.schemagen import generate_schema
from nbdb.models import LogicalSwitch, LogicalSwitchPort, Model
from nbdb.models.shape import shape_of
from nbdb.testing.faults import FaultProxy
from nbdb.testing.ovsdb import OvsdbServer, find_ovn_nb_schema
from nbdb.testing.probes import run_tool
from nbdb.testing.process import find_binary

pytestmark = pytest.mark.timeout(120)

_MAP = {"key": "string", "value": "string", "min": 0, "max": "unlimited"}
FLEET: dict[str, Any] = {
    "name": "Fleet",
    "version": "0.1.0",
    "tables": {
        "Site": {
            "isRoot": True,
            "indexes": [["name"]],
            "columns": {
                "name": {"type": "string"},
                "vehicles": {"type": {"key": {"type": "uuid", "refTable": "Vehicle"}, "min": 0, "max": "unlimited"}},
                "external_ids": {"type": _MAP},
            },
        },
        "Vehicle": {
            "isRoot": True,
            "columns": {
                "plate": {"type": "string"},
                "fuel": {"type": {"key": {"type": "string", "enum": ["set", ["diesel", "electric"]]}}},
                "seats": {"type": {"key": {"type": "integer", "minInteger": 1, "maxInteger": 9}}},
                "external_ids": {"type": _MAP},
            },
        },
    },
}


def _generate(schema_path: Path, directory: Path, module: str) -> types.ModuleType:
    """Generate with the CLI, then import the module."""
    out = directory / f"{module}.py"
    assert main(["models", "generate", str(schema_path), "-o", str(out)]) == 0
    spec = importlib.util.spec_from_file_location(module, out)
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[module] = loaded
    spec.loader.exec_module(loaded)
    return loaded


@pytest.fixture(scope="module")
def fleet_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OvsdbServer, types.ModuleType]]:
    directory = tmp_path_factory.mktemp("fleet")
    schema = directory / "fleet.ovsschema"
    schema.write_text(json.dumps(FLEET))
    fleet = _generate(schema, directory, "fleet_models")
    with OvsdbServer(schema=schema) as server:
        yield server, fleet


def test_generated_models_on_their_own_schema(fleet_server: tuple[OvsdbServer, types.ModuleType]) -> None:
    server, fleet = fleet_server
    with nbdb.connect(server.url, database="Fleet", namespace=f"f{uuid.uuid4().hex[:6]}") as db:
        cache = db.cache([fleet.Site, fleet.Vehicle])
        assert cache.wait_synced(10)
        van = db.create(fleet.Vehicle(plate="AB-123", fuel="electric", seats=3))
        site = db.create(fleet.Site(name="depot", vehicles=[van.id]))
        with pytest.raises(nbdb.ReferenceError):
            db.delete(van)  # the site still holds it
        with pytest.raises(nbdb.UniqueViolationError) as caught:
            db.create(fleet.Site(name="depot"))  # the schema's index on Site.name, declared by the model
        assert caught.value.existing == site.id
        assert db.get_by(fleet.Site, name="depot") == db.get(fleet.Site, site.id)
        db.update(site.replace(vehicles=[]))
        db.delete(db.get(fleet.Vehicle, van.id))
        assert db.list(fleet.Vehicle) == []
        assert cache.wait_for(db.list(fleet.Vehicle).revision, 30)  # everything up to the delete
        assert cache.get(fleet.Vehicle, van.id) is None
        assert [s.id for s in cache.find(fleet.Site, name="depot")] == [site.id]


def test_generated_northbound_models_read_what_nbdbs_own_models_write(tmp_path: Path) -> None:
    nb = _generate(find_ovn_nb_schema(), tmp_path, f"nb_models_{uuid.uuid4().hex[:6]}")
    with OvsdbServer() as server, nbdb.connect(server.url) as db:
        mine = db.create(LogicalSwitch(name="written-by-nbdb", other_config={"k": "v"}))
        [generated] = db.list(nb.LogicalSwitch)
        assert generated.id == mine.id and generated.name == "written-by-nbdb" and generated.other_config == {"k": "v"}
        updated = db.update(generated.replace(name="renamed-through-generated"))
        # Versions are derived per model (a digest of what the model maps): compare-and-swap holds across both.
        assert updated.version == generated.version + 1
        assert db.get(LogicalSwitch, mine.id).name == "renamed-through-generated"
        with pytest.raises(nbdb.ConflictError):
            db.update(mine.replace(name="stale"))


def test_caches_share_the_copies_written_through_either_of_two_models_of_one_table(tmp_path: Path) -> None:
    # nbdb's LogicalSwitchPort names its switch ``switch``, the generated one ``logical_switch``: a port's
    # parents were held under both names and compared whole with the ones a commit of one model wrote, so
    # no row read back as written, and every cache and watch in the process validated each own write
    # again (the copy a write stored was never shared) once both model sets were imported.
    nb = _generate(find_ovn_nb_schema(), tmp_path, f"nb_models_{uuid.uuid4().hex[:6]}")
    with OvsdbServer() as server, nbdb.connect(server.url) as db:
        switch = db.create(LogicalSwitch(name="sw-two-models"))
        ours, theirs = db.cache(LogicalSwitchPort), db.cache(nb.LogicalSwitchPort)
        assert ours.wait_synced(10) and theirs.wait_synced(10)
        port = db.create(LogicalSwitchPort(switch=switch, name="p-ours"))
        stored = db.update(port.replace(addresses=["0a:00:00:00:00:02"]))
        assert eventually(lambda: ours.get(LogicalSwitchPort, port.id) is stored, timeout=10)
        other = db.create(nb.LogicalSwitchPort(logical_switch=switch.id, name="p-theirs"))
        assert eventually(lambda: theirs.get(nb.LogicalSwitchPort, other.id) is other, timeout=10)
        # Each model still reads each port's parent under its own name.
        assert theirs.get(nb.LogicalSwitchPort, port.id).logical_switch == switch.id
        assert eventually(lambda: ours.get(LogicalSwitchPort, other.id) is not None, timeout=10)
        assert ours.get(LogicalSwitchPort, other.id).switch == switch.id == db.get(LogicalSwitchPort, other.id).switch


KEYED: dict[str, Any] = {
    "name": "Keyed",
    "version": "0.1.0",
    "tables": {
        "QoS": {
            "isRoot": True,
            "columns": {
                # As Open_vSwitch's QoS.queues and Bridge.flow_tables: maps whose keys are no strings.
                "queues": {"type": {"key": {"type": "integer", "minInteger": 0, "maxInteger": 4294967295},
                                    "value": {"type": "uuid", "refTable": "Queue"}, "min": 0, "max": "unlimited"}},
                "weights": {"type": {"key": "real", "value": "boolean", "min": 0, "max": "unlimited"}},
                "flags": {"type": {"key": "boolean", "value": "string", "min": 0, "max": "unlimited"}},
                "external_ids": {"type": _MAP},
            },
        },
        "Queue": {"isRoot": True, "columns": {"external_ids": {"type": _MAP}}},
    },
}  # fmt: skip


def test_maps_keyed_by_integers_reals_and_booleans_are_written(tmp_path: Path) -> None:
    """A document holds a map's keys as text ("1"): they were sent so, and every write was refused."""
    schema = tmp_path / "keyed.ovsschema"
    schema.write_text(json.dumps(KEYED))
    keyed = _generate(schema, tmp_path, f"keyed_models_{uuid.uuid4().hex[:6]}")
    with OvsdbServer(schema=schema) as server, nbdb.connect(server.url, database="Keyed") as db:
        queue = db.create(keyed.Queue())
        qos = db.create(keyed.QoS(queues={1: queue.id}, weights={0.5: True}, flags={False: "off"}))
        read = db.get(keyed.QoS, qos.id)
        assert (read.queues, read.weights, read.flags) == ({1: queue.id}, {0.5: True}, {False: "off"})
        assert read.version == qos.version  # read back as written: no foreign change
        updated = db.update(read.replace(queues={7: queue.id, 1: queue.id}))
        assert db.get(keyed.QoS, qos.id).queues == {1: queue.id, 7: queue.id} and updated.version == read.version + 1
        db.mutate(updated, add={"weights": {2.5: False}})
        assert db.get(keyed.QoS, qos.id).weights == {0.5: True, 2.5: False}
        with pytest.raises(nbdb.ReferenceError):
            db.delete(queue)  # QoS.queues still holds it


NESTED: dict[str, Any] = {
    "name": "Nested",
    "version": "0.1.0",
    "tables": {
        "Parent": {
            "isRoot": True,
            "columns": {
                "children": {"type": {"key": {"type": "uuid", "refTable": "Child"}, "min": 0, "max": "unlimited"}},
                "external_ids": {"type": _MAP},
            },
        },
        # A second set of references to Child: no one owner, so the generated Child names none (an owned
        # child cannot be made without its owner: test_an_owned_row_of_a_real_schema_goes_with_its_owner).
        "Shelf": {
            "isRoot": True,
            "columns": {
                "children": {"type": {"key": {"type": "uuid", "refTable": "Child"}, "min": 0, "max": "unlimited"}},
                "external_ids": {"type": _MAP},
            },
        },
        "Child": {"isRoot": False, "columns": {"label": {"type": "string"}, "external_ids": {"type": _MAP}}},
    },
}  # fmt: skip


def test_a_row_of_a_non_root_table_nothing_references_is_refused_not_lost(tmp_path: Path) -> None:
    """ovsdb-server deletes such a row as it commits: the create returned, after its whole timeout
    waiting for the monitor to show the row, an object that was never there."""
    schema = tmp_path / "nested.ovsschema"
    schema.write_text(json.dumps(NESTED))
    nested = _generate(schema, tmp_path, f"nested_models_{uuid.uuid4().hex[:6]}")
    assert nested.Child.nbdb_owned_by == ()
    with OvsdbServer(schema=schema) as server, nbdb.connect(server.url, database="Nested", timeout=3) as db:
        parent = db.create(nested.Parent())
        with pytest.raises(nbdb.UnsupportedError, match="live only while another row references them"):
            db.create(nested.Child(label="orphan"))
        assert db.list(nested.Child) == []
        with db.transaction() as txn:
            first = txn.create(nested.Child(label="first"))
            txn.update(parent.replace(children=[first.id]))
        with db.transaction() as txn:
            second = txn.create(nested.Child(label="second"))
            txn.mutate(db.get(nested.Parent, parent.id), add={"children": [second.id]})
        assert sorted(c.label for c in db.list(nested.Child)) == ["first", "second"]
        db.update(db.get(nested.Parent, parent.id).replace(children=[]))
        assert db.list(nested.Child) == []  # the server collected them, as the docs say


AT_LEAST_ONE: dict[str, Any] = {
    "name": "AtLeastOne",
    "version": "0.1.0",
    "tables": {
        "Port": {
            "isRoot": True,
            "columns": {
                # As Open_vSwitch's Port.interfaces or OVN's Logical_Router_Port.networks.
                "trunks": {"type": {"key": "integer", "min": 1, "max": "unlimited"}},
                "external_ids": {"type": _MAP},
            },
        },
    },
}  # fmt: skip


def test_a_mutation_replacing_the_only_member_of_a_set_of_at_least_one_lands(tmp_path: Path) -> None:
    """ovsdb-server checks a set's size after each mutation: the plan deleted the old member before
    inserting the new one, and the server refused the empty set in between (memory and the kv
    stores, which apply the change whole, took it)."""
    schema = tmp_path / "at_least_one.ovsschema"
    schema.write_text(json.dumps(AT_LEAST_ONE))
    gen = _generate(schema, tmp_path, f"at_least_one_models_{uuid.uuid4().hex[:6]}")
    steps: list[tuple[list[int], list[int]]] = [([5], [1]), ([7, 5], [5]), ([7], [7, 5]), ([2], [7])]
    seen: dict[str, list[list[int]]] = {}
    with OvsdbServer(schema=schema) as server:
        for url, kwargs in ((server.url, {"database": "AtLeastOne"}), ("memory://", {})):
            with nbdb.connect(url, **kwargs) as db:
                port = db.create(gen.Port(trunks=[1]))
                for add, remove in steps:
                    port = db.mutate(db.get(gen.Port, port.id), add={"trunks": add}, remove={"trunks": remove})
                    assert db.get(gen.Port, port.id).trunks == port.trunks
                    seen.setdefault(url.split(":")[0], []).append(sorted(port.trunks))
    assert seen["ovsdb+tcp"] == seen["memory"] == [[5], [5, 7], [7], [2]]


_BOUNDS = {"1": 1, "n": 3, "u": "unlimited"}
BOUNDED: dict[str, Any] = {
    "name": "Bounded",
    "version": "0.1.0",
    "tables": {
        "Box": {
            "isRoot": True,
            "columns": {
                **{f"s{low}{high}": {"type": {"key": "integer", "min": low, "max": _BOUNDS[high]}}
                   for low in (0, 1) for high in "nu"},
                **{f"m{low}{high}": {"type": {"key": "string", "value": "integer", "min": low, "max": _BOUNDS[high]}}
                   for low in (0, 1) for high in "1nu"},
                "external_ids": {"type": _MAP},
            },
        },
    },
}  # fmt: skip
"""A set and a map column of each size bound OVSDB has: min 0 or 1, max 1, N or unlimited (a set of
at most one member is a scalar or optional field, which no mutation changes)."""


def _bounded_value(name: str) -> st.SearchStrategy[Any]:
    """A value of column ``name`` of :data:`BOUNDED` within its size bounds (few atoms, so values overlap)."""
    low, high = int(name[1]), {"1": 1, "n": 3, "u": 5}[name[2]]
    if name[0] == "s":
        return st.lists(st.integers(0, 5), min_size=low, max_size=high, unique=True)
    return st.dictionaries(st.sampled_from("abcd"), st.integers(0, 2), min_size=low, max_size=high)


_BOX_FIELDS = [f"s{low}{high}" for low in (0, 1) for high in "nu"] + [
    f"m{low}{high}" for low in (0, 1) for high in "1nu"
]
_BOX_VALUES = st.fixed_dictionaries({name: _bounded_value(name) for name in _BOX_FIELDS})


def test_a_mutation_within_a_columns_size_bounds_lands_whatever_the_bounds(tmp_path: Path) -> None:
    """Every change from one value within a column's bounds to another commits and reads back exactly.

    ovsdb-server checks a column's size after each mutation: inserting first overfilled a set of at
    most N members whose every member was replaced, and deleting a map's keys before setting them
    again emptied a map of at least one pair; both were refused though the result was within bounds.
    """
    schema = tmp_path / "bounded.ovsschema"
    schema.write_text(json.dumps(BOUNDED))
    gen = _generate(schema, tmp_path, f"bounded_models_{uuid.uuid4().hex[:6]}")

    def change(old: dict[str, Any], new: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        add: dict[str, Any] = {}
        remove: dict[str, Any] = {}
        for name in _BOX_FIELDS:
            if name.startswith("s"):
                add[name] = sorted(set(new[name]) - set(old[name]))
                remove[name] = sorted(set(old[name]) - set(new[name]))
            else:
                add[name] = {k: v for k, v in new[name].items() if old[name].get(k) != v}
                remove[name] = sorted(set(old[name]) - set(new[name]))
        return add, remove

    def stored(box: Any) -> dict[str, Any]:
        return {
            name: sorted(getattr(box, name)) if name.startswith("s") else getattr(box, name) for name in _BOX_FIELDS
        }

    with OvsdbServer(schema=schema) as server, nbdb.connect(server.url, database="Bounded") as db:

        @settings(
            max_examples=int(os.environ.get("NBDB_BOUNDS_EXAMPLES", "40")),
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(old=_BOX_VALUES, new=_BOX_VALUES)
        @example(  # every member or pair replaced, each column full
            old={"s0n": [0, 1, 2], "s0u": [0], "s1n": [0, 1, 2], "s1u": [0], "m01": {"a": 0}, "m0n": {"a": 0},
                 "m0u": {"a": 0}, "m11": {"a": 0}, "m1n": {"a": 0, "b": 0, "c": 0}, "m1u": {"a": 0}},
            new={"s0n": [3, 4, 5], "s0u": [1], "s1n": [3, 4, 5], "s1u": [1], "m01": {"a": 1}, "m0n": {"b": 0},
                 "m0u": {"a": 1}, "m11": {"b": 1}, "m1n": {"a": 1, "b": 1, "d": 1}, "m1u": {"a": 1}},
        )  # fmt: skip
        def lands(old: dict[str, Any], new: dict[str, Any]) -> None:
            box = db.create(gen.Box(**old))
            add, remove = change(old, new)
            mutated = db.mutate(box, add=add, remove=remove)
            assert (
                stored(mutated)
                == stored(db.get(gen.Box, box.id))
                == {name: sorted(value) if name.startswith("s") else value for name, value in new.items()}
            )
            db.delete(mutated)

        lands()


def test_columns_at_their_server_default_and_maps_of_one_pair_read_back_as_stored(tmp_path: Path) -> None:
    """What the monitor sends for these columns was read wrong.

    ovsdb-server leaves a column at its default out of the rows it sends, and the default of a set of
    at least one integer is ``[0]``: such a set read as empty (CorruptRecordError for a valid object),
    and a later diff toggled the wrong members. For a map of at most one pair the server sends the new
    value, not a difference: ``{"a": 0}`` then ``{}`` read as ``{"a": 0}``, then ``{"b": 1}`` as both.
    """
    schema = tmp_path / "bounded.ovsschema"
    schema.write_text(json.dumps(BOUNDED))
    gen = _generate(schema, tmp_path, f"bounded_defaults_{uuid.uuid4().hex[:6]}")
    steps = [
        {"s1n": [0], "s1u": [0], "m01": {"a": 0}, "m11": {"a": 0}, "m1n": {"": 0}, "m1u": {"": 0}},
        {"s1n": [0, 1], "s1u": [1], "m01": {}, "m11": {"b": 1}, "m1n": {"": 0, "b": 2}},
        {"s1n": [0], "s1u": [0], "m01": {"b": 1}, "m11": {"": 0}, "m1n": {"": 0}},
    ]
    with OvsdbServer(schema=schema) as server, nbdb.connect(server.url, database="Bounded") as db:
        box = db.create(gen.Box(**steps[0]))
        for fields in steps[1:]:
            box = db.update(box.replace(**fields))
            for copy in (box, db.get(gen.Box, box.id)):
                assert {name: getattr(copy, name) for name in fields} == fields
        with nbdb.connect(server.url, database="Bounded") as fresh:
            assert fresh.get(gen.Box, box.id) == box


def test_writers_setting_keys_of_a_map_of_at_least_one_pair_at_once_lose_nothing(tmp_path: Path) -> None:
    """Such a change is an ``update`` of the whole column behind a ``wait`` for the value it was computed
    from: a writer whose replica was behind another's change plans it again, never overwriting it
    (it was refused outright before: the only pair deleted before it was set again)."""
    schema = tmp_path / "bounded.ovsschema"
    schema.write_text(json.dumps(BOUNDED))
    gen = _generate(schema, tmp_path, f"bounded_writers_{uuid.uuid4().hex[:6]}")
    with OvsdbServer(schema=schema) as server:
        dbs = [nbdb.connect(server.url, database="Bounded") for _ in range(3)]
        try:
            box = dbs[0].create(gen.Box(s1n=[1], s1u=[1], m11={"a": 1}, m1n={"a": 1}, m1u={"k0": -1}))
            assert dbs[0].mutate(box, add={"m1u": {"k0": 0}}).m1u == {"k0": 0}
            failures: list[Exception] = []

            def write(i: int) -> None:
                try:
                    for j in range(10):
                        dbs[i].mutate((gen.Box, box.id), add={"m1u": {f"k{i}": j}})
                except Exception as exc:  # reported by the test, below
                    failures.append(exc)

            threads = [threading.Thread(target=write, args=(i,)) for i in range(3)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=100)
            assert failures == []
            assert dbs[1].get(gen.Box, box.id).m1u == {"k0": 9, "k1": 9, "k2": 9}
        finally:
            for db in dbs:
                db.close()


BOUNDED_REFS: dict[str, Any] = {
    "name": "BoundedRefs",
    "version": "0.1.0",
    "tables": {
        "Box": {
            "isRoot": True,
            "columns": {
                "items": {"type": {"key": {"type": "uuid", "refTable": "Item"}, "min": 1, "max": 3}},
                "weights": {"type": {"key": {"type": "uuid", "refTable": "Item"}, "value": "integer", "min": 1,
                                     "max": 3}},
                "external_ids": {"type": _MAP},
            },
        },
        "Item": {"isRoot": True, "columns": {"name": {"type": "string"}, "external_ids": {"type": _MAP}}},
    },
}  # fmt: skip


def test_a_whole_column_write_of_references_removes_and_replaces_what_it_says(tmp_path: Path) -> None:
    """A set or map of references within size bounds no order of mutations respects is written whole, from the
    replica's value: the replica holds a reference as text, the change as a UUID. Compared as they came, a
    removal removed nothing (``[a]`` less ``a`` plus ``b`` stored ``[a, b]``, reported as committed), and a
    uuid-keyed map held the key twice and raised TypeError."""
    schema = tmp_path / "bounded_refs.ovsschema"
    schema.write_text(json.dumps(BOUNDED_REFS))
    gen = _generate(schema, tmp_path, f"bounded_refs_{uuid.uuid4().hex[:6]}")
    with OvsdbServer(schema=schema) as server, nbdb.connect(server.url, database="BoundedRefs") as db:
        a, b, c = (db.create(gen.Item(name=n)) for n in "abc")
        box = db.create(gen.Box(items=[a.id], weights={a.id: 1}))
        box = db.mutate(box, add={"items": [b.id]}, remove={"items": [a.id]})
        assert set(box.items) == set(db.get(gen.Box, box.id).items) == {b.id}
        box = db.mutate(box, add={"weights": {a.id: 2, c.id: 3}})
        assert box.weights == db.get(gen.Box, box.id).weights == {a.id: 2, c.id: 3}
        box = db.mutate(box, add={"weights": {b.id: 4}}, remove={"weights": [a.id, c.id]})
        assert box.weights == db.get(gen.Box, box.id).weights == {b.id: 4}


NUMBERS: dict[str, Any] = {
    "name": "Numbers",
    "version": "0.1.0",
    "tables": {
        "Counter": {
            "isRoot": True,
            "columns": {
                "value": {"type": "integer"},
                "maybe": {"type": {"key": "integer", "min": 0, "max": 1}},
                "many": {"type": {"key": "integer", "min": 0, "max": "unlimited"}},
                "by_id": {"type": {"key": "integer", "value": "integer", "min": 0, "max": "unlimited"}},
                "external_ids": {"type": _MAP},
            },
        },
    },
}  # fmt: skip


@pytest.mark.parametrize("big", [2**63, 2**64, -(2**63) - 1])
def test_an_integer_outside_ovsdbs_64_bits_is_refused_before_it_is_sent(tmp_path: Path, big: int) -> None:
    """ovsdb-server stored some such values as another number (2**64 as 0), and create() returned the
    written copy: the object read back later held something else.

    The generated model refuses such a value itself (on every backend); one that gets past it (a copy
    made without validation) is still refused before anything is sent."""
    schema = tmp_path / "numbers.ovsschema"
    schema.write_text(json.dumps(NUMBERS))
    gen = _generate(schema, tmp_path, f"numbers_models_{uuid.uuid4().hex[:6]}")
    with OvsdbServer(schema=schema) as server, nbdb.connect(server.url, database="Numbers") as db:
        counter = db.create(gen.Counter(value=2**63 - 1, maybe=-(2**63), many=[1], by_id={1: 2}))
        for fields in ({"value": big}, {"maybe": big}, {"many": [1, big]}, {"by_id": {big: 1}}, {"by_id": {1: big}}):
            with pytest.raises(nbdb.ValidationError):
                counter.replace(**fields)
            with pytest.raises(nbdb.ValidationError):
                gen.Counter(**fields)
            with pytest.raises(nbdb.ValidationError):
                db.update(counter.model_copy(update=fields))  # a copy made without validation: checked again
        with pytest.raises(nbdb.ValidationError):
            db.mutate(counter, add={"many": [big]})
        assert db.list(gen.Counter) == [counter]
        assert (counter.value, counter.maybe) == (2**63 - 1, -(2**63))


GARAGE: dict[str, Any] = {
    "name": "Garage",
    "version": "2.0.0",
    "tables": {
        "Bay": {"isRoot": True, "columns": {"name": {"type": "string"}, "external_ids": {"type": _MAP}}},
        "Lift": {"isRoot": True, "columns": {"load": {"type": "integer"}, "external_ids": {"type": _MAP}}},
    },
}


def test_a_generated_model_whose_table_the_served_schema_lacks_is_a_clear_error_on_reads_too(tmp_path: Path) -> None:
    """Models of Garage 2.0.0 against a server of Garage 1.0.0, which has no Lift table.

    A create of a Lift raised UnsupportedError, but list() returned [], get() NotFoundError, and a cache
    or a watch of it stayed empty: the table looked empty when the server did not serve it at all.
    """
    newer = tmp_path / "garage.ovsschema"
    newer.write_text(json.dumps(GARAGE))
    older = tmp_path / "garage-1.ovsschema"
    tables = {name: table for name, table in GARAGE["tables"].items() if name != "Lift"}
    older.write_text(json.dumps({**GARAGE, "version": "1.0.0", "tables": tables}))
    gen = _generate(newer, tmp_path, f"garage_models_{uuid.uuid4().hex[:6]}")
    missing = r"served Garage schema \(version 1\.0\.0\) has no table Lift, which holds Garage\.Lift"
    with OvsdbServer(schema=older) as server, nbdb.connect(server.url, database="Garage") as db:
        bay = db.create(gen.Bay(name="b1"))
        assert db.list(gen.Bay) == [bay]  # the served table: as ever
        with pytest.raises(nbdb.UnsupportedError, match=missing):
            db.check_model(gen.Lift)
        with pytest.raises(nbdb.UnsupportedError, match=missing):
            db.create(gen.Lift(load=1))
        with pytest.raises(nbdb.UnsupportedError, match=missing):
            db.list(gen.Lift)
        with pytest.raises(nbdb.UnsupportedError, match=missing):
            db.get(gen.Lift, uuid.uuid4())
        with pytest.raises(nbdb.UnsupportedError, match=missing):
            db.watch([gen.Bay, gen.Lift])
        for shared in (True, False):
            with pytest.raises(nbdb.UnsupportedError, match=missing):
                db.cache([gen.Bay, gen.Lift], shared=shared)
        with db.cache(gen.Bay) as cache:
            assert cache.wait_synced(10) and cache.list(gen.Bay) == [bay]


def test_a_bounded_set_mutation_whose_request_was_lost_lands_once_after_another_writers_change(
    tmp_path: Path,
) -> None:
    """A mutation of a set of 1..3 members is a compare-and-swap of the column (a ``wait`` for the
    value it was planned from). Its request is lost on the way (held by a slow link, then cut with
    the connection) while another client changes the set; the copy sent again is refused by its ``wait``.

    The client settled that refusal by the mutation's mark alone: absent, so "not landed *yet*"; it
    waited for a change its replica already showed until the commit's timeout, then raised
    CommitUnknownError ("this client's copy of them did not [change]"), although no copy could land
    on the changed column and planning again (same mark: at most one copy lands) applies it.
    """
    schema = tmp_path / "bounded.ovsschema"
    schema.write_text(json.dumps(BOUNDED))
    gen = _generate(schema, tmp_path, f"bounded_models_{uuid.uuid4().hex[:6]}")
    values = {"s0n": [], "s0u": [], "s1n": [0, 1, 2], "s1u": [0], "m01": {}, "m0n": {}, "m0u": {}, "m11": {"a": 0},
              "m1n": {"a": 0}, "m1u": {"a": 0}}  # fmt: skip
    with OvsdbServer(schema=schema) as server, FaultProxy([(server.members[0].host, server.members[0].port)]) as proxy:
        host, port = proxy.addresses[0]
        with (
            nbdb.connect(server.url, database="Bounded") as direct,
            nbdb.connect(f"ovsdb+tcp://{host}:{port}", database="Bounded", timeout=15) as client,
        ):
            box = direct.create(gen.Box(**values))
            assert client.get(gen.Box, box.id).s1n == box.s1n
            answer: list[BaseException | None] = []

            def mutate() -> None:
                try:
                    client.mutate(box, add={"s1n": [3]}, remove={"s1n": [0]})  # a CAS of the column
                except Exception as exc:
                    answer.append(exc)
                else:
                    answer.append(None)

            sent = proxy.stats.received_up
            proxy.delay(2.5)  # the mutation's read, then its transaction, wait in the proxy...
            worker = threading.Thread(target=mutate, daemon=True)
            worker.start()
            try:
                assert proxy.wait(lambda s: s.received_up > sent + 500, 20), "the transaction was never sent"
                direct.mutate(box, add={"s1n": [4]}, remove={"s1n": [1]})  # another writer changes the set
                proxy.cut()  # ...and the transaction is lost with its connection
            finally:
                proxy.heal()
            worker.join(60)
            assert not worker.is_alive()
            assert answer == [None], f"the mutation failed, though it could be applied: {answer}"
            assert sorted(direct.get(gen.Box, box.id).s1n) == [2, 3, 4]


SHADOWING: dict[str, Any] = {
    "name": "Shadow",
    "version": "0.1.0",
    "tables": {
        "Thing": {
            "isRoot": True,
            "columns": {
                "Field": {"type": "string"},
                "UUID": {"type": "string"},
                "list": {"type": {"key": "string", "min": 0, "max": "unlimited"}},
                "str": {"type": "string"},
                "owner": {"type": {"key": {"type": "uuid", "refTable": "None"}, "min": 0, "max": 1}},
                "tags": {"type": {"key": "string", "min": 0, "max": "unlimited"}},
                "from": {"type": "string"},
                "id": {"type": "integer"},
                "external_ids": {"type": _MAP},
            },
            "indexes": [["id", "owner"]],
        },
        "None": {"isRoot": True, "columns": {"label": {"type": "string"}, "external_ids": {"type": _MAP}}},
    },
}  # fmt: skip


def test_columns_and_tables_named_as_python_names_are_fields_of_their_own_columns(tmp_path: Path) -> None:
    """A column ``list`` (or ``str``, ``Field``, ``UUID``) hid the name from the class body's later lines
    (``default_factory=list`` took the field's default: the module failed to import), and a table
    ``None`` became ``class None``, a syntax error; a column named as a keyword or as a model's own
    attribute (``from``, ``id``) was left out, kept at its default by every insert. ovsdb-server serves
    both schemas; each such column is now a field with ``_`` appended that reads and writes it."""
    schema = tmp_path / "shadow.ovsschema"
    schema.write_text(json.dumps(SHADOWING))
    shadow = _generate(schema, tmp_path, f"shadow_models_{uuid.uuid4().hex[:6]}")
    assert shadow.NoneTable.nbdb_table == "Shadow.None"
    assert shadow.Thing.nbdb_unique == (("id_", "owner"),)
    with OvsdbServer(schema=schema) as server, nbdb.connect(server.url, database="Shadow") as db:
        target = db.create(shadow.NoneTable(label="x"))
        thing = db.create(shadow.Thing(owner=target.id, tags=["a", "b"], list_=["l0"], from_="f", id_=7))
        read = db.get(shadow.Thing, thing.id)
        assert (read.owner, sorted(read.tags), read.list_) == (target.id, ["a", "b"], ["l0"])
        assert (read.from_, read.id_) == ("f", 7)
        with pytest.raises(nbdb.UniqueViolationError):
            db.create(shadow.Thing(owner=target.id, id_=7))  # the schema's index on ("id", "owner")
        where = [["_uuid", "==", ["uuid", str(thing.id)]]]
        columns = ["list", "str", "from", "id", "tags"]
        select = {"op": "select", "table": "Thing", "where": where, "columns": columns}
        assert _client(server, "Shadow", select)[0]["rows"] == [
            {"list": "l0", "str": "", "from": "f", "id": 7, "tags": ["set", ["a", "b"]]}
        ]
        # Another writer's values in those columns are read, and kept by an update of another field.
        _client(server, "Shadow", {"op": "update", "table": "Thing", "where": where, "row": {"str": "s", "Field": "F"}})
        read = db.get(shadow.Thing, thing.id)
        assert (read.str_, read.Field_) == ("s", "F")
        db.update(read.replace(tags=["c"]))
        assert _client(server, "Shadow", select)[0]["rows"] == [
            {"list": "l0", "str": "s", "from": "f", "id": 7, "tags": "c"}
        ]


def _client(server: OvsdbServer, database: str, *ops: Any) -> list[Any]:
    """Another OVSDB client's transaction on ``database``, and its results."""
    argv = [str(find_binary("ovsdb-client")), "--timeout=10", "transact", f"tcp:{server.leader().address}"]
    result: list[Any] = json.loads(run_tool([*argv, json.dumps([database, *ops])], timeout=15))
    return result


MAP_INDEX: dict[str, Any] = {
    "name": "Labelled",
    "version": "0.1.0",
    "tables": {
        "Item": {
            "isRoot": True,
            "indexes": [["labels"], ["tags"]],
            "columns": {
                "labels": {"type": {"key": "string", "value": "integer", "min": 0, "max": "unlimited"}},
                "tags": {"type": {"key": "string", "min": 0, "max": "unlimited"}},
                "external_ids": {"type": _MAP},
            },
        },
    },
}  # fmt: skip


def test_a_cache_of_a_model_indexed_on_a_map_column_loads_and_finds(tmp_path: Path) -> None:
    """An index of the schema on a map column is a cache index of the generated model: the cache
    failed on its first object (a map is no key of a bucket: TypeError, unhashable), on every backend."""
    schema = tmp_path / "labelled.ovsschema"
    schema.write_text(json.dumps(MAP_INDEX))
    labelled = _generate(schema, tmp_path, f"labelled_models_{uuid.uuid4().hex[:6]}")
    assert "labels" in labelled.Item.nbdb_indexes
    with OvsdbServer(schema=schema) as server:
        for url, options in ((server.url, {"database": "Labelled"}), ("memory://", {})):
            with nbdb.connect(url, **options) as db:
                item = db.create(labelled.Item(labels={"k": 1}, tags=["a", "b"]))
                other = db.create(labelled.Item(labels={"k": 2}))
                cache = db.cache([labelled.Item])
                assert cache.wait_for(db.list(labelled.Item).revision, 10)
                assert [i.id for i in cache.find(labelled.Item, labels={"k": 1})] == [item.id]
                assert [i.id for i in cache.find(labelled.Item, tags="a")] == [item.id]
                db.update(db.get(labelled.Item, other.id).replace(labels={"k": 3}))
                assert cache.wait_for(db.list(labelled.Item).revision, 10)
                assert [i.id for i in cache.find(labelled.Item, labels={"k": 3})] == [other.id]
                with pytest.raises(nbdb.UniqueViolationError):
                    db.create(labelled.Item(labels={"k": 1}))


OPTIONAL_INDEX: dict[str, Any] = {
    "name": "Optional",
    "version": "0.1.0",
    "tables": {
        "Port": {
            "isRoot": True,
            "indexes": [["tag"], ["zone", "slot"]],
            "columns": {
                "name": {"type": "string"},
                "tag": {"type": {"key": "integer", "min": 0, "max": 1}},
                "zone": {"type": {"key": "string", "min": 0, "max": 1}},
                "slot": {"type": {"key": "integer", "min": 0, "max": 1}},
                "external_ids": {"type": _MAP},
            },
        },
    },
}  # fmt: skip


def test_a_second_row_leaving_an_indexed_optional_column_unset_is_a_unique_violation_naming_the_holder(
    tmp_path: Path,
) -> None:
    """ovsdb-server's index counts two empty sets as one value: the second unset row was refused as a
    plain ConflictError ("another object holds a unique value"), not as the violation naming field and holder
    that a clash of set values is. Memory (and SQL stores) accept both rows: an unset value claims nothing."""
    schema = tmp_path / "optional.ovsschema"
    schema.write_text(json.dumps(OPTIONAL_INDEX))
    optional = _generate(schema, tmp_path, f"optional_models_{uuid.uuid4().hex[:6]}")
    with OvsdbServer(schema=schema) as server, nbdb.connect(server.url, database="Optional") as db:
        first = db.create(optional.Port(name="a", zone="z1", slot=1))  # tag unset
        with pytest.raises(nbdb.UniqueViolationError) as caught:
            db.create(optional.Port(name="b", zone="z2", slot=2))
        assert (caught.value.table, caught.value.field) == ("Optional.Port", "tag")
        assert caught.value.value is None and caught.value.existing == first.id
        second = db.create(optional.Port(name="b", tag=7))  # zone and slot unset: the first row holds both
        with pytest.raises(nbdb.UniqueViolationError) as caught:
            db.create(optional.Port(name="c", tag=8))
        assert (caught.value.field, caught.value.value, caught.value.existing) == ("zone+slot", [None, None], second.id)
        with pytest.raises(nbdb.UniqueViolationError) as caught:
            db.create(optional.Port(name="c", tag=7, zone="z3"))  # a set value names its holder, as before
        assert (caught.value.field, caught.value.value, caught.value.existing) == ("tag", 7, second.id)
        assert sorted(p.name for p in db.list(optional.Port)) == ["a", "b"]
    with nbdb.connect("memory://") as db:  # the difference docs/backends/ovsdb.md states
        db.create(optional.Port(name="a"))
        db.create(optional.Port(name="b"))
        assert len(db.list(optional.Port)) == 2


@pytest.fixture(scope="module")
def labelled_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OvsdbServer, types.ModuleType]]:
    directory = tmp_path_factory.mktemp("labelled")
    schema = directory / "labelled.ovsschema"
    schema.write_text(json.dumps(MAP_INDEX))
    labelled = _generate(schema, directory, f"labelled_models_{uuid.uuid4().hex[:6]}")
    with OvsdbServer(schema=schema) as server:
        yield server, labelled


_ATOMS = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FF, exclude_categories=("Cs",)), max_size=4)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tags=st.lists(_ATOMS, min_size=1, max_size=5), data=st.data())
def test_get_by_a_list_field_kept_in_a_set_column_finds_its_holder_whatever_the_order(
    labelled_server: tuple[OvsdbServer, types.ModuleType], tags: list[str], data: st.DataObject
) -> None:
    """A list field in a set column of the schema (an index on ``tags``) is kept as the set: it reads back
    sorted without duplicates and the server's index compares sets. get_by found nothing when given the
    values in another order than the sorted one, though the index refused a second holder of them."""
    server, labelled = labelled_server
    own = uuid.uuid4().hex
    tags = [own, *tags]  # a set no other example holds
    with nbdb.connect(server.url, database="Labelled") as db:
        item = db.create(labelled.Item(labels={own: 1}, tags=tags))  # labels: indexed too, {} is one value
        assert db.get(labelled.Item, item.id).tags == sorted(set(tags))
        asked = data.draw(st.permutations(tags))
        asked += data.draw(st.lists(st.sampled_from(tags), max_size=2))  # repeated members: the same set
        found = db.get_by(labelled.Item, tags=asked)
        assert found is not None and found.id == item.id
        with pytest.raises(nbdb.UniqueViolationError) as caught:
            db.create(labelled.Item(labels={own: 2}, tags=asked))
        assert (caught.value.field, caught.value.existing) == ("tags", item.id)
        assert db.get_by(labelled.Item, tags=[*asked, "another member"]) is None


def test_southbound_chassis_made_by_ovn_sbctl_is_read_and_updated_and_one_with_its_encap_is_written(
    tmp_path: Path,
) -> None:
    """OVN_Southbound's Encap has no external_ids (where nbdb keeps its bookkeeping), and Chassis.encaps
    needs at least one: nbdb writes the Encap with its columns alone (issue 14; before, it could not make
    a chassis with a new Encap); a chassis another client made is a Chassis like any other."""
    schema = find_ovn_nb_schema().parent / "ovn-sb.ovsschema"
    sb = _generate(schema, tmp_path, f"sb_models_{uuid.uuid4().hex[:6]}")
    with OvsdbServer(schema=schema) as server, nbdb.connect(server.url, database="OVN_Southbound") as db:
        with db.transaction() as txn:
            encap = txn.create(sb.Encap(type="geneve", ip="10.0.0.1", chassis_name="ch1"))
            txn.create(sb.Chassis(name="ch1", encaps=[encap.id]))
        assert [c.name for c in db.list(sb.Chassis)] == ["ch1"] and [e.ip for e in db.list(sb.Encap)] == ["10.0.0.1"]
        with pytest.raises(nbdb.UnsupportedError, match=r"OVN_Southbound\.Encap has no external_ids"):
            db.create(sb.Encap(type="geneve", ip="10.0.0.3", chassis_name="ch1", topic="t"))
        db.delete(db.get(sb.Chassis, db.get_by(sb.Chassis, name="ch1").id))
        assert db.list(sb.Chassis) == [] and db.list(sb.Encap) == []
        sbctl = [str(find_binary("ovn-sbctl")), f"--db={server.remotes}", "--timeout=10"]
        run_tool([*sbctl, "chassis-add", "ch2", "geneve", "10.0.0.2"], timeout=20)
        chassis = db.get_by(sb.Chassis, name="ch2")
        # Chassis.encaps needs at least one Encap: it stays a field of Chassis, Encap names no owner.
        assert sb.Encap.nbdb_owned_by == () and "chassis" not in sb.Encap.model_fields
        assert chassis is not None and [e.ip for e in db.list(sb.Encap)] == ["10.0.0.2"]
        updated = db.update(chassis.replace(hostname="host-2", other_config={"k": "v"}))
        assert updated.version == chassis.version + 1 and updated.encaps == chassis.encaps
        assert run_tool([*sbctl, "get", "Chassis", "ch2", "hostname"], timeout=20).strip() == "host-2"


@pytest.fixture(scope="module")
def southbound(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, types.ModuleType]:
    directory = tmp_path_factory.mktemp("southbound")
    schema = find_ovn_nb_schema().parent / "ovn-sb.ovsschema"
    return schema, _generate(schema, directory, f"sb_owned_models_{uuid.uuid4().hex[:6]}")


def test_an_owned_row_of_a_real_schema_goes_with_its_owner(southbound: tuple[Path, types.ModuleType]) -> None:
    """OVN_Southbound's HA_Chassis is non-root and only HA_Chassis_Group.ha_chassis holds it: ovsdb-server
    deletes a group's chassis with the group. The generated HAChassis names its group (``nbdb_owned_by``),
    so a plain delete of the group takes them along on every backend; the models had no owner, and memory
    and SQLite kept the chassis of a deleted group for ever (while ovsdb-server collected them)."""
    schema, sb = southbound
    assert sb.HAChassis.nbdb_owned_by == ("ha_chassis_group",)
    assert "ha_chassis" not in sb.HAChassisGroup.model_fields  # the owner's set column: the children name it
    with OvsdbServer(schema=schema) as server:
        urls = [("memory://", {}), ("sqlite://", {}), (server.url, {"database": "OVN_Southbound"})]
        for url, options in urls:
            with nbdb.connect(url, **options) as db:
                group = db.create(sb.HAChassisGroup(name="g1"))
                other = db.create(sb.HAChassisGroup(name="g2"))
                with db.transaction() as txn:
                    first = txn.create(sb.HAChassis(ha_chassis_group=group.id, priority=10))
                    second = txn.create(sb.HAChassis(ha_chassis_group=group.id, priority=20))
                kept = db.create(sb.HAChassis(ha_chassis_group=other.id, priority=30))
                assert db.get(sb.HAChassis, first.id).ha_chassis_group == group.id
                assert sorted(c.priority for c in db.list(sb.HAChassis)) == [10, 20, 30], url
                db.delete(db.get(sb.HAChassisGroup, group.id))
                assert [(c.id, c.ha_chassis_group) for c in db.list(sb.HAChassis)] == [(kept.id, other.id)], url
                with pytest.raises(nbdb.NotFoundError):
                    db.get(sb.HAChassis, second.id)
                with pytest.raises(nbdb.ReferenceError):
                    db.create(sb.HAChassis(ha_chassis_group=group.id))  # an owner that is gone
        sbctl = [str(find_binary("ovn-sbctl")), f"--db={server.remotes}", "--timeout=10"]
        held = run_tool([*sbctl, "--columns=ha_chassis", "--bare", "find", "HA_Chassis_Group", "name=g2"], timeout=20)
        assert held.split() == [str(kept.id)]  # the server's own column holds the row the model names it in


def test_an_owned_row_two_owner_rows_hold_is_a_corrupt_record_and_holds_both(
    southbound: tuple[Path, types.ModuleType],
) -> None:
    """OVSDB lets ``ovn-sbctl`` put one HA_Chassis into a second group's ``ha_chassis``; the generated
    HAChassis names one group. As a child in two parents' sets (docs/backends/ovsdb.md), it reads as
    a corrupt record while both hold it, and a delete of either group is refused, naming it."""
    schema, sb = southbound
    with OvsdbServer(schema=schema) as server, nbdb.connect(server.url, database="OVN_Southbound") as db:
        first, second = db.create(sb.HAChassisGroup(name="g1")), db.create(sb.HAChassisGroup(name="g2"))
        chassis = db.create(sb.HAChassis(ha_chassis_group=first.id, priority=1))
        sbctl = [str(find_binary("ovn-sbctl")), f"--db={server.remotes}", "--timeout=10"]
        run_tool([*sbctl, "add", "HA_Chassis_Group", "g2", "ha_chassis", str(chassis.id)], timeout=20)
        with pytest.raises(nbdb.CorruptRecordError):
            db.list(sb.HAChassis)
        with pytest.raises(nbdb.ReferenceError):
            db.delete(db.get(sb.HAChassisGroup, second.id))
        run_tool([*sbctl, "remove", "HA_Chassis_Group", "g2", "ha_chassis", str(chassis.id)], timeout=20)
        assert [c.ha_chassis_group for c in db.list(sb.HAChassis)] == [first.id]  # one owner again


IMMUTABLE: dict[str, Any] = {
    "name": "Immutable",
    "version": "1.0.0",
    "tables": {
        "Box": {"isRoot": True, "columns": {
            "name": {"type": "string"},
            "items": {"type": {"key": {"type": "uuid", "refTable": "Item"}, "min": 0, "max": "unlimited"},
                      "mutable": False},
            "external_ids": {"type": _MAP}}},
        "Item": {"isRoot": False, "columns": {"label": {"type": "string"}, "external_ids": {"type": _MAP}}},
    },
}  # fmt: skip


def test_the_rows_of_an_immutable_set_column_can_be_created_through_generated_models(tmp_path: Path) -> None:
    """``Box.items`` is ``"mutable": false``: ovsdb-server takes its rows only in the box's own insert.
    The generated models wrote them that way (``Box(items=[item.id])`` in one transaction); owned, the
    item names its box and the OVSDB backend adds it to the column with a ``mutate``, which the server
    refuses ("Cannot mutate immutable column"), even in the transaction inserting the box: no item
    could be made at all."""
    schema = tmp_path / "immutable.ovsschema"
    schema.write_text(json.dumps(IMMUTABLE))
    models = _generate(schema, tmp_path, f"immutable_models_{uuid.uuid4().hex[:6]}")
    with OvsdbServer(schema=schema) as server, nbdb.connect(server.url, database="Immutable", timeout=5) as db:
        with db.transaction() as txn:
            if models.Item.nbdb_owned_by:
                box = txn.create(models.Box(name="b"))
                txn.create(models.Item(box=box.id, label="x"))
            else:
                item = txn.create(models.Item(label="x"))
                txn.create(models.Box(name="b", items=[item.id]))
        assert [i.label for i in db.list(models.Item)] == ["x"]


OWNED: dict[str, Any] = {
    "name": "Owned",
    "version": "1.0.0",
    "tables": {
        "Box": {"isRoot": True, "columns": {
            "items": {"type": {"key": {"type": "uuid", "refTable": "Item"}, "min": 0, "max": "unlimited"}},
            "external_ids": {"type": _MAP}}},
        "Shelf": {"isRoot": True, "columns": {"external_ids": {"type": _MAP}}},
        "Item": {"isRoot": False, "columns": {"label": {"type": "string"}, "external_ids": {"type": _MAP}}},
    },
}  # fmt: skip


@pytest.mark.parametrize("skew", ["root", "second holder"])
def test_an_owned_model_of_a_schema_whose_table_the_served_one_holds_otherwise_says_why(
    skew: str, tmp_path: Path
) -> None:
    """``Item`` is owned by ``Box.items`` in the models; the served schema made ``Item`` a root, or has
    ``Shelf.items`` hold it too: no one column holds its rows. The owner field was then bound to nothing
    (a field without a column): every row read as corrupt, a list of none read empty, and a write said
    the schema had no column ``box``. Now a read and a write of ``Item`` raise ``UnsupportedError``
    saying why, as for a table the served schema lacks; the other models work."""
    models = _generate(_schema_file(tmp_path, "owned", OWNED), tmp_path, f"owned_models_{uuid.uuid4().hex[:6]}")
    assert models.Item.nbdb_owned_by == ("box",)
    served = json.loads(json.dumps(OWNED))
    if skew == "root":
        served["tables"]["Item"]["isRoot"] = True
    else:
        served["tables"]["Shelf"]["columns"]["items"] = served["tables"]["Box"]["columns"]["items"]
    with OvsdbServer(schema=_schema_file(tmp_path, "served", served)) as server:
        with nbdb.connect(server.url, database="Owned", timeout=5) as db:
            box = db.create(models.Box())
            why = "no one set column holding the rows of Item for Owned.Item.box"
            with pytest.raises(nbdb.UnsupportedError, match=why):
                db.list(models.Item)
            with pytest.raises(nbdb.UnsupportedError, match=why):
                db.create(models.Item(box=box.id, label="x"))
            assert [b.id for b in db.list(models.Box)] == [box.id]


def _schema_file(directory: Path, name: str, schema: dict[str, Any]) -> Path:
    path = directory / f"{name}.ovsschema"
    path.write_text(json.dumps(schema))
    return path


_TIERED: dict[str, Any] = {
    "name": "Tiered",
    "version": "1.0.0",
    "tables": {
        "Disk": {"isRoot": True, "columns": {
            "name": {"type": "string"},
            "tier": {"type": {"key": {"type": "integer", "enum": ["set", [1, 2, 3]]}}},
            "gain": {"type": {"key": {"type": "real", "enum": ["set", [0.5, 1.5]]}, "min": 0, "max": 1}},
            "extra": {"type": {"key": {"type": "integer", "enum": ["set", [1, 2, 3]]}, "min": 0, "max": "unlimited"}},
            "external_ids": {"type": _MAP}}},
    },
}  # fmt: skip


def _widened(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` as a newer version of it: each enum of ``Disk`` admits one value more (4, 2.5, 4)."""
    newer = json.loads(json.dumps(schema))
    newer["version"] = "1.1.0"
    columns = newer["tables"]["Disk"]["columns"]
    for name, more in (("tier", 4), ("gain", 2.5), ("extra", 4)):
        columns[name]["type"]["key"]["enum"][1].append(more)
    return newer


def test_a_newer_schemas_integer_and_real_enum_values_read_in_generated_models(tmp_path: Path) -> None:
    """Models generated from a schema whose integer and real columns have enums, served by a newer schema
    that added a value to each: a row holding them (another client's) reads in ``get``, ``list``, a cache
    and a watch, and an update of another field writes them back as they were. Generated models wrote
    these enums as ``Literal``s, which no newer value can pass: the row was a corrupt record (unseen by
    caches and watches, refused by ``get``). Typed by the caller, or written where no schema checks the
    enum (a store of records), such a value is still refused before anything is sent."""
    from nbdb.models.enums import is_newer

    models = _generate(_schema_file(tmp_path, "tiered", _TIERED), tmp_path, f"tiered_{uuid.uuid4().hex[:6]}")
    assert models.Disk(name="d").tier == 1 and models.Disk(name="d", tier=3).tier == 3
    with (
        OvsdbServer(schema=_schema_file(tmp_path, "newer", _widened(_TIERED))) as server,
        nbdb.connect(server.url, database="Tiered", timeout=10) as db,
        nbdb.connect("memory://") as memory,
    ):
        kept = db.create(models.Disk(name="old", tier=2, gain=1.5, extra=[3]))
        cache = db.cache([models.Disk])
        assert cache.wait_synced(10)
        with db.watch(models.Disk) as watch:
            row = {"name": "new", "tier": 4, "gain": 2.5, "extra": ["set", [1, 4]]}
            (inserted,) = _client(server, "Tiered", {"op": "insert", "table": "Disk", "row": row})
            id = uuid.UUID(inserted["uuid"][1])
            (event,) = watch.poll(10)
        assert event.new is not None and event.new.id == id and event.new.tier == 4
        disk = db.get(models.Disk, id)
        assert (disk.tier, disk.gain, sorted(disk.extra)) == (4, 2.5, [1, 4])
        assert isinstance(disk.tier, models.DiskTier) and is_newer(disk.tier) and disk.tier.value == 4
        assert isinstance(disk.gain, models.DiskGain) and is_newer(disk.gain) and not is_newer(kept.tier)
        assert disk.model_dump(mode="json")["tier"] == 4 and disk.model_dump(mode="json")["gain"] == 2.5
        assert {d.id: d.tier for d in db.list(models.Disk)} == {kept.id: 2, id: 4}
        assert cache.wait_for(event.revision, 10)
        assert cache.get(models.Disk, id) == disk and not cache.corrupt
        cache.close()
        updated = db.update(disk.replace(name="renamed"))
        assert (updated.tier, updated.gain, updated.version) == (4, 2.5, disk.version + 1)
        (found,) = _client(server, "Tiered", {"op": "select", "table": "Disk", "where": [["name", "==", "renamed"]]})
        assert [(r["tier"], r["gain"]) for r in found["rows"]] == [(4, 2.5)]  # written back as read
        # The input check stays: a value the models' enum lacks, typed by the caller, is refused.
        with pytest.raises(nbdb.ValidationError):
            disk.replace(tier=5)
        with pytest.raises(nbdb.ValidationError):
            db.create(models.Disk(name="typed", tier=4))
        # A store of records checks no enum: a copy holding the newer values is refused there.
        with pytest.raises(nbdb.ValidationError, match=r"gain = 2\.5; tier = 4"):
            memory.create(updated.model_copy(update={"version": 0}))
        assert memory.list(models.Disk) == []
        assert db.update(updated.replace(tier=1)).tier == 1


_SWITCHES = "0b7e3a4c-1111-4222-8333-444455556666"
_ANY = {"min": 0, "max": "unlimited"}
_KNOB: dict[str, Any] = {
    "name": {"type": "string"},
    "flags": {"type": {"key": {"type": "boolean", "enum": ["set", [True, False]]}, **_ANY}},
    "switches": {"type": {"key": {"type": "uuid", "enum": ["set", [["uuid", _SWITCHES]]]}, **_ANY}},
    "on": {"type": {"key": {"type": "boolean", "enum": ["set", [True]]}, "min": 0, "max": 1}},
    "by_port": {"type": {"key": "integer", "value": {"type": "boolean", "enum": ["set", [True]]}, **_ANY}},
    "external_ids": {"type": _MAP},
}
_FLAGGED: dict[str, Any] = {
    "name": "Flagged",
    "version": "1.0.0",
    "tables": {"Knob": {"isRoot": True, "columns": _KNOB}},
}


def test_a_set_of_a_boolean_or_uuid_enum_in_a_generated_model_reads_and_writes(tmp_path: Path) -> None:
    """``nbdb models generate`` writes a set column of a boolean or uuid enum as ``list[Literal[...]]``. nbdb
    took the field for one value (a ``Literal`` was one JSON atom, its list too), and OVSDB's set column
    for a set of one: every write of the model, its defaults too, was a raw ``TypeError`` (unhashable list).
    """
    models = _generate(_schema_file(tmp_path, "flagged", _FLAGGED), tmp_path, f"flagged_{uuid.uuid4().hex[:6]}")
    with (
        OvsdbServer(schema=tmp_path / "flagged.ovsschema") as server,
        nbdb.connect(server.url, database="Flagged", timeout=10) as db,
    ):
        cache = db.cache([models.Knob])
        assert cache.wait_synced(10)
        with db.watch(models.Knob) as watch:
            bare = db.create(models.Knob(name="bare"))  # the defaults: empty sets
            knob = db.create(
                models.Knob(name="k", flags=[False, True], switches=[_SWITCHES], on=True, by_port={7: True})
            )
            assert [e.new for e in watch.poll(10)] == [bare, knob]
        assert db.get(models.Knob, bare.id) == bare and (bare.flags, bare.switches, bare.on) == ([], [], None)
        got = db.get(models.Knob, knob.id)
        assert (got.flags, got.switches, got.on, got.by_port) == ([False, True], [_SWITCHES], True, {7: True})
        assert got == knob
        (row,) = _client(server, "Flagged", {"op": "select", "table": "Knob", "where": [["name", "==", "k"]]})
        assert row["rows"][0]["flags"] == ["set", [False, True]]  # the schema's own set column, typed
        assert row["rows"][0]["switches"] == ["uuid", _SWITCHES] and row["rows"][0]["by_port"] == ["map", [[7, True]]]
        updated = db.update(got.replace(flags=[True], switches=[]))
        assert db.get(models.Knob, knob.id) == updated and (updated.flags, updated.switches) == ([True], [])
        assert {k.id: k.flags for k in db.list(models.Knob)} == {bare.id: [], knob.id: [True]}
        row = {"name": "theirs", "flags": ["set", [True]], "switches": ["uuid", _SWITCHES]}
        (inserted,) = _client(server, "Flagged", {"op": "insert", "table": "Knob", "row": row})
        theirs = db.get(models.Knob, uuid.UUID(inserted["uuid"][1]))
        assert (theirs.flags, theirs.switches) == ([True], [_SWITCHES])
        assert cache.wait_for(db.list(models.Knob).revision, 10) and not cache.corrupt
        assert cache.find(models.Knob, name="k") == [updated] and cache.find(models.Knob, name="theirs") == [theirs]
        with pytest.raises(nbdb.ValidationError):
            models.Knob(name="bad", flags=["maybe"])


class LiteralKnob(Model):
    """A hand-written model of ``Literal`` fields, kept in nbdb's model database."""

    nbdb_table = "gen_literal_knob"
    name: str = ""
    one: Literal["p", "q"] = "p"
    level: Literal[1, 2] | None = None
    tags: list[Literal["a", "b"]] = []
    kinds: frozenset[Literal["x", "y"]] = frozenset()
    flags: set[Literal[True, False]] = set()


def test_literal_fields_keep_their_stored_format_in_the_model_database() -> None:
    """A list or set of ``Literal`` values is a list or set of JSON atoms now, no longer one JSON value:
    in the model database it is still the JSON text of a string column, as before, and a scalar
    ``Literal`` the JSON text of its value (a database made before reads the same, and reads as before)."""
    columns = generate_schema([shape_of(LiteralKnob)])["tables"]["gen_literal_knob"]["columns"]
    assert {name: columns[name]["type"] for name in ("one", "level", "tags", "kinds", "flags")} == dict.fromkeys(
        ("one", "level", "tags", "kinds", "flags"), "string"
    )
    with OvsdbServer(model_schema=True) as server, nbdb.connect(server.url, timeout=10) as db:
        knob = db.create(LiteralKnob(name="k", one="q", level=2, tags=["b", "a", "b"], kinds={"y"}, flags={True}))
        (found,) = _client(server, "nbdb", {"op": "select", "table": "gen_literal_knob", "where": []})
        (row,) = found["rows"]
        stored = {name: row[name] for name in ("one", "level", "tags", "kinds", "flags")}
        assert stored == {"one": '"q"', "level": "2", "tags": '["b", "a", "b"]', "kinds": '["y"]', "flags": "[true]"}
        assert db.get(LiteralKnob, knob.id) == knob and db.list(LiteralKnob) == [knob]
        updated = db.update(knob.replace(tags=[], kinds={"x", "y"}))
        assert db.get(LiteralKnob, knob.id) == updated and updated.kinds == {"x", "y"}
