"""The topic registry's rules (families/kvregistry.py), without a server: what etcd and Hazelcast share."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from nbdb.backends.etcd.wire import prefix_end
from nbdb.families.kvregistry import Registrations, gaps, parse_marks, topic_of, topics_of

OBJECTS = "ns/o/"
topic = st.text(st.characters(blacklist_characters="/", blacklist_categories=("Cs",)), min_size=1, max_size=6)
key_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=10)


def _utf16(text: str) -> bytes:
    return text.encode("utf-16-be")


def _etcd_spans(topics: list[str]) -> tuple[list[bytes], list[tuple[bytes, bytes]]]:
    """The prefixes and gaps as etcd's backend spells them: half-open byte ranges."""
    starts, between = gaps(OBJECTS, topics)
    low, high = OBJECTS.encode(), prefix_end(OBJECTS.encode())
    spans = [
        (low if after is None else prefix_end(after.encode()), high if before is None else before.encode())
        for after, before in between
    ]
    return [s.encode() for s in starts], spans


@given(st.lists(topic, max_size=8), st.one_of(topic, key_text), key_text)
def test_etcd_gaps_and_topics_cover_every_object_key_exactly_once(topics: list[str], first: str, rest: str) -> None:
    """Every key under o/ is under exactly one registered topic or in exactly one gap: a gap probe finds
    every unregistered topic, and never a registered one's keys (listed twice)."""
    key = f"{OBJECTS}{first}/{rest}".encode() if first in topics else f"{OBJECTS}{first}{rest}".encode()
    starts, spans = _etcd_spans(topics)
    under = [s for s in starts if key.startswith(s)]
    inside = [(a, b) for a, b in spans if a <= key < b]
    assert len(under) + len(inside) == 1, (key, starts, spans)
    assert starts == sorted(starts) and len(starts) == len(set(topics))


@given(st.lists(topic, max_size=8), st.one_of(topic, key_text), key_text)
def test_hazelcast_gaps_cover_every_object_key_and_hold_no_registered_key(
    topics: list[str], first: str, rest: str
) -> None:
    """Hazelcast's inclusive bounds in Java's order (UTF-16 units): the topics' spans and the gaps cover o/ to
    o/U+FFFF; a gap holds no key of a registered topic but those past ``o/<topic>/`` U+FFFF."""
    key = f"{OBJECTS}{first}/{rest}" if first in topics else f"{OBJECTS}{first}{rest}"
    if _utf16(key) > _utf16(OBJECTS + "\uffff"):
        return  # beyond what o/ to o/U+FFFF covers (as before)
    starts, between = gaps(OBJECTS, topics, _utf16)
    spans = [
        (OBJECTS if after is None else f"{after}\uffff", OBJECTS + "\uffff" if before is None else before)
        for after, before in between
    ]
    under = [s for s in starts if key.startswith(s)]
    inside = [(a, b) for a, b in spans if _utf16(a) <= _utf16(key) <= _utf16(b)]
    assert under or inside
    if under and not key.startswith(f"{under[0]}\uffff"):
        assert all(key == b for _, b in inside)  # only a gap's inclusive end, the topic's prefix itself


def test_no_topic_registered_is_one_gap_over_o() -> None:
    assert gaps(OBJECTS, []) == ([], [(None, None)])
    assert gaps(OBJECTS, ["b", "a", "a"]) == ([f"{OBJECTS}a/", f"{OBJECTS}b/"], [
        (None, f"{OBJECTS}a/"), (f"{OBJECTS}a/", f"{OBJECTS}b/"), (f"{OBJECTS}b/", None)])  # fmt: skip


@given(st.lists(st.one_of(topic, st.builds(lambda a, b: f"{a}/{b}", topic, key_text)), max_size=8))
def test_registry_keys_name_topics_and_foreign_names_apart(names: list[str]) -> None:
    keys: list[object] = [f"ns/p/{n}" for n in names] + [b"ns/p/bytes", "ns/q/other", 7]
    found, foreign = parse_marks("ns/p/", keys)
    assert found == [n for n in names if "/" not in n]
    assert foreign == [n for n in names if "/" in n]


