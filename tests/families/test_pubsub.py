"""The pub/sub family's pure logic, without a server: the entry codec and the merging of several logs.

The logs here are an in-process model of what a store of this family keeps (Redis
streams, Hazelcast ring buffers): one log per topic plus the whole-namespace log,
a commit log of (revision, token) trimmed from the front, and an atomic read of
all of them at one instant with at most ``limit`` entries per log.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbdb import errors
from nbdb.families.kvtypes import KeyChange
from nbdb.families.pubsub import (
    GENESIS,
    ChangeLogBackend,
    ChangeLogReader,
    LogEntry,
    LogKeyStream,
    LogRead,
    decode_changes,
    encode_changes,
    refuse_stored_format,
)

TOPICS = ("a", "b", "c")
WHOLE = "log"


@dataclass
class Logs:
    """A store's logs: one per topic and one for everything, plus the commit log."""

    logs: dict[str, list[LogEntry]] = field(default_factory=lambda: {WHOLE: [], **{f"log:{t}": [] for t in TOPICS}})
    commits: list[tuple[int, str]] = field(default_factory=list)
    trimmed: int = 0
    """Revisions up to this one are gone from the commit log."""

    @property
    def head(self) -> int:
        return self.commits[-1][0] if self.commits else 0

    def commit(self, keys: Sequence[tuple[str, str]]) -> int:
        """One atomic commit writing ``keys`` ((topic, name) pairs) into every log that covers them."""
        revision = self.head + 1
        token = f"t{revision}"
        changes = [KeyChange(f"o/{topic}/{name}", b"v%d" % revision, 1, None, 0, revision) for topic, name in keys]
        self.logs[WHOLE].append(LogEntry(revision, token, tuple(changes)))
        for topic in sorted({t for t, _ in keys}):
            mine = tuple(c for c in changes if c.key.startswith(f"o/{topic}/"))
            self.logs[f"log:{topic}"].append(LogEntry(revision, token, mine))
        self.commits.append((revision, token))
        return revision

    def anchor(self, revision: int) -> str | None:
        if revision == 0:
            return GENESIS if self.trimmed == 0 else None
        return next((t for r, t in self.commits if r == revision and r > self.trimmed), None)


class Reader(ChangeLogReader):
    def __init__(self, store: Logs) -> None:
        self.store = store

    def read(self, logs: Sequence[str], after: int, limit: int) -> LogRead:
        entries, truncated = {}, set()
        for name in logs:
            newer = [e for e in self.store.logs[name] if e.revision > after]
            entries[name] = newer[:limit]
            if len(newer) > limit:
                truncated.add(name)
        head = self.store.head
        head_token = self.store.commits[-1][1] if self.store.commits else GENESIS
        return LogRead(head, head_token, self.store.anchor(after), entries, frozenset(truncated))

    def wait(self, logs: Sequence[str], after: int, timeout: float) -> None:
        return None

    def close(self) -> None:
        return None


class Tokens:
    """The part of a ChangeLogBackend a stream uses: the read limit and the memory of tokens."""

    def __init__(self, limit: int) -> None:
        self.log_read_limit = limit
        self.tokens: dict[int, str] = {}

    def remember_token(self, revision: int, token: str) -> None:
        self.tokens[revision] = token


def stream(
    store: Logs,
    logs: Sequence[str],
    prefixes: Sequence[str],
    since: int = 0,
    limit: int = 1000,
    reader: Reader | None = None,
    tokens: Tokens | None = None,
) -> LogKeyStream:
    backend = cast(ChangeLogBackend, tokens or Tokens(limit))
    token = GENESIS if since == 0 else store.anchor(since)
    return LogKeyStream(backend, reader or Reader(store), logs, prefixes, since, token)


# ---------------------------------------------------------------- the entry codec

key_changes = st.builds(
    KeyChange,
    key=st.text(min_size=1, max_size=20),
    value=st.none() | st.binary(max_size=40),
    version=st.integers(min_value=0, max_value=2**40),
    prev_value=st.none() | st.binary(max_size=40),
    prev_version=st.integers(min_value=0, max_value=2**40),
    revision=st.just(7),
)


@given(st.lists(key_changes, max_size=8))
def test_an_entry_decodes_to_the_changes_it_encoded(changes: list[KeyChange]) -> None:
    assert decode_changes(encode_changes(changes), 7) == tuple(changes)


@given(st.lists(key_changes, min_size=1, max_size=4), st.data())
def test_a_cut_entry_is_lost_history_never_a_crash_or_a_wrong_change(changes: list[KeyChange], data: Any) -> None:
    blob = encode_changes(changes)
    cut = data.draw(st.integers(min_value=1, max_value=len(blob) - 1))
    try:
        decoded = decode_changes(blob[:cut], 7)
    except errors.HistoryGoneError as exc:
        assert "revision 7 is damaged" in str(exc)
    else:  # the cut fell between two changes: what decodes is exactly a prefix of them
        assert decoded == tuple(changes[: len(decoded)])


