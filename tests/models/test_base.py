"""The base model: references, indexes, registry, immutability."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

import nbdb
from nbdb.models import LogicalSwitch, LogicalSwitchPort, Model, PortGroup, Reference, model_for_table

pytestmark = pytest.mark.timeout(30)


def test_references_are_known_to_the_model_layer() -> None:
    specs = {s.field: s for s in LogicalSwitchPort.nbdb_references}
    assert specs["switch"].target == "LogicalSwitch" and not specs["switch"].optional
    assert specs["chassis"].optional and not specs["chassis"].many
    (ports,) = PortGroup.nbdb_references
    assert ports.many and ports.target == "LogicalSwitchPort"


def test_reference_fields_are_indexed() -> None:
    assert {"name", "switch", "chassis"} <= set(LogicalSwitchPort.nbdb_index_fields)


def test_reference_accepts_the_model_itself() -> None:
    ls = LogicalSwitch(name="a")
    port = LogicalSwitchPort(switch=ls, name="p")
    assert port.switch == ls.id
    assert port.ref_keys() == {("LogicalSwitch", ls.id)}


def test_user_models_register_and_reference_each_other() -> None:
    class TbTenant(Model):
        nbdb_indexes: ClassVar[tuple[str, ...]] = ("name",)
        name: str

    class TbProject(Model):
        tenant: Annotated[uuid.UUID, Reference("TbTenant")]

    assert model_for_table("TbTenant") is TbTenant
    assert TbProject.nbdb_references[0].target == "TbTenant"


@pytest.mark.parametrize("shape", [list, set, frozenset, tuple, dict])
def test_a_reference_put_on_a_collection_instead_of_its_ids_is_refused_naming_the_right_form(shape: Any) -> None:
    # Annotated[list[UUID], Reference("X")] was read as one reference whose id is the whole list: every
    # write of the model failed with TypeError "unhashable type: 'list'" from inside nbdb.
    annotation = Annotated[shape[str, uuid.UUID] if shape is dict else shape[uuid.UUID], Reference("TbTenant")]
    with pytest.raises(TypeError, match=r"links.*Reference marks"):
        type("TbLinks", (Model,), {"__annotations__": {"links": annotation}})


def test_unknown_index_field_is_refused() -> None:
    with pytest.raises(TypeError):

        class Broken(Model):
            nbdb_indexes: ClassVar[tuple[str, ...]] = ("nope",)


def test_table_names_cannot_collide() -> None:
    with pytest.raises(TypeError):

        class LogicalSwitch(Model):
            pass


def test_unknown_table_is_not_found() -> None:
    with pytest.raises(nbdb.NotFoundError):
        model_for_table("NoSuchTable")


def test_replace_validates_and_keeps_identity() -> None:
    ls = LogicalSwitch(name="a")
    assert ls.replace(name="b").id == ls.id
    with pytest.raises(nbdb.ValidationError):
        ls.replace(other_config="not a dict")
    with pytest.raises(nbdb.ValidationError):
        ls.replace(colour="red")


def test_extra_fields_are_refused() -> None:
    with pytest.raises(nbdb.ValidationError):
        LogicalSwitch(name="a", colour="red")


def test_committed_all_stamps_every_copy_as_committed_at_does() -> None:
    from nbdb.codec import decode, encode
    from nbdb.models.base import committed_all
    from nbdb.revision import GLOBAL_SCOPE, Revision
    from nbdb.spi import Record

    planned = LogicalSwitch(name="planned").stored_copy(1)  # a write's planned copy: its own dict
    fresh = LogicalSwitch(name="fresh")  # no private state yet
    stored = LogicalSwitch(name="decoded").stored_copy(1)
    decoded = decode(LogicalSwitch, Record("LogicalSwitch", stored.id, None, 1, encode(stored)))
    one_by_one = [m.model_copy() for m in (planned, fresh)]
    assert decoded.nbdb_revision is None
    committed_all([planned, fresh, decoded], 7)
    for m in one_by_one:
        m.committed_at(7)
    for m in (planned, fresh, decoded, *one_by_one):
        assert m.nbdb_revision == 7
    scoped = Revision(9, GLOBAL_SCOPE)
    committed_all([planned], scoped)
    assert planned.nbdb_revision == 9 and type(planned.__pydantic_private__["_revision"]) is int


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=30))
def test_ref_keys_are_the_references_shared_between_equal_sets(picks: list[tuple[int, int, int]]) -> None:
    """Whatever a port points to, ref_keys() is the set of its (table, id) references, and equal sets are one."""
    switches = [uuid.UUID(int=i + 1) for i in range(4)]
    chassis = [None, uuid.UUID(int=101), uuid.UUID(int=102), uuid.UUID(int=103)]
    options = [None, uuid.UUID(int=201), uuid.UUID(int=202), uuid.UUID(int=203)]
    seen: dict[frozenset[tuple[str, uuid.UUID]], frozenset[tuple[str, uuid.UUID]]] = {}
    for s, c, o in picks:
        port = LogicalSwitchPort(switch=switches[s], name="p", chassis=chassis[c], dhcpv4_options=options[o])
        want = {("LogicalSwitch", switches[s])}
        if chassis[c] is not None:
            want.add(("Chassis", chassis[c]))
        if options[o] is not None:
            want.add(("DHCPOptions", options[o]))
        refs = port.ref_keys()
        assert refs == want
        assert seen.setdefault(refs, refs) is refs  # the set held by an earlier port with the same references


def test_a_stored_copy_keeps_only_its_revision_in_a_dict_the_collector_never_tracks() -> None:
    """A stored copy's lineage is its own fields: its private dict holds an int, so CPython does not track it.

    Every stored (and cached) object keeps one: a tracked one is one more
    object per stored object for each full collection to scan.
    """
    import gc

    from nbdb.models.base import committed_all, lineage_is_own

    switch = LogicalSwitch(name="s")
    port = LogicalSwitchPort(switch=switch, name="p", addresses=["00:00:00:00:00:01 10.0.0.1"])
    stored = port.stored_copy(1)
    committed_all([stored], 5)
    private = stored.__pydantic_private__
    # its revision and the version it was stamped at (a copy whose version is moved since sends no revision)
    assert private == {"_revision": 5, "_at": 1} and not gc.is_tracked(private)
    assert lineage_is_own(stored)
    assert stored.stored_refs() == port.ref_keys() == {("LogicalSwitch", switch.id)}
    assert stored.stored_unique() == port.unique_values() == (("name", '"p"'),)
    one = port.stored_copy(1, revision=7)
    assert one.nbdb_revision == 7 and not gc.is_tracked(one.__pydantic_private__)


_SWITCHES = [uuid.UUID(int=i + 1) for i in range(3)]
_CHASSIS = [None, uuid.UUID(int=101), uuid.UUID(int=102)]


@given(
    st.lists(
        st.fixed_dictionaries(
            {},
            optional={
                "switch": st.sampled_from(_SWITCHES),
                "chassis": st.sampled_from(_CHASSIS),
                "name": st.sampled_from(["p", "q"]),
                "up": st.booleans(),
                "addresses": st.lists(st.sampled_from(["0a:00:00:00:00:01", "0a:00:00:00:00:02 10.0.0.2"]), max_size=2),
            },
        ),
        min_size=1,
        max_size=8,
    ),
    st.lists(st.booleans(), min_size=8, max_size=8),
)
def test_stored_refs_are_those_of_the_last_stored_copy_whatever_was_replaced(
    changes: list[dict[str, object]], writes: list[bool]
) -> None:
    """After any chain of replace() and writes, stored_refs()/stored_unique() are those of the last stored copy."""
    from nbdb.models.base import lineage_is_own

    stored = LogicalSwitchPort(switch=_SWITCHES[0], name="p").stored_copy(1)
    current: LogicalSwitchPort = stored
    own = True
    for change, write in zip(changes, writes, strict=False):
        current = current.replace(**change)
        assert current.stored_refs() == stored.ref_keys()
        assert current.stored_unique() == stored.unique_values()
        # It derives them from its own fields only while no replace() since the write set a reference or the name.
        own = own and not ({"switch", "chassis", "name"} & change.keys())
        assert lineage_is_own(current) == own
        if write:
            stored = current.stored_copy(stored.version + 1)
            current, own = stored, True
            assert stored.stored_refs() == stored.ref_keys() and lineage_is_own(stored)


def test_a_copy_built_by_hand_has_unknown_lineage_and_so_has_what_derives_from_it() -> None:
    port = LogicalSwitchPort(switch=_SWITCHES[0], name="p", version=3)
    assert port.stored_refs() is None and port.stored_unique() is None
    derived = port.replace(up=True)
    assert derived.stored_refs() is None and derived.stored_unique() is None


def test_model_copy_that_sets_a_reference_keeps_the_stored_lineage() -> None:
    """pydantic's model_copy(update=...) sets fields without replace(): the copy still knows what was stored."""
    from nbdb.codec import decode, encode
    from nbdb.spi import Record

    stored = LogicalSwitchPort(switch=_SWITCHES[0], name="p").stored_copy(1, revision=3)
    decoded = decode(LogicalSwitchPort, Record("LogicalSwitchPort", stored.id, None, 1, encode(stored)))
    for source in (stored, decoded):
        for deep in (False, True):
            moved = source.model_copy(update={"switch": _SWITCHES[1], "name": "q"}, deep=deep)
            assert moved.ref_keys() == {("LogicalSwitch", _SWITCHES[1])}
            assert moved.stored_refs() == {("LogicalSwitch", _SWITCHES[0])}
            assert moved.stored_unique() == (("name", '"p"'),)
            same = source.model_copy(update={"up": True}, deep=deep)
            assert same.stored_refs() == source.ref_keys() and same.stored_unique() == source.unique_values()