@given(topic, key_text)
def test_an_object_key_names_its_topic(part: str, rest: str) -> None:
    assert topic_of(OBJECTS, f"{OBJECTS}{part}/{rest}") == part
    assert topics_of(OBJECTS, [f"{OBJECTS}{part}/{rest}", f"other/{part}/x"]) == {part}


def test_reserve_bounds_the_registrations_in_flight_and_skips_known_ones() -> None:
    book: Registrations[None] = Registrations(limit=3)
    assert book.reserve(["d", "a", "b", "a"]) == ["a", "b", "d"]
    assert book.reserve(["c", "e"]) == []  # no room left
    book.settled(["a"], registered=True)
    book.settled(["b"], registered=False)  # failed: a later commit or scan registers it
    assert book.registered == {"a"} and book.in_flight == {"d"} and book.generation == 1
    assert book.reserve(["a", "b", "c", "d", "e"]) == ["b", "c"]


def test_without_a_limit_nothing_is_in_flight() -> None:
    book: Registrations[None] = Registrations()
    assert book.new(["b", "a"]) == ["a", "b"] == book.reserve(["a", "b"])
    assert book.in_flight == set()
    book.settled(["a", "b"], registered=True)
    assert book.new(["a", "b", "c"]) == ["c"]


def test_a_registration_answered_makes_the_read_held_stale() -> None:
    book: Registrations[str] = Registrations(limit=10)
    _, young, generation = book.held(10.0, 1.0)
    assert not young
    book.keep(10.0, "first", generation)
    assert book.held(10.5, 1.0) == ((10.0, "first"), True, 0)
    assert book.held(11.0, 1.0)[1] is False  # older than the age: read again
    book.keep(9.0, "older", generation)  # a read sent before the one kept never replaces it
    assert book.read == (10.0, "first")
    book.settled(book.reserve(["t"]), registered=True)
    assert book.read is None
    book.keep(12.0, "sent before the registration", generation)
    assert book.read is None
    book.keep(12.0, "fresh", book.generation)
    assert book.read == (12.0, "fresh")


def test_strays_a_stale_read_found_stay_registered_and_others_are_adopted() -> None:
    book: Registrations[None] = Registrations(limit=10)
    stale = book.generation
    book.settled(book.reserve(["mine"]), registered=True)
    assert book.adopt({"mine", "theirs"}, stale) == ["theirs"]  # read before "mine" was registered
    assert book.registered == {"mine"}
    assert book.adopt({"mine", "theirs"}, book.generation) == ["mine", "theirs"]  # its key deleted since
    assert book.adopt({"mine"}) == ["mine"] and book.registered == set()  # never stale (etcd)


def test_prune_checks_start_from_enough_candidates_a_period_after_first_seen() -> None:
    book: Registrations[None] = Registrations()
    few = [f"t{i}" for i in range(31)]
    assert book.due(few, 0.0, 32, 60.0) == [] and book.checked == {}
    many = [*few, "t31"]
    assert book.due(many, 0.0, 32, 60.0) == []  # first seen now: checked a period on
    assert book.due(many, 59.9, 32, 60.0) == []
    assert book.due(many, 60.0, 32, 60.0) == many
    book.checked_at(many[:10], 60.0)
    assert book.due(many, 61.0, 32, 60.0) == many[10:]
    assert book.due(many, 120.0, 32, 60.0) == many
    book.settled(["t0"], registered=True)
    book.forget(["t0"])
    assert book.registered == set()


@given(st.lists(topic, min_size=1, max_size=20, unique=True), st.integers(0, 1000), st.integers(0, 1000))
def test_a_topic_is_due_only_a_period_after_it_was_last_seen_or_checked(
    candidates: list[str], first: int, later: int
) -> None:
    book: Registrations[None] = Registrations()
    assert book.due(candidates, first, 1, 60.0) == []
    due = book.due(candidates, first + later, 1, 60.0)
    assert due == (candidates if later >= 60.0 else [])
