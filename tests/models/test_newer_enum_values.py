"""A value a newer schema added to an enumerated column (nbdb.models.enums): read only where the store vouches for it.

No server: the codec given the bytes an OVSDB replica hands out (:class:`nbdb.spi.CheckedData`) and
the plain bytes any store of records holds; the real server's side is in tests/backends/test_ovsdb_skew.py.
"""

from __future__ import annotations

import copy
import json
import pickle
import uuid
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nbdb
from nbdb import codec
from nbdb.commit_context import refuse_newer_values
from nbdb.models import (
    LoadBalancer,
    LoadBalancerField,
    LoadBalancerProtocol,
    LogicalRouterPolicy,
    RouterPolicyAction,
)
from nbdb.models.enums import is_newer, newer_held, newer_value
from nbdb.spi import CheckedData, Record
from nbdb.writes import put_of

_KNOWN = {member.value for member in RouterPolicyAction}
_TEXT = st.text(min_size=1, max_size=12).filter(lambda t: t not in _KNOWN)


def _policy_bytes(action: str) -> tuple[uuid.UUID, bytes]:
    obj = LogicalRouterPolicy(router=uuid.uuid4(), priority=7, match="ip4", action="allow")
    document = json.loads(codec.encode(obj))
    document["action"] = action
    return obj.id, json.dumps(document, sort_keys=True).encode()


def _record(id: uuid.UUID, data: bytes) -> Record:
    return Record("LogicalRouterPolicy", id, None, 3, data, None)


@settings(max_examples=60, deadline=None)
@given(text=_TEXT, other=_TEXT)
def test_a_value_outside_the_enum_reads_only_where_the_store_admits_it_and_is_written_back_as_read(
    text: str, other: str
) -> None:
    id, data = _policy_bytes(text)
    # A store of records (memory, Redis...): another writer's text outside the enum is a corrupt record.
    with pytest.raises(nbdb.CorruptRecordError, match="Input should be 'allow', 'drop' or 'reroute'"):
        codec.decode(LogicalRouterPolicy, _record(id, data))
    # The store's schema admits it (OVSDB, whose server checked it): read as that text.
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no serializer warning: encode, dump, plain
        policy = codec.decode(LogicalRouterPolicy, _record(id, CheckedData(data, {"action": frozenset({text})})))
        assert (
            policy.action == text
            and is_newer(policy.action)
            and isinstance(policy.action, RouterPolicyAction)
            and policy.action.value == text
        )
        assert (policy.priority, policy.version) == (7, 3)
        moved = policy.replace(priority=8)  # validated again: kept
        assert moved.action is policy.action
        assert json.loads(codec.encode(moved))["action"] == text
        assert moved.model_dump(mode="json")["action"] == text and codec.plain(moved)["action"] == text
    # Admitted for another value or another field only: still corrupt.
    if other != text:
        with pytest.raises(nbdb.CorruptRecordError):
            record = _record(id, CheckedData(data, {"action": frozenset({other})}))
            codec.decode(LogicalRouterPolicy, record, share=False)
    with pytest.raises(nbdb.CorruptRecordError):
        codec.decode(LogicalRouterPolicy, _record(id, CheckedData(data, {"match": frozenset({text})})), share=False)
    # Plain input stays checked: the caller's text outside the enum is refused, this text too.
    with pytest.raises(nbdb.ValidationError, match="Input should be 'allow', 'drop' or 'reroute'"):
        policy.replace(action=text)


def test_a_newer_value_of_one_enum_is_refused_by_a_field_of_another() -> None:
    lb = LoadBalancer(protocol="tcp")
    with pytest.raises(nbdb.ValidationError):
        lb.replace(protocol=newer_value(RouterPolicyAction, "jump"))
    kept = lb.replace(protocol=newer_value(LoadBalancerProtocol, "quic"))
    assert kept.protocol == "quic"


def test_newer_values_in_a_list_and_an_optional_field_read_and_are_found_for_the_write_check() -> None:
    lb = LoadBalancer(protocol="tcp", selection_fields=["eth_src", "ip_dst"])
    document = json.loads(codec.encode(lb))
    document["protocol"], document["selection_fields"] = "quic", ["eth_src", "ipv6_label"]
    data = json.dumps(document).encode()
    admitted = {"protocol": frozenset({"quic"}), "selection_fields": frozenset({"ipv6_label"})}
    read = codec.decode(LoadBalancer, Record("LoadBalancer", lb.id, None, 1, CheckedData(data, admitted), None))
    assert read.protocol == "quic" and read.selection_fields == [LoadBalancerField.ETH_SRC, "ipv6_label"]
    assert newer_held(read) == {"protocol": ["quic"], "selection_fields": ["ipv6_label"]}
    assert newer_held(lb) == {}
    # A store of records checks no enum: the write is refused before it is sent.
    put, _ = put_of(read.replace(name="lb"), 1)
    with pytest.raises(nbdb.ValidationError, match=r"protocol = 'quic'; selection_fields = 'ipv6_label'"):
        refuse_newer_values([put])
    refuse_newer_values([put_of(lb, 1)[0]])  # an ordinary object: nothing to refuse


def test_checked_bytes_are_equal_to_the_plain_bytes_but_never_share_their_decoded_copy() -> None:
    id, data = _policy_bytes("jump")
    checked = CheckedData(data, {"action": frozenset({"jump"})})
    assert checked == data and hash(checked) != hash(data)
    assert codec.decode(LogicalRouterPolicy, _record(id, checked)).action == "jump"
    with pytest.raises(nbdb.CorruptRecordError):  # not the memo's copy of the checked bytes
        codec.decode(LogicalRouterPolicy, _record(id, data))


def test_a_copy_holding_a_newer_value_pickles_and_copies_with_it() -> None:
    policy = LogicalRouterPolicy(router=uuid.uuid4(), priority=1, match="ip4", action="allow")
    policy = policy.replace(action=newer_value(RouterPolicyAction, "jump"))
    for again in (pickle.loads(pickle.dumps(policy)), copy.deepcopy(policy), copy.copy(policy)):
        assert again == policy and again.action is policy.action