_PORTS = [uuid.UUID(int=201 + i) for i in range(3)]


@given(
    st.lists(st.sampled_from(_PORTS), max_size=3),
    st.lists(
        st.sampled_from(["write", "decode", "replace", "replace_ports", "copy", "deep_copy", "copy_ports"]),
        min_size=1,
        max_size=8,
    ),
)
def test_a_copy_whose_references_are_its_own_refuses_to_change_them_in_place(
    ports: list[uuid.UUID], steps: list[str]
) -> None:
    """Whatever chain of writes, decodes and copies: a copy that derives its stored references from its own list
    refuses an in-place change of it (the change would never reach the reverse references); a copy that keeps
    the stored ones apart may change its list, and its stored_refs() stay those of the last stored copy."""
    from nbdb.codec import decode, encode
    from nbdb.models.base import lineage_is_own
    from nbdb.spi import Record

    stored = PortGroup(name="pg", ports=ports).stored_copy(1)
    current: PortGroup = stored
    for step in steps:
        if step == "write":
            stored = current = current.stored_copy(stored.version + 1)
        elif step == "decode":
            record = Record("PortGroup", current.id, None, current.version, encode(current))
            stored = current = decode(PortGroup, record)
        elif step == "replace":
            current = current.replace()
        elif step == "replace_ports":
            current = current.replace(ports=list(reversed(current.ports)))
        elif step == "copy":
            current = current.model_copy()
        elif step == "deep_copy":
            current = current.model_copy(deep=True)
        else:
            current = current.model_copy(update={"ports": [*current.ports, _PORTS[0]]})
        assert current.stored_refs() == stored.ref_keys()
        if lineage_is_own(current):
            before = list(current.ports)
            with pytest.raises(nbdb.ValidationError):
                current.ports.append(_PORTS[1])
            with pytest.raises(nbdb.ValidationError):
                current.ports.clear()
            assert current.ports == before