def test_an_entry_without_a_version_is_damaged() -> None:
    blob = encode_changes([KeyChange("k", b"v", 1, None, 0, 1)])
    broken = blob.replace(b"\x00\x00\x00\x011", b"\xff\xff\xff\xff", 1)  # the version field becomes None
    with pytest.raises(errors.HistoryGoneError, match="damaged"):
        decode_changes(broken, 1)


# ---------------------------------------------------------------- merging logs

commits = st.lists(
    st.lists(st.tuples(st.sampled_from(TOPICS), st.sampled_from("xyz")), min_size=1, max_size=4, unique=True),
    min_size=1,
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(commits, st.sets(st.sampled_from(TOPICS), min_size=1), st.integers(min_value=1, max_value=4), st.data())
def test_merged_logs_deliver_every_change_once_in_order_and_no_commit_in_halves(
    plan: list[list[tuple[str, str]]], followed: set[str], limit: int, data: Any
) -> None:
    store = Logs()
    logs = [f"log:{t}" for t in sorted(followed)]
    prefixes = [f"o/{t}/" for t in sorted(followed)]
    s = stream(store, logs, prefixes, limit=limit)
    polls: list[list[KeyChange]] = []
    for keys in plan:
        store.commit(keys)
        if data.draw(st.booleans()):  # watchers poll at any moment between commits
            polls.append(s.poll(0))
    while (more := s.poll(0)) or s.revision < store.head:
        polls.append(more)
    seen = [c for batch in polls for c in batch]
    want = [c for e in store.logs[WHOLE] for c in e.changes if c.key.startswith(tuple(prefixes))]
    # All, once, in revision order (within one commit, changes come in no particular order).
    assert sorted(seen, key=lambda c: (c.revision, c.key)) == sorted(want, key=lambda c: (c.revision, c.key))
    assert [c.revision for c in seen] == sorted(c.revision for c in seen)
    for batch in polls:  # a revision's changes never straddle two polls
        for other in polls:
            if other is not batch:
                assert not {c.revision for c in batch} & {c.revision for c in other}
    assert s.revision == store.head


def test_a_stream_resumes_from_its_revision_with_the_same_changes_as_one_that_never_stopped() -> None:
    store = Logs()
    for i, topic in zip(range(12), itertools.cycle(TOPICS), strict=False):
        store.commit([(topic, f"k{i}")])
    whole = stream(store, [WHOLE], ["o/"], limit=5)
    first = whole.poll(0)
    resumed = stream(store, [WHOLE], ["o/"], since=whole.revision, limit=5)
    rest = [c for batch in iter(lambda: resumed.poll(0), []) for c in batch]
    assert [c.revision for c in first + rest] == list(range(1, 13))


def test_trimmed_history_under_a_reader_is_history_gone() -> None:
    store = Logs()
    store.commit([("a", "x")])
    s = stream(store, ["log:a"], ["o/a/"])
    assert [c.key for c in s.poll(0)] == ["o/a/x"]
    store.commit([("a", "y")])
    store.trimmed = 1  # the commit log dropped revision 1, where the stream stands
    with pytest.raises(errors.HistoryGoneError, match="trimmed or compacted"):
        s.poll(0)


def test_a_server_that_lost_its_data_and_reached_the_same_revision_again_is_history_gone() -> None:
    store = Logs()
    store.commit([("a", "x")])
    reader = Reader(store)
    s = stream(store, ["log:a"], ["o/a/"], reader=reader)
    s.poll(0)
    replaced = Logs()  # restarted empty, then written by others up to the same revision
    replaced.commits.append((1, "another"))
    reader.store = replaced  # the same connection now reaches the new server
    with pytest.raises(errors.HistoryGoneError, match="rewritten"):
        s.poll(0)


def test_a_stream_remembers_the_tokens_it_passes() -> None:
    store = Logs()
    tokens = Tokens(1000)
    s = stream(store, [WHOLE], ["o/"], tokens=tokens)
    for topic in TOPICS:
        store.commit([(topic, "k")])
    s.poll(0)
    assert tokens.tokens[store.head] == store.commits[-1][1]


# ---------------------------------------------------------------- stored format marks


@given(found=st.text(max_size=4), expected=st.sampled_from(["2", "3"]))
def test_only_the_expected_stored_format_is_accepted(found: str, expected: str) -> None:
    if found == expected:
        refuse_stored_format(found, expected, where="kv: namespace 'n'", page="docs/x.md")
        return
    with pytest.raises(errors.StoredFormatError) as refused:
        refuse_stored_format(found, expected, where="kv: namespace 'n'", page="docs/x.md")
    assert (refused.value.found, refused.value.expected) == (found, expected)
    message = str(refused.value)
    assert message.startswith("kv: namespace 'n' holds nbdb's stored format") and "docs/x.md" in message
    older = found.isdecimal() and int(found) < int(expected)
    # An older format is moved with the nbdb that wrote it; a newer or unknown one needs that nbdb.
    assert ("nbdb dump" in message and "nbdb load" in message) == older
    assert ("upgrade nbdb" in message) == (not older)
