"""The member commit task's bytes, laid out in one go, equal what the client's field-by-field writer makes.

``CommitTask.write_data`` hands the members one pre-built buffer (``encode_task``) instead of a
writer call per field; the members' ``CommitTask.readData`` reads fields. This pins the two layouts
together for any commit, in both byte orders, with the client's own serializer as the oracle. No
server: pure logic.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbdb.families.kv import CommitToken, Exists, KeyCommit, LeaseHeld, PrefixUnchangedSince, VersionIs

pytest.importorskip("hazelcast")

from hazelcast.config import Config
from hazelcast.serialization.api import ObjectDataOutput
from hazelcast.serialization.service import SerializationServiceV1

from nbdb.backends.hazelcast._member import CommitTask, _condition, factories


class FieldByField(CommitTask):
    """The task written with one ``ObjectDataOutput`` call per field, as ``CommitTask.java`` reads it."""

    def write_data(self, out: ObjectDataOutput) -> None:
        for name in self.maps:
            out.write_string(name)
        out.write_string(self.object_prefix)
        out.write_string(self.anchor)
        out.write_long(round(self.lock_lease * 1000))
        out.write_long(round(self.lock_wait * 1000))
        out.write_int(len(self.commits))
        for commit in self.commits:
            out.write_int(len(commit.conditions))
            for condition in commit.conditions:
                kind, key, number, token = _condition(condition)
                out.write_byte(kind)
                out.write_string(key)
                out.write_long(number)
                out.write_byte_array(bytearray(token))
            ttls = {commit.token.key: commit.token.ttl} if commit.token is not None else {}
            out.write_string_array(list(commit.puts))
            for value in commit.puts.values():
                out.write_byte_array(bytearray(value))
            out.write_long_array([round(ttls.get(key, 0.0) * 1000) for key in commit.puts])
            out.write_string_array(list(commit.deletes))


def _service(big_endian: bool) -> SerializationServiceV1:
    config = Config()
    config.is_big_endian = big_endian
    config.data_serializable_factories = factories()
    return SerializationServiceV1(config)


_keys = st.text(min_size=0, max_size=12)  # any text: UTF-8 lengths differ from character counts
_conditions = st.one_of(
    st.builds(VersionIs, _keys, st.integers(0, 2**62)),
    st.builds(Exists, _keys),
    st.builds(LeaseHeld, _keys, st.binary(max_size=16)),
    st.builds(PrefixUnchangedSince, _keys, st.integers(0, 2**62)),
)


@st.composite
def _commits(draw: st.DrawFn) -> KeyCommit:
    puts = draw(st.dictionaries(_keys, st.binary(max_size=40), max_size=5))
    token = None
    if puts and draw(st.booleans()):
        token = CommitToken(draw(st.sampled_from(sorted(puts))), draw(st.floats(0, 1e6)))
    return KeyCommit(draw(st.lists(_conditions, max_size=5)), puts, draw(st.lists(_keys, max_size=4)), token)


@settings(max_examples=200, deadline=None)
@given(
    maps=st.tuples(_keys, _keys, _keys, _keys),
    prefix=_keys,
    anchor=st.text(alphabet="0123456789abcdef", min_size=24, max_size=24),
    lease=st.floats(0, 1e5),
    wait=st.floats(0, 1e5),
    commits=st.lists(_commits(), max_size=4),
    big_endian=st.booleans(),
)
def test_the_task_is_the_bytes_of_its_fields(
    maps: tuple[str, str, str, str],
    prefix: str,
    anchor: str,
    lease: float,
    wait: float,
    commits: list[KeyCommit],
    big_endian: bool,
) -> None:
    service = _service(big_endian)
    args = (maps, prefix, anchor, lease, wait, commits)
    assert service.to_data(CommitTask(*args)).buffer == service.to_data(FieldByField(*args)).buffer


def test_a_create_is_the_bytes_of_its_fields() -> None:
    """A commit shaped like a port's create (the property test's examples may be mostly empty)."""
    commit = KeyCommit(
        [VersionIs("o/t/ports/1", 0), Exists("o/t/switches/9"), VersionIs("t/abc", 0)],
        {"o/t/ports/1": b'{"name": "p\xc3\xa9"}', "i/ports/1": b"o/t/ports/1", "t/abc": b"1"},
        [],
        CommitToken("t/abc", 600.0),
    )
    args = (("kv", "log", "meta", "lease"), "o/", "0" * 24, 30.0, 5.0, [commit])
    service = _service(True)
    assert service.to_data(CommitTask(*args)).buffer == service.to_data(FieldByField(*args)).buffer