def test_the_lineage_fields_that_may_hold_a_container_are_known() -> None:
    from nbdb.models import LogicalRouterPort, LogicalSwitchPort

    assert PortGroup.nbdb_lineage_containers == ("ports",)
    assert LogicalSwitch.nbdb_lineage_containers == ("dns_records", "load_balancer", "load_balancer_group")
    assert LogicalRouterPort.nbdb_lineage_containers == ("gateway_chassis",)
    # A port's references are single ids but for its mirrors, its name a str.
    assert LogicalSwitchPort.nbdb_lineage_containers == ("mirror_rules",)


# ---------------------------------------------------------------- nbdb_owned_by


@pytest.mark.parametrize(
    ("owned_by", "field"),
    [
        ("owner", "takes a tuple"),  # a bare string was a substring test
        (("onwer",), "'onwer'"),  # a typo owned nothing
        (("weak",), "'weak'"),  # a plain delete refused, a transaction took the object along
        (("maybe",), "'maybe'"),
        (("many",), "'many'"),
        (("label",), "'label'"),  # no reference at all
        (("owner", "other"), "more than one owner"),  # went with the first owner deleted
    ],
    ids=repr,
)
def test_an_owned_by_that_names_no_single_required_strong_reference_is_refused(owned_by: object, field: str) -> None:
    name = "Owned" + uuid.uuid4().hex[:6]
    fields: dict[str, Any] = {
        "owner": Annotated[uuid.UUID, Reference("LogicalSwitch")],
        "other": Annotated[uuid.UUID, Reference("LogicalSwitch")],
        "weak": Annotated[uuid.UUID, Reference("LogicalSwitch", weak=True)],
        "maybe": Annotated[uuid.UUID | None, Reference("LogicalSwitch")],
        "many": list[Annotated[uuid.UUID, Reference("LogicalSwitch")]],
        "label": str,
    }
    with pytest.raises(nbdb.ValidationError, match=f"{name}.nbdb_owned_by.*{field}"):
        type(name, (Model,), {"__annotations__": fields, "nbdb_owned_by": owned_by, "maybe": None, "many": []})
    with pytest.raises(LookupError):
        model_for_table(name)  # not registered


def test_an_owned_by_of_one_required_strong_reference_is_taken() -> None:
    # Owned by a parent of its own: a model owned by LogicalSwitch, defined for the rest of the run, made
    # every later refused delete of a switch read its referrers again (tests/families/test_kv.py counts them).
    parent = type("Owner" + uuid.uuid4().hex[:6], (Model,), {"__annotations__": {"label": str}})
    name = "Owned" + uuid.uuid4().hex[:6]
    fields = {"owner": Annotated[uuid.UUID, Reference(parent.nbdb_table)]}
    model = type(name, (Model,), {"__annotations__": fields, "nbdb_owned_by": ("owner",)})
    assert model.nbdb_owned_by == ("owner",) and model_for_table(name) is model
