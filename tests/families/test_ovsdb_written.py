"""What a planned put keeps of the row it writes stands for what reading the row back would give.

The OVSDB planner returns ``render_written(...).refs`` (the document as it
will be read back) instead of computing ``refs_of`` of the caller's document a
second time; the two must be the same set for every model and every value,
or a commit would check the wrong targets for existence and the replica's
reverse references would drift. And the wire form it sends is kept for the
next compare-and-swap of the row (``Replica.stored_wire``): it must be what
``stored_columns`` makes of the row as written.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nbdb
from nbdb.codec import encode
from nbdb.families.ovsdb import OVN_BINDINGS, DatabaseSchema, Mapping_, build_mapping
from nbdb.families.ovsdb.datum import wire_map
from nbdb.families.ovsdb.ovn import OVN_NB_DATABASE
from nbdb.families.ovsdb.rows import (
    EXTERNAL_IDS,
    kept_wire,
    new_row,
    refs_of,
    render,
    render_written,
    stored_columns,
    to_keep,
)
from nbdb.models.base import Model
from nbdb.models.shape import model_shapes
from nbdb.testing.errors import ServerNotInstalledError
from nbdb.testing.ovsdb import find_ovn_nb_schema
from nbdb.testing.strategies import OVN_MODELS, ovn_objects


def _mapping() -> Mapping_ | None:
    try:
        path = find_ovn_nb_schema()
    except ServerNotInstalledError:
        return None
    schema = DatabaseSchema.parse(json.loads(path.read_text()))
    return build_mapping({OVN_NB_DATABASE: schema}, {OVN_NB_DATABASE: OVN_BINDINGS}, model_shapes())


_NB = _mapping()
# The models the Northbound schema holds (Chassis and other Southbound-side models are not in it).
_MAPPED = tuple(m for m in OVN_MODELS if _NB is not None and m.nbdb_table in _NB.tables)


@pytest.mark.skipif(_NB is None, reason="the OVN Northbound schema is not installed (Debian package ovn-common)")
def test_most_models_map_onto_the_northbound_schema() -> None:
    assert _NB is not None
    assert {"LogicalSwitch", "LogicalSwitchPort", "LogicalRouter", "LogicalRouterPort", "ACL", "NAT"} <= {
        m.__name__ for m in _MAPPED
    }


@pytest.mark.skipif(_NB is None, reason="the OVN Northbound schema is not installed (Debian package ovn-common)")
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ovn_objects(_MAPPED or OVN_MODELS))
def test_the_rendered_rows_bytes_and_references_are_the_documents_and_its_wire_form_the_rows(obj: Model) -> None:
    assert _NB is not None
    tm = _NB.get(type(obj).nbdb_table)
    doc = json.loads(encode(obj))
    cells, wire, ext, parents, values = new_row(tm, doc)
    written = {**cells, EXTERNAL_IDS: ext}
    rendered = render_written(tm, obj.id, written, parents, values)
    # Made from the values new_row made with the cells: byte for byte what rendering the row makes.
    again = render(tm, obj.id, written, parents)
    assert (rendered.data, rendered.state.digest, rendered.refs) == (again.data, again.state.digest, again.refs)
    wire[EXTERNAL_IDS] = wire_map(ext.items())
    assert stored_columns(tm, written) == wire
    # As the replica keeps it for the row's next compare-and-swap: the same datums back.
    kept = to_keep(wire)
    assert kept is not None and kept_wire(kept) == wire
    assert rendered.refs == refs_of(tm, doc)
    # And both are what the model itself says it references.
    assert rendered.refs == frozenset((table, uuid.UUID(str(id))) for table, id in obj.ref_keys())


def _general(tm: Any) -> Any:
    """``tm`` with every column on new_row's general path (field_cell, to_wire, _doc_value per column)."""
    columns = {}
    for name, cm in tm.columns.items():
        general = dataclasses.replace(cm)
        object.__setattr__(general, "plain", "")
        columns[name] = general
    return dataclasses.replace(tm, columns=columns)


def _made(tm: Any, doc: dict[str, Any]) -> Any:
    try:
        return new_row(tm, doc)
    except (nbdb.ValidationError, nbdb.UnsupportedError, TypeError) as exc:
        return (type(exc), str(exc))


_TEXT = st.text(max_size=6) | st.sampled_from(["", "\ufffex", "a\x00b"])  # the last two are stored escaped
_VALUES = st.one_of(
    st.none(),
    _TEXT,
    st.booleans(),
    st.integers(-3, 3),
    st.floats(allow_nan=False, width=16),
    st.lists(_TEXT, max_size=4),
    st.lists(_TEXT | st.integers(0, 3) | st.none(), max_size=3),
    st.tuples(_TEXT),
    st.dictionaries(_TEXT, _TEXT, max_size=4),
    st.dictionaries(_TEXT, _TEXT | st.integers(0, 3) | st.none(), max_size=3),
)


@pytest.mark.skipif(_NB is None, reason="the OVN Northbound schema is not installed (Debian package ovn-common)")
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ovn_objects(_MAPPED or OVN_MODELS), st.data())
def test_a_new_rows_plain_columns_are_what_the_general_path_makes_of_them(obj: Model, data: st.DataObject) -> None:
    """The one-step path of OVN's column shapes gives the cells, datums and values (or error) the general one does.

    For a model's own document, and for that document with any of its mapped fields set to a
    value of another shape (which takes the general path, and its errors).
    """
    assert _NB is not None
    tm = _NB.get(type(obj).nbdb_table)
    doc = json.loads(encode(obj))
    assert _made(tm, doc) == _made(_general(tm), doc)
    changed = dict(doc)
    for name in data.draw(st.lists(st.sampled_from(sorted(tm.columns)), max_size=3, unique=True)):
        changed[name] = data.draw(_VALUES)
    assert _made(tm, changed) == _made(_general(tm), changed)
