"""Hazelcast backend: what the conformance kit cannot cover.

URL grammar and what the open-source server cannot do, the cluster name as the shared
secret, settling a commit whose reply was lost, gap-free streams under concurrent writers,
history trimming, foreign data in the maps, and a member killed during writes with a cache
and a watch running — all against real members from nbdb.testing.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import nbdb
from nbdb import errors
from nbdb.conformance.kit import KitParent, eventually
from nbdb.families.kv import CommitToken
from nbdb.models.ovn import LogicalSwitch
from nbdb.testing import HazelcastServer, Member, Server
from nbdb.testing.fixtures import hazelcast_cluster, hazelcast_server, server_factory  # noqa: F401

pytest.importorskip("hazelcast")

from nbdb.backends.hazelcast import HazelcastBackend, parse_url
from nbdb.backends.hazelcast._records import decode_kv, encode_kv, listed_rows

from .conftest import another_protocol, assert_reactor_wake_up_kept, median_get_ms

log = logging.getLogger(__name__)


def _ns() -> str:
    return "t" + uuid.uuid4().hex[:10]


# ---------------------------------------------------------------- no server


def test_url_grammar() -> None:
    config = parse_url("hazelcast://10.0.0.1:5701,10.0.0.2/prod?namespace=a.b&history=50", {"timeout": "3"})
    assert config.members == (("10.0.0.1", 5701), ("10.0.0.2", 5701))
    assert (config.cluster_name, config.namespace, config.history, config.timeout) == ("prod", "a.b", 50, 3.0)
    assert parse_url("hazelcast://h", {}).cluster_name == "dev"  # Hazelcast's default cluster name
    assert "prod" not in repr(config)  # the cluster name is the cluster's secret
    for bad in ("hazelcast://h/a/b", "hazelcast://h:x/c", "hazelcast://h/c?history=0", "hazelcast://h/c?nope=1"):
        with pytest.raises(errors.ValidationError):
            parse_url(bad, {})
    with pytest.raises(errors.ValidationError):
        parse_url("hazelcast://h/c", {"namespace": "a/b"})


@given(probes=st.integers(-(2**40), 2**40), keyword=st.booleans())
def test_member_probes_is_a_whole_number_from_zero(probes: int, keyword: bool) -> None:
    """The probe window after a membership change is an option (docs/backends/hazelcast.md, "Member commits
    come back"): 7 when absent, any whole number from 0 (0: no timed re-probes); anything else is a
    ValidationError naming it, from the URL or a keyword (it was an unknown option before)."""
    assert parse_url("hazelcast://h/c", {}).member_probes == 7
    url, options = (
        ("hazelcast://h/c", {"member_probes": probes}) if keyword else (f"hazelcast://h/c?member_probes={probes}", {})
    )
    if probes < 0:
        with pytest.raises(errors.ValidationError, match="member_probes"):
            parse_url(url, options)
    else:
        assert parse_url(url, options).member_probes == probes


@pytest.mark.parametrize("bad", ["x", "1.5", "", "true"])
def test_member_probes_refuses_what_is_not_a_whole_number(bad: str) -> None:
    for url, options in ((f"hazelcast://h/c?member_probes={bad}", {}), ("hazelcast://h/c", {"member_probes": bad})):
        with pytest.raises(errors.ValidationError, match="member_probes"):
            parse_url(url, options)


@pytest.mark.parametrize(
    "url",
    [
        "hazelcast://user:secret@h/c",
        "hazelcast://h/c?ssl=1",
        "hazelcast://h/c?username=u",
        "hazelcast://h/c?ssl_cafile=/ca.pem",
    ],
)
def test_enterprise_only_features_are_refused_clearly(url: str) -> None:
    with pytest.raises(errors.UnsupportedError, match="Enterprise") as info:
        parse_url(url, {})
    assert "secret" not in str(info.value)


@given(
    version=st.integers(0, 2**62),
    revision=st.integers(0, 2**62),
    value=st.binary(max_size=64),
)
def test_stored_key_round_trip(version: int, revision: int, value: bytes) -> None:
    from nbdb.backends.hazelcast._records import decode_kv, encode_kv

    kv = decode_kv("o/~/T/x", encode_kv(version, revision, value))
    assert kv is not None and (kv.version, kv.mod_revision, kv.value) == (version, revision, value)


@given(st.one_of(st.text(max_size=8), st.binary(max_size=15), st.integers()))
def test_foreign_values_are_corrupt_records(raw: object) -> None:
    from nbdb.backends.hazelcast._records import decode_kv

    with pytest.raises(errors.CorruptRecordError):
        decode_kv("o/~/T/x", raw)


_RAW = st.one_of(
    st.none(),
    st.text(max_size=8),
    st.integers(),
    st.binary(max_size=40),
    st.builds(bytearray, st.binary(max_size=40)),
    st.builds(encode_kv, st.integers(0, 2**62), st.integers(0, 2**62), st.binary(max_size=24)),
)


@given(st.lists(st.tuples(st.sampled_from(["o/~/T/", "o/t1/T/", "r/T/", "o/~/U/", "x"]), st.text(max_size=3), _RAW)))
def test_a_scans_rows_are_what_decode_kv_lists(items: list[tuple[str, str, object]]) -> None:
    # range_rows reads the usual stored value inline: each row is what range_keys's decode_kv gives the same
    # item (a key left out, a foreign object record kept at a version that is no number), or the same error;
    # its mod revision too (the revision that wrote it: a listed copy's compare-and-swap checks it).
    found = sorted({prefix + rest: raw for prefix, rest, raw in items}.items())
    prefixes = ["o/~/T/", "o/t1/", "r/T/"]

    def listed() -> list[tuple[object, ...]]:
        kvs = (decode_kv(key, raw, True) for key, raw in found if key.startswith(tuple(prefixes)))
        return [(kv.key, kv.value, kv.version, kv.mod_revision) for kv in kvs if kv is not None]

    try:
        expected: object = listed()
    except errors.CorruptRecordError as exc:
        expected = str(exc)
    try:
        got: object = [tuple(row[:4]) for row in listed_rows(found, prefixes)]  # the mod revision too (a record's)
    except errors.CorruptRecordError as exc:
        got = str(exc)
    assert got == expected


def test_unreachable_cluster_fails_fast() -> None:
    began = time.monotonic()
    with pytest.raises(errors.BackendUnavailableError):
        nbdb.connect("hazelcast://127.0.0.1:1/nbdb?connect_timeout=1")
    assert time.monotonic() - began < 15


# ---------------------------------------------------------------- one member


@pytest.mark.timeout(120)
def test_an_outage_longer_than_the_connect_timeout_is_survived(
    server_factory: Callable[..., Server],  # noqa: F811
) -> None:
    """The client reconnects after any outage: it used to shut itself down after ``connect_timeout``.

    A Database whose cluster was away for longer than that failed every later call with "Client
    is not active", even once the cluster was back: a controller had to be restarted.
    """
    server = server_factory("hazelcast")
    member = server.members[0]
    with nbdb.connect(f"{server.url}?connect_timeout=1&timeout=2", namespace=_ns()) as db:
        db.create(LogicalSwitch(name="before"))
        member.stop()
        began = time.monotonic()
        with pytest.raises(errors.BackendUnavailableError):
            db.list(LogicalSwitch)
        assert time.monotonic() - began < 10, "a call during the outage must fail within its deadline"
        time.sleep(3)  # three times the connect timeout
        member.restart()
        server.wait_ready()

        def works() -> bool:
            try:
                db.create(LogicalSwitch(name="after"))
            except errors.BackendUnavailableError:
                return False
            return True

        assert eventually(works, timeout=20, interval=0.2), "the Database never worked again after the outage"
        assert "after" in {s.name for s in db.list(LogicalSwitch)}


@pytest.mark.timeout(120)
def test_a_call_during_a_short_reconnect_waits_for_it(
    server_factory: Callable[..., Server],  # noqa: F811
) -> None:
    """A call made while the client reconnects waits for the cluster within its own ``timeout``.

    The client refuses every request at once while it has no connection (``ClientOfflineError``):
    retried only ``retries`` times (about 0.6 s in all), a call failed although the member was back
    well within the call's timeout; before the client reconnected in the background, the client
    itself waited through the reconnect.
    """
    server = server_factory("hazelcast")
    member = server.members[0]
    with nbdb.connect(f"{server.url}?timeout=60&connect_timeout=60", namespace=_ns()) as db:
        db.create(LogicalSwitch(name="before"))  # (a lone member restarts empty)
        member.stop()
        outcome: dict[str, BaseException | None] = {}

        def run(name: str, call: Callable[[], object]) -> None:
            try:
                call()
            except BaseException as exc:  # judged in the test's thread
                outcome[name] = exc
            else:
                outcome[name] = None

        calls = {"write": lambda: db.create(LogicalSwitch(name="during")), "read": lambda: db.list(LogicalSwitch)}
        threads = [threading.Thread(target=run, args=item, daemon=True) for item in calls.items()]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        member.restart()  # returns once the member is ready (a few seconds, well within the 60 s)
        for thread in threads:
            thread.join(70)
        assert outcome == {"write": None, "read": None}, f"calls during a short reconnect failed: {outcome}"
        assert "during" in {s.name for s in db.list(LogicalSwitch)}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("member_commit", [False, True])
def test_once_offline_for_timeout_every_call_fails_at_once_never_sent(
    server_factory: Callable[..., Server],  # noqa: F811
    member_commit: bool,
) -> None:
    """Once the client has been without the cluster for ``timeout``, every call path is refused unsent, at once.

    Reads, the change log reader's read (what watches and caches call) and commits all fail with
    BackendUnavailableError (not CommitUnknownError: nothing was sent), within a bound far below
    the client's own timeout. Before, the log reader sent its reads and only then was refused (the request
    stayed queued in the client, retried until ``timeout`` and sent on reconnect); and a commit run
    in the member (the default with nbdb's jar) was not refused at all: it was sent, waited the
    client's whole ``timeout`` and ended as CommitUnknownError (4 s and 11 requests with timeout=2).
    """
    timeout = 3.0
    server = server_factory("hazelcast")
    url = f"{server.url}?timeout={timeout}&connect_timeout=1" + ("" if member_commit else "&member_commit=0")
    with nbdb.connect(url, namespace=_ns()) as db:
        backend = db.backend
        assert isinstance(backend, HazelcastBackend)
        assert backend.member_commit == member_commit
        kept = db.create(LogicalSwitch(name="kept"))
        reader = backend.open_log_reader()
        logs = backend.logs_for([backend.layout.objects])
        assert reader.read(logs, 0, 10).head >= 1  # the reader works before the outage
        server.members[0].stop()
        time.sleep(timeout + 1)
        calls: dict[str, Callable[[], object]] = {
            "log read": lambda: reader.read(logs, 0, 10),
            "get": lambda: db.get(LogicalSwitch, kept.id),
            "list": lambda: db.list(LogicalSwitch),
            "create": lambda: db.create(LogicalSwitch(name="during")),
            "update": lambda: db.update(kept.replace(name="during")),
        }
        seen = _outcomes(calls)
        # A read is refused at once; a commit after its retry policy's few pauses (about 0.6 s in all).
        bounds = {"log read": 0.5, "get": 0.5, "list": 0.5, "create": 1.5, "update": 1.5}
        wrong = {n: s for n, s in seen.items() if s[0] != "BackendUnavailableError" or s[1] > bounds[n]}
        assert not wrong, f"calls after {timeout + 1}s offline (error, seconds): {wrong}"


def _outcomes(calls: dict[str, Callable[[], object]], since: float | None = None) -> dict[str, tuple[str, float]]:
    """Each call made in turn: the nbdb error it raised (or "no error"), and the seconds from ``since`` (None: from
    the call's start) to its end."""
    seen: dict[str, tuple[str, float]] = {}
    for name, call in calls.items():
        began = time.monotonic() if since is None else since
        try:
            call()
        except errors.NbdbError as exc:
            seen[name] = (type(exc).__name__, round(time.monotonic() - began, 2))
        else:
            seen[name] = ("no error", round(time.monotonic() - began, 2))
    return seen


@pytest.mark.timeout(120)
def test_a_call_made_early_in_an_outage_gives_up_timeout_after_it_began(
    server_factory: Callable[..., Server],  # noqa: F811
) -> None:
    """A call made 1 s into an outage (timeout=3) fails unsent at the outage's start + timeout, about 2 s later.

    As OVSDB's calls do (:meth:`nbdb.retry.Outage.limit`). Before, it was handed to the client, which
    retried it until its own invocation timeout, ``timeout`` after the call began (3 s here, and
    ``timeout`` again for every call queued behind another); a commit then ended as CommitUnknownError
    though nothing could have been sent.
    """
    timeout = 3.0
    server = server_factory("hazelcast")
    with nbdb.connect(f"{server.url}?timeout={timeout}&connect_timeout=1", namespace=_ns()) as db:
        kept = db.create(LogicalSwitch(name="kept"))
        calls: dict[str, Callable[[], object]] = {
            "get": lambda: db.get(LogicalSwitch, kept.id),
            "create": lambda: db.create(LogicalSwitch(name="during")),
        }
        server.members[0].stop()
        down = time.monotonic()  # the client saw the connection close no earlier than this
        time.sleep(1.0)
        seen = _outcomes(calls, since=down)
        print(f"seconds since the outage began: {seen}")
        # The get waits for the reconnect and gives up at the outage's start + timeout (the client may
        # have seen the member go a moment before stop() returned); the create, made then, is refused
        # at once (after its retry policy's few short pauses).
        bounds = {"get": (timeout - 0.5, timeout + 0.6), "create": (0.0, timeout + 1.5)}
        wrong = {
            n: s
            for n, s in seen.items()
            if s[0] != "BackendUnavailableError" or not bounds[n][0] <= s[1] <= bounds[n][1]
        }
        assert not wrong, f"calls made 1 s into a {timeout}s-timeout outage (error, seconds since it began): {wrong}"


@pytest.mark.timeout(60)
def test_wrong_cluster_name_is_an_auth_error(hazelcast_server: HazelcastServer) -> None:  # noqa: F811
    url = f"hazelcast://{hazelcast_server.members[0].address}/not-the-secret?connect_timeout=2"
    with pytest.raises(errors.AuthError, match="cluster name"):
        nbdb.connect(url)


@pytest.mark.timeout(60)
def test_settling_a_commit_token(hazelcast_server: HazelcastServer) -> None:  # noqa: F811
    """What the family does after a lost reply: a landed token is found, an absent one is voided for good."""
    with nbdb.connect(hazelcast_server.url, namespace=_ns()) as db:
        backend = db.backend
        assert isinstance(backend, HazelcastBackend)
        landed = CommitToken(backend.layout.token("a" * 24), 60.0)
        revision = backend.commit_with_token([], {"x/landed": b"1"}, [], landed)
        assert revision is not None
        assert backend.void_token(landed) == revision  # it had applied: the family returns its revision
        lost = CommitToken(backend.layout.token("b" * 24), 60.0)
        assert backend.void_token(lost) is None  # never applied, and now it never will
        assert backend.commit_with_token([], {"x/lost": b"1"}, [], lost) is None
        assert backend.get_key("x/lost") is None


@pytest.mark.timeout(60)
@pytest.mark.parametrize("condition_fails_first", [False, True])
def test_a_decided_commit_of_a_dead_client_is_applied_by_the_next(
    hazelcast_server: HazelcastServer,  # noqa: F811
    condition_fails_first: bool,
) -> None:
    """A client that wrote its log entry (the decision) and died before applying it: the next commit applies it.

    Its writes land whole, at its revision, before the next commit's own; a condition that
    failed on the unapplied state is checked again once it is applied.
    """
    from nbdb.backends.hazelcast._records import Redo, encode_entry, encode_kv
    from nbdb.families.kv import VersionIs

    with nbdb.connect(hazelcast_server.url, namespace=_ns()) as db:
        backend = db.backend
        assert isinstance(backend, HazelcastBackend)
        assert backend.commit_keys([], {"x/before": b"0"}, []) is not None
        dead = _head(db)[0] + 1
        stored = bytes(encode_kv(1, dead, b"dead"))
        entry = encode_entry("d" * 24, [], [Redo("x/dead", None, stored, 0.0)])
        backend._log.put(dead, entry)  # decided, never applied: the client died here
        if condition_fails_first:
            # Reads the unapplied state (x/dead absent: the condition fails), applies the dead commit, checks again.
            revision = backend.commit_keys([VersionIs("x/dead", 1)], {"x/dead": b"mine"}, [])
        else:
            # Its own log entry finds the revision taken: applies the dead commit, then commits after it.
            revision = backend.commit_keys([], {"x/mine": b"1"}, [])
        assert revision == dead + 1
        applied = backend.get_key("x/dead")
        assert applied is not None
        if condition_fails_first:
            assert (applied.value, applied.version, applied.mod_revision) == (b"mine", 2, dead + 1)
        else:
            assert (applied.value, applied.version, applied.mod_revision) == (b"dead", 1, dead)
        assert _head(db)[0] == dead + 1


@pytest.mark.timeout(90)
@pytest.mark.parametrize("member_commit", [False, True])
def test_commit_to_a_frozen_member_is_unknown_never_a_conflict(
    hazelcast_server: HazelcastServer,  # noqa: F811
    member_commit: bool,
) -> None:
    member = hazelcast_server.members[0]
    namespace = _ns()
    url = hazelcast_server.url + ("?timeout=2" if member_commit else "?timeout=2&member_commit=0")
    with nbdb.connect(url, namespace=namespace) as db:
        assert isinstance(db.backend, HazelcastBackend)
        assert db.backend.member_commit == member_commit
        parent = db.create(KitParent(name="p"))
        member.pause()
        try:
            with pytest.raises(errors.BackendUnavailableError) as info:
                db.update(parent.model_copy(update={"size": 1}))
        finally:
            member.resume()
        assert not isinstance(info.value, errors.ConflictError)
    with nbdb.connect(hazelcast_server.url, namespace=namespace) as db:
        stored = db.get(KitParent, parent.id)
        # Applied once or not at all, never twice.
        assert (stored.version, stored.size) in ((1, 0), (2, 1))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("member_commit", [False, True])
def test_a_commit_sent_again_after_it_landed_is_acknowledged_not_a_conflict(
    hazelcast_server: HazelcastServer,  # noqa: F811
    member_commit: bool,
) -> None:
    """A commit that landed but came back as a refusal is sent again: it is acknowledged, never a ConflictError.

    Hazelcast can answer a request that ran with an error taken as "never ran" (a retryable one, such as
    TargetNotMemberError from a member-side write to a member just killed), and the client itself sends such a
    request again. The second send found the first one's writes: its conditions failed (its own commit token
    present, the versions moved) and the family raised ConflictError for a write that was in the store. In a
    CI run of ``test_member_killed_during_writes_loses_nothing`` (2026-12-07) both writer threads died of
    that ("KitParent ... already exists", "... is at version 12, not 11") the moment the head's owner was
    killed. Here the first send's reply is replaced by a refusal after it landed (nbdb's own call wrapped).
    """
    url = hazelcast_server.url + ("?timeout=4" if member_commit else "?timeout=4&member_commit=0")
    with nbdb.connect(url, namespace=_ns()) as db:
        backend = db.backend
        assert isinstance(backend, HazelcastBackend)
        assert backend.member_commit == member_commit
        with _refused_once_after_it_landed(backend) as refused:
            created = db.create(KitParent(name="p"))
            assert refused
            # Acknowledged as the normal ack does: this client knows its own commit's token (a watch from it checks
            # it). On the client's protocol the wrapped call remembers it before the refusal; the member's path not.
            revision, anchor = _head(db)
            assert backend.token_of(revision) == anchor
            refused.clear()
            updated = db.update(created.model_copy(update={"size": 1}))
            assert refused
            assert (updated.version, updated.size) == (2, 1)
            revision, anchor = _head(db)
            assert backend.token_of(revision) == anchor
        stored = db.get(KitParent, created.id)
        assert (stored.version, stored.size) == (2, 1)  # applied once each


@pytest.mark.timeout(60)
@pytest.mark.parametrize("member_commit", [False, True])
def test_a_commit_that_landed_but_came_back_refused_on_the_last_try_is_never_a_plain_unavailable(
    hazelcast_server: HazelcastServer,  # noqa: F811
    member_commit: bool,
) -> None:
    """The same "landed, answered as a refusal" as above, on the retry policy's last try (``retries=0``: the only
    one). The refusal is taken for "never sent" (``_REFUSED``, unsent=True), so ``_retrying`` re-raises it as a plain
    BackendUnavailableError: docs/semantics.md says such a commit "was not applied" and "never reported as ...
    BackendUnavailableError when it landed"; the store holds it. A commit whose refusal may have run is an unknown
    outcome (CommitUnknownError, settled by its token: here the update is then acknowledged)."""
    url = hazelcast_server.url + "?timeout=4&retries=0" + ("" if member_commit else "&member_commit=0")
    with nbdb.connect(url, namespace=_ns()) as db:
        backend = db.backend
        assert isinstance(backend, HazelcastBackend)
        assert backend.member_commit == member_commit
        parent = db.create(KitParent(name="p"))
        with _refused_once_after_it_landed(backend) as refused:
            try:
                outcome: Any = db.update(parent.model_copy(update={"size": 1}))
            except errors.BackendUnavailableError as exc:
                outcome = exc
        assert refused
        stored = db.get(KitParent, parent.id)
        assert (stored.version, stored.size) == (2, 1)  # it landed
        assert type(outcome) is not errors.BackendUnavailableError, f"a landed commit reported {outcome!r}"
        assert outcome == stored  # CommitUnknownError inside, settled by the token: acknowledged


@pytest.mark.timeout(60)
@pytest.mark.parametrize("member_commit", [False, True])
def test_a_commit_without_a_token_sent_again_after_it_landed_is_acknowledged_not_a_conflict(
    hazelcast_server: HazelcastServer,  # noqa: F811
    member_commit: bool,
) -> None:
    """``commit_keys`` with ``token=None`` (no token key to read back): the same "landed, answered as a refusal"
    as above. The second send failed on the first one's write and returned None (the family's ConflictError) for a
    commit the store holds. Every send of one call writes the same anchor into ``head``: found there, it is in."""
    from nbdb.families.kvtypes import VersionIs

    url = hazelcast_server.url + ("?timeout=4" if member_commit else "?timeout=4&member_commit=0")
    with nbdb.connect(url, namespace=_ns()) as db:
        backend = _hz(db)
        assert backend.member_commit == member_commit
        with _refused_once_after_it_landed(backend) as refused:
            revision = backend.commit_keys([VersionIs("x/k", 0)], {"x/k": b"1"}, [])
        assert refused
        stored = backend.get_key("x/k")
        assert stored is not None and (stored.version, stored.value) == (1, b"1")  # applied once
        assert revision == stored.mod_revision == _head(db)[0]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("member_commit", [False, True])
@pytest.mark.parametrize("blind", [False, True])
def test_a_commit_without_a_token_that_may_have_landed_before_another_commit_is_found_or_unknown_never_guessed(
    hazelcast_server: HazelcastServer,  # noqa: F811
    member_commit: bool,
    blind: bool,
) -> None:
    """As above, but another client commits between the refused send and the next: ``head`` no longer tells. The
    client's protocol knows the revision it sent its entry at, and finds its anchor there: acknowledged at it. A
    member's task does not say its revision, but lands past the revision ``head`` held before it left: its anchor
    is found in the entries since (until review rev41: CommitUnknownError). Never the None (ConflictError) a guess
    would give, nor (``blind``: no condition, so it still holds) a second apply."""
    from nbdb.families.kvtypes import VersionIs

    url = hazelcast_server.url + ("?timeout=4" if member_commit else "?timeout=4&member_commit=0")
    namespace = _ns()
    with nbdb.connect(url, namespace=namespace) as db, nbdb.connect(url, namespace=namespace) as other:
        backend = _hz(db)
        assert backend.member_commit == member_commit
        between = partial(_hz(other).commit_keys, [], {"x/other": b"1"}, [])
        conditions = [] if blind else [VersionIs("x/k", 0)]
        with _refused_once_after_it_landed(backend, between) as refused:
            try:
                outcome: Any = backend.commit_keys(conditions, {"x/k": b"1"}, [])
            except errors.CommitUnknownError as exc:
                outcome = exc
        assert refused
        stored = backend.get_key("x/k")
        assert stored is not None and stored.version == 1  # it had landed, once
        assert outcome == stored.mod_revision == _head(db)[0] - 1  # found where it landed, before the other


@pytest.mark.timeout(60)
def test_a_commit_without_a_token_whose_refused_send_did_not_land_is_a_conflict_not_unknown(
    hazelcast_server: HazelcastServer,  # noqa: F811
) -> None:
    """The client's protocol knows the revision it sent its entry at. The entry's send is refused unrun (a
    migrating partition), another client's commit then takes that revision and writes the key; the re-send fails
    its condition, and the entry at its revision bears the other commit's anchor: a real conflict (None, the
    family's ConflictError). It was CommitUnknownError, ``head`` no longer telling."""
    from hazelcast import errors as hzerrors
    from hazelcast.future import Future

    from nbdb.families.kvtypes import VersionIs

    url = hazelcast_server.url + "?timeout=4&member_commit=0"
    namespace = _ns()
    with nbdb.connect(url, namespace=namespace) as db, nbdb.connect(url, namespace=namespace) as other:
        backend = _hz(db)
        real_send, real_retrying = backend.gate.send, backend._retrying
        refused: list[bool] = []

        def refused_unrun(start: Callable[[], Any], *args: Any, **kwargs: Any) -> Any:
            if not refused and isinstance(start, partial) and start.func == backend.log_async.put_if_absent:
                refused.append(True)
                failed = Future()
                failed.set_exception(hzerrors.PartitionMigratingError("the partition is migrating"))
                return failed
            return real_send(start, *args, **kwargs)

        def then_another(attempt: Callable[[], Any], sends: Any) -> Any:
            def once() -> Any:
                try:
                    return attempt()
                except errors.BackendUnavailableError:
                    if len(refused) == 1:  # the commit lock is free again
                        refused.append(True)
                        _hz(other).commit_keys([], {"x/k": b"other"}, [])
                    raise

            return real_retrying(once, sends)

        backend.gate.send = refused_unrun  # type: ignore[method-assign]
        backend._retrying = then_another  # type: ignore[method-assign]
        try:
            outcome = backend.commit_keys([VersionIs("x/k", 0)], {"x/k": b"1"}, [])
        finally:
            backend.gate.send, backend._retrying = real_send, real_retrying  # type: ignore[method-assign]
        assert len(refused) == 2
        stored = backend.get_key("x/k")
        assert stored is not None and (stored.value, stored.version) == (b"other", 1)
        assert outcome is None


@pytest.mark.timeout(60)
def test_a_commit_after_a_task_given_up_on_waits_for_it_to_end_then_goes_not_busy(
    hazelcast_server: HazelcastServer,  # noqa: F811
) -> None:
    """A commit task given up on at ``timeout`` (CommitUnknownError) that the member still runs holds the commit
    lock. The next commit's task waited ``timeout / 2`` for that lock and came back BUSY: with ``retries=0`` a
    BackendUnavailableError, though the old task ended well within the new call's own ``timeout``. It now waits
    for the old task's reply (its end) and goes at once. The old task is held in the member by a write to a key
    another client holds the lock of (a lock-aware map write waits for it), for 2 s from the first call's start (the
    member ends a lock's lease on a whole second: 2.4 s held 3 s): given up at 1.2 s, the next commit's task was BUSY
    at about 1.8 s; it now leaves at about 2.0 s."""
    url = hazelcast_server.url + "?timeout=1.2&retries=0"
    namespace = _ns()
    with nbdb.connect(url, namespace=namespace) as db, nbdb.connect(url, namespace=namespace) as other:
        backend = _hz(db)
        assert backend.member_commit
        backend.commit_keys([], {"x/warm": b"1"}, [])
        _hz(other)._kv.lock("x/held", lease_time=2.0)  # the first task's write of x/held waits that long
        started = time.monotonic()
        with pytest.raises(errors.CommitUnknownError):
            backend.commit_keys([], {"x/held": b"1"}, [])
        assert time.monotonic() - started < 1.9  # given up on at timeout, the task still running
        revision = backend.commit_keys([], {"x/next": b"1"}, [])
        took = time.monotonic() - started
        held, following = backend.get_key("x/held"), backend.get_key("x/next")
        assert held is not None and following is not None  # the given-up task applied its commit, then this one
        assert revision == following.mod_revision == held.mod_revision + 1
        assert took < 2.4, f"the next commit ended {took:.2f} s after the first began"


@pytest.mark.timeout(60)
def test_a_commit_after_a_task_given_up_on_that_outlives_its_timeout_says_why_it_was_not_sent(
    hazelcast_server: HazelcastServer,  # noqa: F811
) -> None:
    """As above, the old task held 3 s: the next commit waits its own ``timeout`` (1 s) for it, then fails with a
    BackendUnavailableError that names the cause (it was a "busy" that named none), having sent nothing."""
    url = hazelcast_server.url + "?timeout=1&retries=0"
    namespace = _ns()
    with nbdb.connect(url, namespace=namespace) as db, nbdb.connect(url, namespace=namespace) as other:
        backend = _hz(db)
        backend.commit_keys([], {"x/warm": b"1"}, [])
        _hz(other)._kv.lock("x/held", lease_time=3.0)
        with pytest.raises(errors.CommitUnknownError):
            backend.commit_keys([], {"x/held": b"1"}, [])
        with pytest.raises(errors.BackendUnavailableError, match="still runs in the member") as info:
            backend.commit_keys([], {"x/next": b"1"}, [])
        assert not isinstance(info.value, errors.CommitUnknownError)
        assert backend.get_key("x/next") is None  # never sent


@pytest.mark.timeout(60)
@pytest.mark.parametrize("member_commit", [False, True])
def test_a_commit_without_a_token_whose_conditions_still_hold_is_not_applied_twice_when_sent_again(
    hazelcast_server: HazelcastServer,  # noqa: F811
    member_commit: bool,
) -> None:
    """Review of wip/hztoken: the anchor is asked only when the re-sent commit fails its conditions. A tokenless commit
    whose conditions still hold after its own landing (a blind write, or conditions on keys it does not write) was
    applied a second time at the next revision, though ``head`` held this call's anchor: applied twice."""
    url = hazelcast_server.url + ("?timeout=4" if member_commit else "?timeout=4&member_commit=0")
    with nbdb.connect(url, namespace=_ns()) as db:
        backend = _hz(db)
        assert backend.member_commit == member_commit
        with _refused_once_after_it_landed(backend) as refused:
            revision = backend.commit_keys([], {"x/k": b"1"}, [])
        assert refused
        stored = backend.get_key("x/k")
        assert stored is not None
        assert stored.version == 1, f"applied {stored.version} times"
        assert revision == stored.mod_revision == _head(db)[0]


@pytest.mark.timeout(60)
def test_a_commit_waiting_for_a_given_up_task_when_the_database_closes_is_not_sent_and_not_unknown(
    hazelcast_server: HazelcastServer,  # noqa: F811
) -> None:
    """Review of wip/hzanchor: ``_send_commit_task`` admits the commit (``_admit``: BackendUnavailableError once
    closed), then waits up to ``timeout`` for the task given up on. ``close()`` meanwhile fails that task's future,
    the wait ends, and the task is handed to the shut-down client: "the reply to a commit run in the member was
    lost" (CommitUnknownError) for a commit never sent. The wait widened a microsecond race to ``timeout``."""
    url = hazelcast_server.url + "?timeout=1&retries=0"
    namespace = _ns()
    with nbdb.connect(url, namespace=namespace) as other:
        db = nbdb.connect(url, namespace=namespace)
        try:
            backend = _hz(db)
            assert backend.member_commit
            backend.commit_keys([], {"x/warm": b"1"}, [])
            _hz(other)._kv.lock("x/held", lease_time=3.0)
            with pytest.raises(errors.CommitUnknownError):
                backend.commit_keys([], {"x/held": b"1"}, [])
            closer = threading.Timer(0.2, db.close)
            closer.start()
            with pytest.raises(errors.BackendUnavailableError) as info:
                backend.commit_keys([], {"x/next": b"1"}, [])
            closer.join()
            assert not isinstance(info.value, errors.CommitUnknownError), info.value
        finally:
            db.close()


@pytest.mark.timeout(60)
def test_a_commit_whose_entry_put_the_client_library_sent_again_is_not_taken_for_another_commits(
    hazelcast_server: HazelcastServer,  # noqa: F811
) -> None:
    """Review of wip/hztoken: the client library sends a request answered with a retryable error again (the branch's
    own premise). The entry's ``putIfAbsent`` ran, and its second send finds the entry there: the branch takes it
    for another commit's (``taken is not None``), rolls it forward, and ``sends.unsettled`` (nbdb's sends only) is
    0, so the head anchor is never asked: a tokenless commit that landed comes back None (the family's
    ConflictError). The entry found is this call's own (its anchor)."""
    from nbdb.families.kvtypes import VersionIs

    with nbdb.connect(hazelcast_server.url + "?timeout=4&member_commit=0", namespace=_ns()) as db:
        backend = _hz(db)
        real_send = backend.gate.send
        resent: list[bool] = []

        def library_resends(start: Callable[[], Any], *args: Any, **kwargs: Any) -> Any:
            if not resent and isinstance(start, partial) and start.func == backend.log_async.put_if_absent:
                resent.append(True)
                start().result()  # the first send ran; its reply was a retryable error, so the library sends again
            return real_send(start, *args, **kwargs)

        backend.gate.send = library_resends  # type: ignore[method-assign]
        try:
            revision = backend.commit_keys([VersionIs("x/k", 0)], {"x/k": b"1"}, [])
        finally:
            backend.gate.send = real_send  # type: ignore[method-assign]
        assert resent
        stored = backend.get_key("x/k")
        assert stored is not None and stored.version == 1  # it landed, once
        assert revision == stored.mod_revision, f"a commit that landed at {stored.mod_revision} returned {revision}"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("blind", [False, True])
def test_a_member_commit_task_the_client_library_sent_again_after_it_landed_is_not_a_conflict(
    hazelcast_server: HazelcastServer,  # noqa: F811
    blind: bool,
) -> None:
    """Review of wip/hztoken: as above for the member's task. Its first run landed, its reply was a retryable error,
    the library ran it again: the conditions fail on its own write, one send for nbdb (``sends.unsettled == 1``), so
    ``_landed_before_any`` never reads ``head`` (``> 1``): None, though ``head`` holds this call's anchor.
    ``blind`` (no condition: it still holds on the second run): applied twice, unseen by nbdb; the task itself now
    finds its anchor at ``head`` and replies "in at head" (protocol 3)."""
    from nbdb.backends.hazelcast._member import CommitTask
    from nbdb.families.kvtypes import VersionIs

    with nbdb.connect(hazelcast_server.url + "?timeout=4", namespace=_ns()) as db:
        backend = _hz(db)
        assert backend.member_commit
        real = backend._executor
        resent: list[bool] = []

        class SentTwice:
            def execute_on_key_owner(self, key: Any, task: Any) -> Any:
                first = real.execute_on_key_owner(key, task)
                if resent or not isinstance(task, CommitTask):
                    return first
                resent.append(True)  # the first run's reply was a retryable error: the library sends it again
                return first.continue_with(lambda _: real.execute_on_key_owner(key, task))

        backend._executor = SentTwice()
        try:
            revision = backend.commit_keys([] if blind else [VersionIs("x/k", 0)], {"x/k": b"1"}, [])
        finally:
            backend._executor = real
        assert resent
        stored = backend.get_key("x/k")
        assert stored is not None and stored.version == 1  # it landed, once
        assert revision == stored.mod_revision, f"a commit that landed at {stored.mod_revision} returned {revision}"


@pytest.mark.xfail(
    strict=True,
    reason="known limit (docs/backends/hazelcast.md, 'What is not settled'): the task compares only head's anchor, "
    "and nbdb never sees the client library's own re-send",
)
@pytest.mark.timeout(60)
def test_a_member_commit_task_the_client_library_sent_again_after_another_commit_is_not_applied_twice(
    hazelcast_server: HazelcastServer,  # noqa: F811
) -> None:
    """Review of wip/hzanchor: the task finds its anchor at ``head`` only while ``head`` is still its own. Its first
    run landed at R and released the commit lock; its reply was a retryable error; before the library's re-send
    (``invocation_retry_pause``, 1 s stock) another client, waiting on the lock, commits at R+1. The re-run reads
    ``head`` R+1 (another anchor) and applies a blind write again at R+2, over the other client's write: applied
    twice and an acknowledged write lost. nbdb never sees the re-send (``sends.unsettled`` is 1)."""
    from nbdb.backends.hazelcast._member import CommitTask

    namespace = _ns()
    url = hazelcast_server.url + "?timeout=4"
    with nbdb.connect(url, namespace=namespace) as db, nbdb.connect(url, namespace=namespace) as other:
        backend = _hz(db)
        assert backend.member_commit
        real = backend._executor
        resent: list[int] = []

        class SentTwiceAfterAnother:
            def execute_on_key_owner(self, key: Any, task: Any) -> Any:
                if resent or not isinstance(task, CommitTask):
                    return real.execute_on_key_owner(key, task)
                real.execute_on_key_owner(key, task).result()  # ran; its reply was a retryable error
                resent.append(_hz(other).commit_keys([], {"x/k": b"other"}, []))  # took the lock meanwhile
                return real.execute_on_key_owner(key, task)  # the library's re-send

        backend._executor = SentTwiceAfterAnother()
        try:
            outcome: Any = backend.commit_keys([], {"x/k": b"1"}, [])
        except errors.CommitUnknownError as exc:
            outcome = exc
        finally:
            backend._executor = real
        assert resent
        stored = backend.get_key("x/k")
        assert stored is not None
        assert (stored.value, stored.version) == (b"other", 2), f"applied twice: {stored}, outcome {outcome!r}"
        assert outcome == resent[0] - 1 or isinstance(outcome, errors.CommitUnknownError)


def _assert_first_task_refused_is_sent_again(db: nbdb.Database) -> None:
    """A blind write to ``x/k`` whose first member task is refused unrun is sent again and applied once, at head."""
    backend = _hz(db)
    revision = _commit_with_first_task_refused(backend)
    stored = backend.get_key("x/k")
    assert stored is not None and stored.version == 1
    assert revision == stored.mod_revision == _head(db)[0]


def _commit_with_first_task_refused(backend: HazelcastBackend) -> int | None:
    """``commit_keys`` of a blind write to ``x/k`` whose first member task comes back refused unrun (a migrating
    partition)."""
    from hazelcast import errors as hzerrors
    from hazelcast.future import Future

    from nbdb.backends.hazelcast._member import CommitTask

    real = backend._executor
    refused: list[bool] = []

    class RefusedOnce:
        def execute_on_key_owner(self, key: Any, task: Any) -> Any:
            if refused or not isinstance(task, CommitTask):
                return real.execute_on_key_owner(key, task)
            refused.append(True)
            failed: Future[Any] = Future()
            failed.set_exception(hzerrors.PartitionMigratingError("the partition is migrating"))
            return failed

    backend._executor = RefusedOnce()
    try:
        revision = backend.commit_keys([], {"x/k": b"1"}, [])
    finally:
        backend._executor = real
    assert refused
    return revision


@pytest.mark.timeout(60)
def test_a_member_commit_task_refused_unrun_with_head_unmoved_is_sent_again_not_unknown(
    hazelcast_server: HazelcastServer,  # noqa: F811
) -> None:
    """Review of wip/hzanchor: a tokenless commit's task refused unrun (a migrating partition), nothing committed since.
    The re-send's check finds ``head`` without this call's anchor and, the task's revision unknown, raises
    CommitUnknownError at once, where main sent it again: every refusal of a tokenless member commit (as common as
    a migration) reaches the caller as "unknown". ``head`` has not moved past the revision the client knew before
    the send, so no send of it landed: it can be sent again."""
    with nbdb.connect(hazelcast_server.url + "?timeout=4", namespace=_ns()) as db:
        backend = _hz(db)
        assert backend.member_commit
        backend.commit_keys([], {"x/warm": b"1"}, [])
        _assert_first_task_refused_is_sent_again(db)


@pytest.mark.timeout(60)
def test_a_member_task_sent_again_after_the_cluster_lost_its_data_is_not_applied_twice(
    hazelcast_server: HazelcastServer,  # noqa: F811
) -> None:
    """Review rev43: the floor was the highest revision seen (``_head_seen``, which only moved on), yet ``head``
    goes back when the cluster loses its data (a whole Hazelcast cluster restarted: it is in memory; the client
    reconnects by itself; here the maps cleared). A tokenless blind write's task then took its floor from the old,
    higher revision, landed far below it (at 1), its reply came back refused; another client's commits took
    ``head`` just past that floor, and the re-send read only the entries above the floor, found no anchor, took it
    for "did not land" and ran the write again."""
    namespace = _ns()
    url = hazelcast_server.url + "?timeout=4"
    with nbdb.connect(url, namespace=namespace) as db, nbdb.connect(url, namespace=namespace) as other:
        backend = _hz(db)
        assert backend.member_commit
        for i in range(5):
            backend.commit_keys([], {f"x/warm{i}": b"1"}, [])
        for imap in (backend._kv_async, backend.log_async, backend.meta_async):
            imap.clear().result()  # the cluster lost its data: ``head`` is back at 0
        assert _head(db)[0] == 0

        def others_commit() -> None:
            for i in range(5):
                _hz(other).commit_keys([], {f"x/other{i}": b"1"}, [])

        with _refused_once_after_it_landed(backend, others_commit) as refused:
            try:
                outcome: Any = backend.commit_keys([], {"x/k": b"1"}, [])
            except errors.CommitUnknownError as exc:
                outcome = exc
        assert refused
        stored = backend.get_key("x/k")
        assert stored is not None and stored.version == 1, f"applied twice: {stored}, outcome {outcome!r}"
        assert outcome == stored.mod_revision == 1 or isinstance(outcome, errors.CommitUnknownError)


@pytest.mark.timeout(60)
def test_a_member_commit_task_refused_unrun_after_others_commits_is_sent_again_not_unknown(
    hazelcast_server: HazelcastServer,  # noqa: F811
) -> None:
    """Review rev43: as above, but other clients committed since this one last saw ``head``: the task's floor was
    the stale ``_head_seen``, more than ``_TASK_LANDED_SCAN`` below ``head`` although ``head`` has not moved since
    the task left. The refused-unrun task is CommitUnknownError, never sent again."""
    namespace = _ns()
    url = hazelcast_server.url + "?timeout=4"
    with nbdb.connect(url, namespace=namespace) as db, nbdb.connect(url, namespace=namespace) as other:
        backend = _hz(db)
        assert backend.member_commit
        backend.commit_keys([], {"x/warm": b"1"}, [])
        for i in range(70):
            _hz(other).commit_keys([], {f"x/other{i}": b"1"}, [])
        _assert_first_task_refused_is_sent_again(db)


@pytest.mark.timeout(60)
def test_a_member_commit_pays_one_read_of_head_for_its_floor_only_without_a_token(
    hazelcast_server: HazelcastServer,  # noqa: F811
) -> None:
    """The floor of a tokenless commit's task is ``head`` read just before it leaves (review rev43: a revision seen
    before may be far behind ``head``, or above it once the cluster lost its data): one read of ``head`` more, and
    only there. A commit with a token (every commit of the family) is told by its token and sends its task alone."""
    from nbdb.backends.hazelcast._member import CommitTask
    from nbdb.backends.hazelcast._records import HEAD
    from nbdb.families.kvtypes import KeyCommit

    with nbdb.connect(hazelcast_server.url + "?timeout=4", namespace=_ns()) as db:
        backend = _hz(db)
        assert backend.member_commit
        backend.commit_keys([], {"x/warm": b"1"}, [])  # listeners and the like registered
        sent: list[str] = []

        class Counted:
            def __init__(self, name: str, real: Any) -> None:
                self.name, self.real = name, real

            def __getattr__(self, attr: str) -> Any:
                method = getattr(self.real, attr)

                def counted(*args: Any, **kwargs: Any) -> Any:
                    head = attr == "get" and args[:1] == (HEAD,)
                    task = bool(args[1:]) and isinstance(args[1], CommitTask)
                    sent.append("head" if head else "task" if task else f"{self.name}.{attr}")
                    return method(*args, **kwargs)

                return counted

        names = ("_kv_async", "log_async", "meta_async", "_lease_async", "_ids_async", "_executor")
        real = {name: getattr(backend, name) for name in names}
        for name in names:
            setattr(backend, name, Counted(name, real[name]))
        try:
            tokened = KeyCommit([], {"x/a": b"1"}, [], CommitToken("x/token", 60.0)).with_token_key()
            revision = backend.commit_keys(tokened.conditions, tokened.puts, tokened.deletes, tokened.token)
            with_token, sent[:] = list(sent), []
            assert backend.commit_keys([], {"x/b": b"1"}, []) == revision + 1  # type: ignore[operator]
            without_token = list(sent)
        finally:
            for name in names:
                setattr(backend, name, real[name])
        assert with_token == ["task"]
        assert without_token == ["head", "task"]


@pytest.mark.timeout(60)
def test_a_member_task_whose_floor_read_met_a_damaged_head_is_unknown_when_sent_again_not_applied_twice(
    hazelcast_server: HazelcastServer,  # noqa: F811
) -> None:
    """Review rev44: the floor's read met a ``head`` another writer damaged (no floor: unknown), another client's
    read put it back, the task landed, its reply came back as a refusal, another client's commit passed it. The
    re-send took ``head`` read then as its floor, after the landed task: nothing scanned past it, the blind write
    was sent again, applied twice. With no floor the re-send is CommitUnknownError."""
    from nbdb.backends.hazelcast._records import HEAD

    with _two_clients(hazelcast_server.url + "?timeout=4") as (db, other):
        backend = _hz(db)
        assert backend.member_commit
        backend.commit_keys([], {"x/warm": b"1"}, [])
        backend._meta.put(HEAD, "garbage")
        real = backend._send_commit_task
        refused: list[bool] = []

        def landed_then_refused(*args: Any, **kwargs: Any) -> Any:
            if refused:
                return real(*args, **kwargs)
            refused.append(True)
            _hz(other).current_revision()  # a reader puts ``head`` back before the task leaves
            real(*args, **kwargs)  # it lands
            _hz(other).commit_keys([], {"x/other": b"1"}, [])
            raise errors.BackendUnavailableError("the reply came back as a refusal (a retryable error)")

        backend._send_commit_task = landed_then_refused  # type: ignore[method-assign]
        try:
            outcome: Any = backend.commit_keys([], {"x/k": b"1"}, [])
        except errors.CommitUnknownError as exc:
            outcome = exc
        finally:
            backend._send_commit_task = real  # type: ignore[method-assign]
        assert refused
        stored = backend.get_key("x/k")
        assert stored is not None and stored.version == 1, f"applied twice: {stored}, outcome {outcome!r}"
        assert isinstance(outcome, errors.CommitUnknownError)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("where", ["re-send", "after-reply"])
def test_a_head_damaged_after_a_member_task_ran_is_unknown_not_a_corrupt_record(
    hazelcast_server: HazelcastServer,  # noqa: F811
    where: str,
) -> None:
    """Review rev44: a tokenless commit's task ran, then another writer damaged ``head`` before the read that tells
    whether it landed: the re-send's read (its reply came back as a refusal), or ``_landed_before_any``'s after a
    reply whose condition failed (the library may have run it twice). Only BackendUnavailableError was turned into
    CommitUnknownError there: the CorruptRecordError escaped, as if nothing had been sent. The outcome is unknown."""
    from nbdb.backends.hazelcast._records import HEAD
    from nbdb.families.kvtypes import VersionIs

    with _two_clients(hazelcast_server.url + "?timeout=4") as (db, other):
        backend = _hz(db)
        assert backend.member_commit
        damage = partial(_hz(other)._meta.put, HEAD, "garbage")
        if where == "re-send":
            with _refused_once_after_it_landed(backend, damage) as refused:
                with pytest.raises(errors.CommitUnknownError) as info:
                    backend.commit_keys([], {"x/k": b"1"}, [])
            assert refused
        else:
            backend.commit_keys([], {"x/k": b"0"}, [])
            real = backend._send_commit_task

            def damaged_after(*args: Any, **kwargs: Any) -> Any:
                out = real(*args, **kwargs)
                damage()
                return out

            backend._send_commit_task = damaged_after  # type: ignore[method-assign]
            try:
                with pytest.raises(errors.CommitUnknownError) as info:
                    backend.commit_keys([VersionIs("x/k", 0)], {"x/k": b"1"}, [])
            finally:
                backend._send_commit_task = real  # type: ignore[method-assign]
        assert isinstance(info.value.__cause__, errors.CorruptRecordError)
        stored = backend.get_key("x/k")
        assert stored is not None and stored.version == 1  # the task ran once


@contextlib.contextmanager
def _refused_once_after_it_landed(
    backend: HazelcastBackend, between: Callable[[], object] | None = None
) -> Iterator[list[bool]]:
    """The next commit's send (the member's task, or the client's protocol) runs, and its reply is then replaced by
    a refusal (a retryable error, taken for "never sent"): nbdb's own call wrapped. Yields ``[True]`` once done.
    ``between`` runs after the send landed, before the refusal, with the commit lock released (the whole attempt
    is wrapped then)."""
    name = "_retrying" if between is not None else "_send_commit_task" if backend.member_commit else "_commit_locked"
    real = getattr(backend, name)
    refused: list[bool] = []

    def first_attempt_refused(attempt: Callable[[], Any], sends: Any) -> Any:
        def once() -> Any:
            out = attempt()
            if refused:
                return out
            refused.append(True)
            assert between is not None
            between()
            raise errors.BackendUnavailableError("the reply came back as a refusal (a retryable error)")

        return real(once, sends)

    def landed_then_refused(*args: Any, **kwargs: Any) -> Any:
        if between is not None:
            return first_attempt_refused(*args, **kwargs)
        out = real(*args, **kwargs)
        if not refused:
            refused.append(True)
            raise errors.BackendUnavailableError("the reply came back as a refusal (a retryable error)")
        return out

    setattr(backend, name, landed_then_refused)
    try:
        yield refused
    finally:
        setattr(backend, name, real)


@pytest.mark.timeout(60)
def test_a_commit_sent_again_after_it_was_decided_but_not_published_is_published_before_it_is_acknowledged(
    hazelcast_server: HazelcastServer,  # noqa: F811
) -> None:
    """The first send decided the commit and wrote its keys, its token's included, but ``head`` did not move (the
    head's owner killed) and the reply came back as a refusal: the second send finds its token applied. It is
    acknowledged once the commit is published (rolled forward: ``head`` at its revision), not before."""
    from nbdb.backends.hazelcast._records import HEAD

    with nbdb.connect(hazelcast_server.url + "?timeout=4&member_commit=0", namespace=_ns()) as db:
        backend = db.backend
        assert isinstance(backend, HazelcastBackend)
        parent = db.create(KitParent(name="p"))
        before = _head(db)[0]
        real_head, real_locked = backend._send_head, backend._commit_locked
        sends: list[bool] = []

        def head_not_moved(old: Any, new: bytearray) -> Any:
            return backend.meta_async.get(HEAD)  # a request that moves nothing

        def landed_then_refused(*args: Any, **kwargs: Any) -> Any:
            sends.append(True)
            if len(sends) > 1:
                return real_locked(*args, **kwargs)
            backend._send_head = head_not_moved  # type: ignore[method-assign]
            try:
                real_locked(*args, **kwargs)
            finally:
                backend._send_head = real_head  # type: ignore[method-assign]
            assert _head(db)[0] == before  # decided and written, not published
            raise errors.BackendUnavailableError("the reply came back as a refusal (a retryable error)")

        backend._commit_locked = landed_then_refused  # type: ignore[method-assign]
        updated = db.update(parent.model_copy(update={"size": 1}))
        assert len(sends) == 2
        assert _head(db)[0] == before + 1  # published before it was acknowledged
        assert (updated.version, updated.size) == (2, 1)
        backend._commit_locked = real_locked  # type: ignore[method-assign]
        stored = db.get(KitParent, parent.id)
        assert (stored.version, stored.size) == (2, 1)


@pytest.mark.timeout(120)
def test_concurrent_writers_give_a_dense_gap_free_stream(hazelcast_server: HazelcastServer) -> None:  # noqa: F811
    namespace = _ns()
    with nbdb.connect(hazelcast_server.url, namespace=namespace) as db:
        start = db.backend.current_revision()
        acknowledged: set[uuid.UUID] = set()
        lock = threading.Lock()

        def write(worker: int) -> None:
            with nbdb.connect(hazelcast_server.url, namespace=namespace) as mine:
                for i in range(40):
                    with mine.transaction() as txn:
                        a = txn.create(KitParent(name=f"{worker}-{i}-a"))
                        b = txn.create(KitParent(name=f"{worker}-{i}-b"))
                    with lock:
                        acknowledged.update({a.id, b.id})

        threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        stream = db.backend.watch(["KitParent"], None, start)
        seen: dict[int, list[uuid.UUID]] = {}
        try:
            deadline = time.monotonic() + 90
            while sum(len(v) for v in seen.values()) < 320 and time.monotonic() < deadline:
                for change in stream.poll(1.0):
                    seen.setdefault(change.revision, []).append(change.id)
        finally:
            stream.close()
            for thread in threads:
                thread.join(60)
        revisions = sorted(seen)
        assert revisions == list(range(start + 1, start + 161))  # dense: one revision per transaction
        assert all(len(ids) == 2 for ids in seen.values())  # each transaction arrives whole, once
        assert {i for ids in seen.values() for i in ids} == acknowledged


@pytest.mark.timeout(120)
@pytest.mark.parametrize("group_commit", [1, 32])
@pytest.mark.parametrize("member_commit", [False, True])
def test_threads_of_one_database_ask_for_the_commit_lock_one_at_a_time(
    hazelcast_server: HazelcastServer,  # noqa: F811
    group_commit: int,
    member_commit: bool,
) -> None:
    """Eight threads committing through one Database send one commit-lock request at a time.

    The cluster serializes commits anyway; letting every thread send its own request is what
    made the client's reactor lose its wake-up (every request then waited 10 ms). Each commit
    still applies once: alone at its own revision, or grouped with others that waited (one
    revision and one log entry for the group), and the stream holds every object once.
    Commits run in the member (the default where the members have nbdb's jar) send one task
    at a time and no lock request at all.
    """
    url = hazelcast_server.url + ("" if member_commit else "?member_commit=0")
    with nbdb.connect(url, namespace=_ns(), group_commit=group_commit) as db:
        backend = db.backend
        assert isinstance(backend, HazelcastBackend)
        start = backend.current_revision()
        created: list[KitParent] = []
        gate = threading.Barrier(8)

        def write(worker: int) -> None:
            gate.wait(30)
            for i in range(10):
                created.append(db.create(KitParent(name=f"{worker}-{i}")))

        threads = [threading.Thread(target=write, args=(w,)) for w in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
        assert len(created) == 80
        assert backend.member_commit == member_commit
        assert backend.commit_lock_requests_peak == (0 if member_commit else 1)
        assert (backend.member_commits > 0) == member_commit
        end = backend.current_revision()
        if group_commit == 1:
            assert end == start + 80  # one revision per commit, none applied twice
        else:
            assert start < end <= start + 80
        assert {p.id for p in db.list(KitParent)} == {p.id for p in created}
        stream = backend.watch(["KitParent"], None, start)
        seen: list[uuid.UUID] = []
        try:
            deadline = time.monotonic() + 30
            while len(seen) < 80 and time.monotonic() < deadline:
                seen += [change.id for change in stream.poll(1.0)]
        finally:
            stream.close()
        assert sorted(seen) == sorted(p.id for p in created)  # each object once, nothing lost


@pytest.mark.timeout(90)
def test_trimmed_history_is_history_gone(hazelcast_server: HazelcastServer) -> None:  # noqa: F811
    with nbdb.connect(hazelcast_server.url + "?history=20", namespace=_ns()) as db:
        db.create(KitParent(name="first"))
        early = db.backend.current_revision()
        for i in range(140):  # trimming runs every 64 commits
            db.create(KitParent(name=f"n{i}"))
        with pytest.raises(errors.HistoryGoneError):
            db.backend.watch(["KitParent"], None, early).poll(5)
        recent = db.backend.current_revision() - 5
        stream = db.backend.watch(["KitParent"], None, recent)
        try:
            assert len(stream.poll(5)) == 5
        finally:
            stream.close()


@pytest.mark.timeout(60)
def test_foreign_data_in_the_maps_is_reported_not_fatal(hazelcast_server: HazelcastServer) -> None:  # noqa: F811
    namespace = _ns()
    with nbdb.connect(hazelcast_server.url, namespace=namespace) as db:
        backend = db.backend
        assert isinstance(backend, HazelcastBackend)
        good = db.create(KitParent(name="good"))
        key = backend.layout.object(None, "KitParent", good.id)
        backend._kv.put(key, "a string some other program wrote")
        with pytest.raises(errors.CorruptRecordError):
            db.get(KitParent, good.id)
        backend._ids.put("counter", "not a number")
        with pytest.raises(errors.CorruptRecordError):
            db.allocate_id("counter")


def test_a_namespace_of_another_stored_format_is_refused_at_connect(
    hazelcast_server: HazelcastServer,  # noqa: F811
) -> None:
    namespace = _ns()
    with nbdb.connect(hazelcast_server.url, namespace=namespace) as db:
        db.create(KitParent(name="kept"))
        backend = db.backend
        assert isinstance(backend, HazelcastBackend)
        assert backend._meta.get("format") == "2"  # an empty namespace is marked on first connect
        backend._meta.delete("format")  # as format 1 left it: a head and no marker
    with pytest.raises(errors.StoredFormatError, match="format '1'") as refused:
        nbdb.connect(hazelcast_server.url, namespace=namespace)
    assert (refused.value.found, refused.value.expected) == ("1", "2")
    with nbdb.connect(hazelcast_server.url, namespace=_ns()) as other:
        assert isinstance(other.backend, HazelcastBackend)
        other.backend._meta.put("format", "9")  # a later nbdb's
        with pytest.raises(errors.StoredFormatError, match="format '9'"):
            nbdb.connect(hazelcast_server.url, namespace=other.backend.config.namespace)


# ---------------------------------------------------------------- three members


def _owner_of_head(backend: HazelcastBackend, cluster: HazelcastServer, key: str = "head") -> Member:
    """The member that owns the partition of the namespace's head (or of ``key``): killing it hits every commit."""
    client = backend._client
    partition = client.partition_service.get_partition_id(key)
    owner = client.partition_service.get_partition_owner(partition)
    for info in client.cluster_service.get_members():
        if info.uuid == owner:
            return cluster.member_at(info.address.host, info.address.port)
    raise AssertionError("no owner for the head partition")


@pytest.fixture
def healthy_cluster(hazelcast_cluster: HazelcastServer) -> Iterator[HazelcastServer]:  # noqa: F811
    """The shared 3-member cluster, put back whole after a test that kills a member."""
    hazelcast_cluster.wait_ready(60)
    yield hazelcast_cluster
    for member in hazelcast_cluster.members:
        if not member.is_running():
            member.restart()
    hazelcast_cluster.wait_ready(90)


@pytest.mark.timeout(120)
def test_a_membership_change_asks_for_member_commits_again(
    healthy_cluster: HazelcastServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rolling upgrade ends with a membership change (the last member of the old jar leaves or rejoins
    upgraded): the client's membership listener makes the next commit ask the lock's owner again, so member
    commits come back on within a membership change, not at the back-off's end (here longer than the test).

    Before, a client that once met a member of another protocol committed in six round trips until it restarted.
    """
    from nbdb.backends.hazelcast import _backend

    monkeypatch.setattr(_backend, "_REPROBE_FIRST", 600.0, raising=False)
    with another_protocol(healthy_cluster.url, "runs it without a condition kind") as (db, backend, parent, fixed):
        parent = db.update(parent.replace(size=1))
        assert not backend.member_commit
        fixed.undo()  # the members of the old protocol gone
        parent = db.update(parent.replace(size=2))
        assert not backend.member_commit  # (the back-off alone would wait 600 s)
        owner = _owner_of_head(backend, healthy_cluster, "commit")
        next(m for m in healthy_cluster.members if m is not owner).kill()
        size = 2

        def back_on() -> bool:
            nonlocal parent, size
            size += 1
            parent = db.update(parent.replace(size=size))  # exactly once each, whichever path it took
            return backend.member_commit

        assert eventually(back_on, timeout=30), "member commits stayed off after the membership changed"
        commits = backend.member_commits
        parent = db.update(parent.replace(size=size + 1))
        assert backend.member_commits == commits + 1
        assert db.get(KitParent, parent.id) == parent


@pytest.mark.timeout(240)
def test_member_killed_during_writes_loses_nothing(healthy_cluster: HazelcastServer) -> None:
    namespace = _ns()
    url = healthy_cluster.url + "?timeout=8"
    with (
        nbdb.connect(url, namespace=namespace) as writer_db,
        nbdb.connect(url, namespace=namespace) as reader_db,
        reader_db.cache(KitParent) as cache,
    ):
        assert cache.wait_synced(30)
        backend = writer_db.backend
        assert isinstance(backend, HazelcastBackend)
        victim = _owner_of_head(backend, healthy_cluster)
        watch = reader_db.watch(KitParent, since=reader_db.backend.current_revision())
        acknowledged: dict[uuid.UUID, int] = {}
        acked_at: list[float] = []
        failures: list[str] = []
        stop = threading.Event()
        lock = threading.Lock()

        def write(worker: int) -> None:
            try:
                writes(worker)
            except Exception as exc:
                # Named in the assertions (a thread that died left ``failures`` empty: a CI run read as a hang).
                failures.append(f"writer {worker} died: {exc!r}")
                raise

        def reread(id: uuid.UUID) -> KitParent:
            """The counter as stored, read again through a transient outage (bounded: past it, the writer died)."""
            deadline = time.monotonic() + 30
            while True:
                try:
                    return writer_db.get(KitParent, id)
                except errors.BackendUnavailableError as exc:
                    failures.append(f"re-read: {type(exc).__name__}")
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)

        def writes(worker: int) -> None:
            counter = writer_db.create(KitParent(name=f"counter-{worker}"))
            with lock:
                acknowledged[counter.id] = counter.size
            i = 0
            while not stop.is_set():
                try:
                    if i % 2:
                        counter = writer_db.update(counter.model_copy(update={"size": counter.size + 1}))
                        obj = counter
                    else:
                        obj = writer_db.create(KitParent(name=f"w{worker}-{i}"))
                except errors.CommitUnknownError as exc:
                    failures.append(type(exc).__name__)
                    counter = reread(counter.id)  # the outcome is in the store
                    continue
                except errors.BackendUnavailableError as exc:
                    failures.append(type(exc).__name__)
                    continue
                with lock:
                    acknowledged[obj.id] = obj.size
                    acked_at.append(time.monotonic())
                i += 1

        writers = [threading.Thread(target=write, args=(w,)) for w in range(2)]
        for thread in writers:
            thread.start()
        delivered: dict[uuid.UUID, int] = {}
        try:
            assert eventually(lambda: len(acked_at) >= 40, timeout=30)
            killed_at = time.monotonic()
            victim.kill()
            assert eventually(lambda: any(t > killed_at for t in acked_at), timeout=30), failures
            with lock:
                resumed_after = min(t for t in acked_at if t > killed_at) - killed_at
            count = len(acked_at)
            assert eventually(lambda: len(acked_at) >= count + 40, timeout=60), failures
        finally:
            stop.set()
            for thread in writers:
                thread.join(30)
        log.info("writers resumed %.2fs after the kill; errors meanwhile: %s", resumed_after, failures)
        assert not [f for f in failures if " died: " in f], failures
        # The 5 s target is measured (0.5-2.3 s here, and by nbdb soak); the test guards against a hang,
        # with room for a loaded machine.
        assert resumed_after < 15.0, f"writers stalled {resumed_after:.1f}s after the kill ({failures})"
        stored = {p.id: p.size for p in reader_db.list(KitParent)}
        for id, size in acknowledged.items():
            assert id in stored and stored[id] >= size  # no acknowledged write lost
        assert eventually(lambda: {p.id: p.size for p in cache.list(KitParent)} == stored, timeout=60)
        with watch:
            deadline = time.monotonic() + 60
            while delivered != stored and time.monotonic() < deadline:
                for event in watch.poll(1.0):
                    assert event.new is not None
                    delivered[event.new.id] = event.new.size
        assert delivered == stored  # the watch missed nothing across the kill


@pytest.mark.timeout(60)
def test_a_reply_already_sent_for_is_taken_not_held_by_an_outage_that_began_after(
    hazelcast_server: HazelcastServer,  # noqa: F811
) -> None:
    """A lock granted after the client reported the connection gone is taken at once, and released.

    The hold of an outage (:meth:`nbdb.retry.Outage.wait_up`) is for requests not yet sent. Until
    2026-12-05 waiting for the reply of one already sent went through the same gate (``call(future.result)``:
    a lock's grant, a commit's reads): a grant that came in after the client's DISCONNECTED (a reconnect
    in progress, or the client's late DISCONNECTED after a newer CONNECTED) was held ``timeout`` and then
    reported as BackendUnavailableError, never sent, while this client held the lock in the cluster, not
    released until its lease ran out. The listener is told here as the client tells it.
    """
    from hazelcast.lifecycle import LifecycleState

    timeout = 3.0
    with nbdb.connect(f"{hazelcast_server.url}?timeout={timeout}", namespace=_ns()) as db:
        backend = db.backend
        assert isinstance(backend, HazelcastBackend)
        imap, key, lease = backend._lease_async, "review7", 30.0
        release, waiting = threading.Event(), threading.Event()
        outcome: list[tuple[str, float]] = []

        def holder() -> None:
            with backend._key_lock(imap, key, lease):
                waiting.wait(10)
                release.wait(10)

        def asker() -> None:
            waiting.set()
            began = time.monotonic()
            try:
                with backend._key_lock(imap, key, lease):
                    outcome.append(("granted", time.monotonic() - began))
            except errors.NbdbError as exc:
                outcome.append((type(exc).__name__, time.monotonic() - began))

        first = threading.Thread(target=holder, daemon=True)
        first.start()
        assert eventually(lambda: backend._lease.is_locked(key), timeout=10)
        second = threading.Thread(target=asker, daemon=True)
        second.start()
        assert waiting.wait(10)
        time.sleep(0.5)  # the second thread's request is sent, its grant not yet in
        backend._on_state(LifecycleState.DISCONNECTED)
        try:
            release.set()  # the grant comes in now
            first.join(10)
            second.join(timeout + 5)
        finally:
            backend._on_state(LifecycleState.CONNECTED)
        assert outcome and outcome[0][0] == "granted" and outcome[0][1] < 0.5 + timeout / 2, outcome
        assert eventually(lambda: not backend._lease.is_locked(key), timeout=5), "the grant was never released"


@pytest.mark.timeout(60)
def test_a_late_disconnected_while_connected_neither_holds_nor_refuses_calls(
    hazelcast_server: HazelcastServer,  # noqa: F811
) -> None:
    """The client may report DISCONNECTED after a newer CONNECTED (nbdb.retry.Outage): calls go on all the same.

    The listener is told DISCONNECTED, as the client tells it, while the client is connected. Until
    2026-12-05 every call was then held ``timeout`` and refused as never sent, and once ``timeout`` had
    passed every call was refused at once, for as long as the client stayed connected: nothing marked the
    client up again. A harmless read sent while the outage rule says down (one at a time) finds the client
    connected and ends the outage.
    """
    from hazelcast.lifecycle import LifecycleState

    timeout = 3.0
    with nbdb.connect(f"{hazelcast_server.url}?timeout={timeout}", namespace=_ns()) as db:
        backend = db.backend
        assert isinstance(backend, HazelcastBackend)
        kept = db.create(LogicalSwitch(name="kept"))
        backend._on_state(LifecycleState.DISCONNECTED)  # late: the client is connected
        began = time.monotonic()
        assert db.get(LogicalSwitch, kept.id) == kept
        assert time.monotonic() - began < timeout / 2
        assert backend._outage.down_since is None
        backend._on_state(LifecycleState.DISCONNECTED)
        time.sleep(timeout + 0.5)  # what would have been an outage of timeout
        began = time.monotonic()
        assert db.get(LogicalSwitch, kept.id) == kept  # a read has no retry policy to try again after a refusal
        assert db.update(kept.replace(name="still")).name == "still"
        assert time.monotonic() - began < timeout / 2


# ---------------------------------------------------------------- another writer's data


def _hz(db: nbdb.Database) -> HazelcastBackend:
    backend = db.backend
    assert isinstance(backend, HazelcastBackend)
    return backend


def _head(db: nbdb.Database) -> tuple[int, str]:
    """``head`` as stored in ``db``'s namespace: its revision and commit token."""
    from nbdb.backends.hazelcast._records import HEAD, decode_head

    return decode_head(_hz(db)._meta.get(HEAD))


@contextlib.contextmanager
def _watched(url: str) -> Iterator[tuple[nbdb.Database, KitParent, nbdb.Watch, nbdb.Cache]]:
    """A Database on a namespace of its own holding one object (``first``), and a watch and a synced cache of it."""
    with nbdb.connect(url, namespace=_ns()) as db:
        first = db.create(KitParent(name="first"))
        with db.watch(KitParent) as watch, db.cache(KitParent, shared=False) as cache:
            assert cache.wait_synced(15)
            yield db, first, watch, cache


@contextlib.contextmanager
def _two_clients(url: str) -> Iterator[tuple[nbdb.Database, nbdb.Database]]:
    """Two Databases on one namespace of their own."""
    ns = _ns()
    with nbdb.connect(url, namespace=ns) as db, nbdb.connect(url, namespace=ns) as other:
        yield db, other


def _seen_until(watch: nbdb.Watch, wanted: uuid.UUID) -> list[uuid.UUID]:
    """The ids of the objects of the events ``watch`` delivers, up to ``wanted``'s (10 s at the most)."""
    seen: list[uuid.UUID] = []
    for _ in range(40):
        seen += [e.object.id for e in watch.poll(0.25)]
        if wanted in seen:
            break
    return seen


def _lost_history(db: nbdb.Database, first: KitParent, watch: nbdb.Watch, cache: nbdb.Cache) -> None:
    """What a namespace's readers see once its history is lost, after a later commit: the watch fails with
    HistoryGoneError, and the cache loads again (the later object reaches it, and ``first`` is kept)."""
    later = db.create(KitParent(name="later"))
    with pytest.raises(errors.HistoryGoneError):
        for _ in range(60):
            watch.poll(0.25)
    assert eventually(lambda: cache.get(KitParent, later.id) == later)
    assert cache.get(KitParent, first.id) == first


@pytest.mark.timeout(60)
@pytest.mark.parametrize("foreign", ["a string", bytearray(b"short")], ids=["another-type", "shorter-than-the-header"])
def test_an_object_another_writer_replaced_by_foreign_data_is_one_corrupt_record(
    hazelcast_server: HazelcastServer,  # noqa: F811
    foreign: object,
) -> None:
    """It was raised from the range: every list of its table failed, skip_corrupt or not, and a
    cache that had to load it retried forever."""
    with nbdb.connect(hazelcast_server.url, namespace=_ns()) as db:
        kept = [db.create(KitParent(name=f"kept{i}")) for i in range(3)]
        bad = db.create(KitParent(name="bad"))
        _hz(db)._kv.put(_hz(db).layout.object(None, "KitParent", bad.id), foreign)
        with pytest.raises(errors.CorruptRecordError):
            db.get(KitParent, bad.id)
        with pytest.raises(errors.CorruptRecordError):
            db.list(KitParent)
        assert sorted(p.name for p in db.list(KitParent, skip_corrupt=True)) == [k.name for k in kept]
        with db.cache(KitParent, shared=False) as cache:
            assert cache.wait_synced(15)
            assert sorted(p.name for p in cache.list(KitParent)) == [k.name for k in kept]
            assert (KitParent.nbdb_table, bad.id) in cache.corrupt


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "foreign",
    ["garbage", bytearray(b"y" * 24 + b"\x00\x00\x00\x10abc")],
    ids=["another-type", "bad-length"],
)
def test_a_damaged_change_log_entry_another_writer_put_past_head_does_not_stop_every_commit(
    hazelcast_server: HazelcastServer,  # noqa: F811
    foreign: object,
) -> None:
    """Taken for a decided commit to roll forward, it failed every commit of the namespace with
    HistoryGoneError, for good. nbdb writes an entry whole: a damaged one is no commit of nbdb's."""

    with nbdb.connect(hazelcast_server.url, namespace=_ns()) as db:
        first = db.create(KitParent(name="first"))
        with db.cache(KitParent, shared=False) as cache:
            assert cache.wait_synced(15)
            backend = _hz(db)
            head = _head(db)[0]
            backend._log.put(head + 1, foreign)
            made = [db.create(KitParent(name=f"made{i}")) for i in range(3)]
            moved = db.update(first.model_copy(update={"name": "moved"}))
            want = sorted([moved, *made], key=lambda p: p.name)
            assert sorted(db.list(KitParent), key=lambda p: p.name) == want
            assert eventually(lambda: sorted(cache.list(KitParent), key=lambda p: p.name) == want)


@pytest.mark.timeout(60)
def test_a_head_another_writer_moved_ahead_is_lost_history_not_a_stalled_watch(
    hazelcast_server: HazelcastServer,  # noqa: F811
) -> None:
    """Commits went on past the moved head, but every watch and cache waited for the entries in the
    hole for good: they saw nothing more, and said nothing."""
    from nbdb.backends.hazelcast._records import HEAD, encode_head

    with _watched(f"{hazelcast_server.url}?timeout=2") as (db, first, watch, cache):
        head, token = _head(db)
        _hz(db)._meta.put(HEAD, encode_head(head + 1000, token))
        _lost_history(db, first, watch, cache)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("cascade", [False, True], ids=["plain", "cascade"])
def test_a_reverse_reference_another_writer_added_for_no_object_does_not_refuse_every_delete(
    hazelcast_server: HazelcastServer,  # noqa: F811
    cascade: bool,
) -> None:
    """A reverse-reference key naming an object that does not exist (the key-value family's, so
    Redis and etcd too) refused every delete of its target for good: ReferenceError naming that
    object, and with cascade=True a NotFoundError on it."""
    from nbdb.conformance.kit import KitChild

    with nbdb.connect(hazelcast_server.url, namespace=_ns()) as db:
        parent = db.create(KitParent(name="p"))
        child = db.create(KitChild(parent=parent.id, name="c"))
        backend = _hz(db)
        target = (KitParent.nbdb_table, parent.id)
        real = backend._kv.get(backend.layout.referrer(target, (KitChild.nbdb_table, child.id)))
        ghost = uuid.uuid4()
        backend._kv.put(backend.layout.referrer(target, (KitChild.nbdb_table, ghost)), bytearray(real))
        if not cascade:
            with pytest.raises(errors.ReferenceError) as refused:  # the real referrer still refuses it
                db.delete(parent)
            assert str(child.id) in str(refused.value) and str(ghost) not in str(refused.value)
            db.delete(child)
        db.delete(parent, cascade=cascade)
        with pytest.raises(errors.NotFoundError):
            db.get(KitParent, parent.id)
        assert db.list(KitChild) == []


@pytest.mark.timeout(60)
def test_a_reverse_reference_key_another_writer_added_without_an_id_is_a_corrupt_record(
    hazelcast_server: HazelcastServer,  # noqa: F811
) -> None:
    """A key under a target's reverse references with no id after the table was a raw ValueError
    out of every delete of the target."""
    from nbdb.backends.hazelcast._records import encode_kv

    with nbdb.connect(hazelcast_server.url, namespace=_ns()) as db:
        parent = db.create(KitParent(name="p"))
        backend = _hz(db)
        under = backend.layout.referrers((KitParent.nbdb_table, parent.id))
        backend._kv.put(under + "KitChild/not-a-uuid", encode_kv(1, backend.current_revision(), b""))
        with pytest.raises(errors.CorruptRecordError):
            db.delete(parent)
        assert db.get(KitParent, parent.id) == parent


@pytest.mark.timeout(60)
@pytest.mark.parametrize("foreign", ["garbage", bytearray(b"ab")], ids=["another-type", "too-short"])
def test_a_head_another_writer_damaged_is_put_back_by_the_next_commit(
    hazelcast_server: HazelcastServer,  # noqa: F811
    foreign: object,
) -> None:
    """It failed every commit and list of the namespace with CorruptRecordError, for good: the
    namespace could no longer be written. The next commit puts it back from the log."""
    from nbdb.backends.hazelcast._records import HEAD

    with _watched(hazelcast_server.url) as (db, first, watch, cache):
        _hz(db)._meta.put(HEAD, foreign)
        later = db.create(KitParent(name="later"))
        assert sorted(p.name for p in db.list(KitParent)) == ["first", "later"]
        assert db.get(KitParent, first.id) == first
        assert _seen_until(watch, later.id) == [later.id]
        assert eventually(lambda: cache.get(KitParent, later.id) == later)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("foreign", ["garbage", bytearray(b"ab")], ids=["another-type", "too-short"])
@pytest.mark.parametrize("reader", ["list", "revision", "watch", "cache"])
def test_a_head_another_writer_damaged_is_put_back_by_a_reader_without_waiting_for_a_commit(
    hazelcast_server: HazelcastServer,  # noqa: F811
    foreign: object,
    reader: str,
) -> None:
    """Until a commit came, every list, watch from now or from before, and cache raised
    CorruptRecordError (the cache retried its load with back-off): a reader depended on a later
    writer. Each reader now puts ``head`` back itself, as the commit does (under the commit lock,
    from the log)."""
    from nbdb.backends.hazelcast._records import HEAD

    with _two_clients(hazelcast_server.url) as (db, other):
        db.create(KitParent(name="first"))
        db.create(KitParent(name="lone"))
        since = db.list(KitParent).revision
        later = db.create(KitParent(name="later"))
        want = _head(db)
        _hz(db)._meta.put(HEAD, foreign)
        names = ["first", "later", "lone"]
        if reader == "list":
            assert sorted(p.name for p in other.list(KitParent)) == names
        elif reader == "revision":
            assert _hz(other).current_revision() == want[0]  # what a watch from now starts at
        elif reader == "watch":
            with other.watch(KitParent, since=since) as watch:
                assert _seen_until(watch, later.id) == [later.id]
        elif reader == "cache":
            with other.cache(KitParent, shared=False) as cache:
                assert cache.wait_synced(15)
                assert sorted(p.name for p in cache.list(KitParent)) == names
                assert not cache.corrupt
        assert _head(db) == want  # put back, as it was: no commit came


@pytest.mark.timeout(90)
def test_a_head_is_put_back_past_a_log_entry_another_writer_keyed_with_a_long(
    hazelcast_server: HazelcastServer,  # noqa: F811
) -> None:
    """nbdb keys its log by Integer (the Python client's default); another client (Java's, or
    Python's with ``default_int_type=LONG``) keys the same number as a different Long key, which
    nbdb's reads never see: not nbdb's entry. ``key_set`` lists it as a plain int all the same, and
    the head repair took the largest key, found nothing there by it and gave up: with ``head`` also
    damaged, every commit and list failed with CorruptRecordError, for good. The repair works from
    the entries nbdb can read, and the foreign one stays invisible."""
    import hazelcast
    from hazelcast.config import IntType

    from nbdb.backends.hazelcast._records import HEAD

    with nbdb.connect(hazelcast_server.url, namespace=_ns()) as db:
        first = db.create(KitParent(name="first"))
        backend = _hz(db)
        head = _head(db)[0]
        other = hazelcast.HazelcastClient(
            cluster_name=hazelcast_server.cluster_name,
            cluster_members=[m.address for m in hazelcast_server.members],
            default_int_type=IntType.LONG,
            cluster_connect_timeout=20,
        )
        try:
            log = other.get_map(backend._log_name).blocking()
            log.put(head + 5, "another program's entry")
            assert backend._log.get(head + 5) is None  # invisible to nbdb's reads
            other.get_map(backend._meta_name).blocking().put(HEAD, "garbage")
        finally:
            other.shutdown()
        later = db.create(KitParent(name="later"))
        assert sorted(p.name for p in db.list(KitParent)) == ["first", "later"]
        assert db.get(KitParent, first.id) == first and later.version == 1


@pytest.mark.timeout(60)
def test_a_lease_another_writer_holds_with_text_is_a_held_lock_not_a_type_error(
    hazelcast_server: HazelcastServer,  # noqa: F811
) -> None:
    """``bytes()`` of another writer's text in the lease map was a raw TypeError out of ``lock()``."""
    with nbdb.connect(hazelcast_server.url, namespace=_ns()) as db:
        backend = _hz(db)
        name = "held"  # a lock's lease is keyed by its name
        backend._lease.put(name, "another program's holder")
        with pytest.raises(errors.LockTimeoutError):
            with db.lock("held", ttl=2, timeout=1):
                pass
        backend._lease.delete(name)
        with db.lock("held", ttl=2, timeout=5) as handle:
            assert not handle.lost


@pytest.mark.timeout(60)
def test_an_id_counter_another_writer_made_negative_is_a_corrupt_record(
    hazelcast_server: HazelcastServer,  # noqa: F811
) -> None:
    """A negative counter handed out ids below 1."""
    with nbdb.connect(hazelcast_server.url, namespace=_ns()) as db:
        assert db.allocate_id("c") == 1
        _hz(db)._ids.put("c", -5)
        with pytest.raises(errors.CorruptRecordError, match="counter 'c'"):
            db.allocate_id("c")
        assert db.allocate_id("other") == 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("damaged", ["7", b"7", 7.0, True])
def test_an_id_counter_another_writer_stored_as_text_or_float_is_a_corrupt_record(
    hazelcast_server: HazelcastServer,  # noqa: F811
    damaged: object,
) -> None:
    """nbdb's counter is a number: text was read as its number, and the compare-and-swap of that number
    against the stored text never matched, so allocate_id spun for ever."""
    with nbdb.connect(hazelcast_server.url, namespace=_ns()) as db:
        assert db.allocate_id("c") == 1
        _hz(db)._ids.put("c", damaged)
        with pytest.raises(errors.CorruptRecordError, match="counter 'c'"):
            db.allocate_id("c")
        assert db.allocate_id("other") == 1


@pytest.mark.timeout(60)
def test_the_log_entry_a_watch_stands_on_taken_out_by_another_writer_is_lost_history(
    hazelcast_server: HazelcastServer,  # noqa: F811
) -> None:
    """A hole below ``head`` is lost history (hostile7), but not the entry at the watch's own
    position: read after it, a watch waited ``timeout`` for that entry at every poll and failed with
    BackendUnavailableError ("did not become visible"), as if the cluster were down, for good."""
    with _watched(f"{hazelcast_server.url}?timeout=2") as (db, first, watch, cache):
        db.create(KitParent(name="second"))
        head = _head(db)[0]
        for _ in range(40):
            watch.poll(0.25)
            if watch.revision >= head:
                break
        assert watch.revision == head and cache.wait_synced(15)
        _hz(db)._log.remove(head)  # the entry the watch and the cache stand on
        _lost_history(db, first, watch, cache)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("reader", ["commit", "revision", "list", "watch"])
def test_a_head_another_writer_deleted_is_put_back_not_read_as_revision_0(
    hazelcast_server: HazelcastServer,  # noqa: F811
    reader: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A deleted ``head`` read as revision 0: a watch from now started at 0 and every commit
    caught up entry by entry. With entries in the log it is damage, put back from the log."""
    from nbdb.backends.hazelcast._records import HEAD

    with _two_clients(hazelcast_server.url) as (db, other):
        assert _hz(other).current_revision() == 0  # a new namespace: no head, nothing in the log
        for n in range(6):
            db.create(KitParent(name=f"p{n}"))
        want = _head(db)
        _hz(db)._meta.delete(HEAD)
        if reader == "commit":
            with caplog.at_level(logging.INFO, logger="nbdb"):
                later = other.create(KitParent(name="later"))
            # Put back at once from the newest entry (rolled forward whole, as a commit does), not
            # every entry applied again, one by one, from revision 1.
            assert len([r for r in caplog.records if "decided by a client that did not finish" in r.getMessage()]) <= 1
            assert other.get(KitParent, later.id) == later
            assert _head(db)[0] == want[0] + 1
            return
        if reader == "revision":
            assert _hz(other).current_revision() == want[0]
        elif reader == "list":
            assert other.list(KitParent).revision == want[0]
        elif reader == "watch":
            with other.watch(KitParent) as watch:
                assert watch.poll(0.25) == []
        assert _head(db) == want


def test_threads_reading_at_once_keep_the_clients_reactor_wake_up(hazelcast_server: HazelcastServer) -> None:  # noqa: F811
    """Four threads of gets, getAlls and ranges outside ``o/`` for three seconds (none takes the commit turn):
    a single get afterwards still takes well under the reactor's 10 ms poll tick. Sent each from its caller's
    thread, they lost hazelcast-python-client 5.7's reactor wake-up (every request then waits the tick, for
    the client's life); the send gate lets one of them wake the reactor at a time."""
    with nbdb.connect(hazelcast_server.url, namespace=_ns()) as db:
        backend = db.backend
        assert isinstance(backend, HazelcastBackend)
        db.create(LogicalSwitch(name="seed"))
        before = median_get_ms(backend)
        assert_reactor_wake_up_kept(
            backend,
            [
                lambda _: backend.get_key("x/0"),
                lambda _: backend.get_key("x/1"),
                lambda _: backend.get_keys([f"x/2-{i}" for i in range(5)]),
                lambda _: backend.range_keys([backend.layout.prefix + "r/"]),
            ],
            before=before,
        )


@pytest.mark.timeout(180)
def test_a_member_commit_waiting_on_a_frozen_member_is_given_up_within_twice_the_timeout(
    healthy_cluster: HazelcastServer,
) -> None:
    """``timeout`` bounds "a commit and its outcome settling" (docs/backends/hazelcast.md). A commit run as a task in
    the member owning the commit lock waits for the task's reply with no bound (``_send_commit_task``:
    ``pending.result()``): the client's heartbeat ends only a request to a member that does not answer, and the
    lock's owner answers heartbeats while its task waits on another member, frozen (SIGSTOP), that holds a
    partition (or a backup) the commit reads or writes: it ends only once the members drop the frozen one (3 s in
    the harness, 60 s in a stock member: 2.5-4.1 s measured here from the freeze). nbdb's ``timeout`` (and the
    retry deadline it sets) is made 0.3 s after the connect (the client's heartbeat, 2 s, keeps its connections
    steady on a loaded machine): each create below should end (any outcome: applied, BackendUnavailableError,
    CommitUnknownError) within about 2 x timeout, its settle included (0.5-1.3 s measured at timeout 0.5); 2.0 s
    is asserted, a margin of about 1.3 s for a loaded CI machine, below the 2.5 s the unbounded wait took at least."""
    import dataclasses

    with nbdb.connect(healthy_cluster.url + "?timeout=2", namespace=_ns()) as db:
        backend = db.backend
        assert isinstance(backend, HazelcastBackend)
        backend.config = dataclasses.replace(backend.config, timeout=0.3)  # type: ignore[misc]
        backend.retry = backend.retry.replace(deadline=0.3)
        db.create(KitParent(name="warm"))
        assert backend.member_commit
        owner = _owner_of_head(backend, healthy_cluster, "commit")
        head_owner = _owner_of_head(backend, healthy_cluster)
        victim = head_owner if head_owner is not owner else next(m for m in healthy_cluster.members if m is not owner)
        took: list[float] = []
        outcomes: list[str] = []
        stop = threading.Event()

        def creates() -> None:
            for i in range(5):
                if stop.is_set():
                    return
                started = time.monotonic()
                try:
                    db.create(KitParent(name=f"c{i}"))
                    outcomes.append("applied")
                except errors.NbdbError as exc:
                    outcomes.append(type(exc).__name__)
                took.append(time.monotonic() - started)

        writer = threading.Thread(target=creates, daemon=True)
        victim.pause()
        try:
            writer.start()
            writer.join(15)
        finally:
            stop.set()
            victim.resume()
            victim.kill()  # out of the cluster by now: the fixture starts it again
        writer.join(60)
        log.info("creates beside a frozen member took %s: %s", [round(t, 2) for t in took], outcomes)
        assert not writer.is_alive(), f"a create still waits after 15 s ({took}, {outcomes})"
        assert max(took) < 2.0, f"creates took {[round(t, 2) for t in took]} s with timeout=0.3 ({outcomes})"
