"""Newer enum members at the edges: normalised lists, map keys and nested models, the decode memo, pickling, a race."""

from __future__ import annotations

import copy
import json
import pickle
import threading
import uuid
from typing import Annotated, Any, ClassVar

import pydantic
import pytest
from pydantic import AfterValidator

import nbdb
from nbdb import codec
from nbdb.models import LoadBalancer, LoadBalancerProtocol, LogicalRouterPolicy, Model, RouterPolicyAction, enums
from nbdb.spi import CheckedData, Record


class _SortedActions(Model):
    """A user's model whose list of an enum is kept sorted by its own validator (as many normalise sets)."""

    nbdb_table: ClassVar[str] = "NewerSortedActions"
    actions: Annotated[list[RouterPolicyAction], AfterValidator(sorted)] = []


def test_a_newer_value_in_a_normalised_list_keeps_the_other_values() -> None:
    # The decoder validates with a placeholder member in the newer value's place, then puts the newer
    # member at the input's index in the *validated* list: a validator that reorders moved the placeholder,
    # so a stored value is lost and the placeholder ("allow", never stored) is invented.
    obj = _SortedActions()
    document = json.loads(codec.encode(obj))
    document["actions"] = ["reroute", "jump", "drop"]
    data = CheckedData(json.dumps(document).encode(), {"actions": frozenset({"jump"})})
    try:
        read = codec.decode(_SortedActions, Record(_SortedActions.nbdb_table, obj.id, None, 1, data, None))
    except nbdb.CorruptRecordError:
        return  # refusing to read it is sound; reading another value is not
    assert sorted(map(str, read.actions)) == ["drop", "jump", "reroute"]


def _policy_bytes(action: str) -> tuple[uuid.UUID, bytes]:
    obj = LogicalRouterPolicy(router=uuid.uuid4(), priority=7, match="ip4", action="allow")
    document = json.loads(codec.encode(obj))
    document["action"] = action
    return obj.id, json.dumps(document, sort_keys=True).encode()


def test_the_decode_memo_does_not_lend_one_stores_admitted_read_to_bytes_another_store_does_not_vouch_for() -> None:
    id, data = _policy_bytes("jump")
    admitted = CheckedData(data, {"action": frozenset({"jump"})})
    assert (
        codec.decode(LogicalRouterPolicy, Record("LogicalRouterPolicy", id, None, 3, admitted, None)).action == "jump"
    )
    # The same bytes from a store whose schema admits another value only: "jump" is not vouched for there.
    other = CheckedData(data, {"action": frozenset({"hop"})})
    with pytest.raises(nbdb.CorruptRecordError):
        codec.decode(LogicalRouterPolicy, Record("LogicalRouterPolicy", id, None, 3, other, None))


def test_checked_bytes_pickle_and_copy_like_the_bytes_of_any_record() -> None:
    data = CheckedData(b'{"a":1}', {"action": frozenset({"jump"})})
    record = Record("LogicalRouterPolicy", uuid.uuid4(), None, 1, data, None)
    for again in (pickle.loads(pickle.dumps(record)).data, copy.copy(data), copy.deepcopy(data)):
        assert again == data and getattr(again, "admitted", None) == data.admitted


def test_a_newer_member_handed_out_before_the_flag_is_set_is_still_refused_by_a_store_of_records(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    # newer_value publishes the member in _MEMBERS before it sets MADE: a second thread reading the same
    # value in between gets it from the lock-free fast path while MADE is still empty, and its write to a
    # store of records is not checked (stored, then every read is a CorruptRecordError).
    text = f"quic-{uuid.uuid4().hex[:6]}"
    outcome: dict[str, Any] = {}
    url = f"sqlite:///{tmp_path}/race.db"
    db = nbdb.connect(url)

    def other_thread() -> None:
        member = enums.newer_value(LoadBalancerProtocol, text)  # the fast path: no lock taken
        try:
            outcome["created"] = db.create(LoadBalancer(protocol="tcp").replace(protocol=member))
        except nbdb.ValidationError as exc:
            outcome["refused"] = exc

    class _Members(dict):  # type: ignore[type-arg]
        def __setitem__(self, key: Any, value: Any) -> None:
            super().__setitem__(key, value)
            thread = threading.Thread(target=other_thread)
            thread.start()
            thread.join(10)

    monkeypatch.setattr(enums, "MADE", [])
    monkeypatch.setattr(enums, "_MEMBERS", _Members())
    try:
        enums.newer_value(LoadBalancerProtocol, text)
        created = outcome.get("created")
        if created is not None:
            with nbdb.connect(url) as again, pytest.raises(nbdb.CorruptRecordError):
                again.get(LoadBalancer, created.id)  # what it stored: no reader can read it
        assert "refused" in outcome, f"stored unchecked: {created!r}"
    finally:
        db.close()


class _Hop(pydantic.BaseModel):
    action: RouterPolicyAction


class _Keyed(Model):
    """A user's model holding an enum as a map's key and in a nested model's field."""

    nbdb_table: ClassVar[str] = "NewerKeyed"
    weights: dict[RouterPolicyAction, int] = {}
    hops: list[_Hop] = []


@pytest.mark.parametrize("where", ["map key", "nested model"])
def test_a_newer_member_held_as_a_map_key_or_in_a_nested_model_is_refused_by_a_store_of_records(
    where: str, tmp_path: Any
) -> None:
    # newer_held looks at a field itself, a list's items and a map's values only: a newer member read from
    # OVSDB and put in a map's key or a nested model's field is written unchecked, and no reader reads it.
    jump = enums.newer_value(RouterPolicyAction, "jump")
    obj = _Keyed(weights={jump: 1}) if where == "map key" else _Keyed(hops=[_Hop(action=jump)])
    url = f"sqlite:///{tmp_path}/keyed.db"
    with nbdb.connect(url) as db:
        try:
            created = db.create(obj)
        except nbdb.ValidationError:
            return  # refused before anything is written: sound
        with nbdb.connect(url) as again, pytest.raises(nbdb.CorruptRecordError):
            again.get(_Keyed, created.id)
        pytest.fail(f"stored unchecked, unreadable: {created!r}")
