"""Random operation sequences against the backend and a reference model (hypothesis)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

import nbdb
from nbdb.conformance.kit import KitChild, KitParent
from nbdb.events import EventKind

pytestmark = [pytest.mark.nbdb_kit, pytest.mark.timeout(300)]

TOPICS = st.sampled_from([None, "ta", "tb"])


class ReferenceModel(RuleBasedStateMachine):
    """Every operation must do to the backend what it does to a plain dict."""

    url = "memory://"
    parents = Bundle("parents")

    def __init__(self) -> None:
        super().__init__()
        self.db = nbdb.connect(self.url, namespace=f"kit-sm-{uuid.uuid4().hex[:12]}")
        self.start = self.db.list(KitParent).revision
        self.model: dict[uuid.UUID, Any] = {}
        self.stale: dict[uuid.UUID, Any] = {}

    def teardown(self) -> None:
        try:
            self._check_watch_replays_to_model()
        finally:
            self.db.close()

    def _check_watch_replays_to_model(self) -> None:
        replay: dict[uuid.UUID, Any] = {}
        with self.db.watch([KitParent, KitChild], since=self.start) as watch:
            target = self.db.list(KitParent).revision
            while watch.revision < target:
                for event in watch.poll(1.0):
                    if event.kind is EventKind.DELETED:
                        assert event.id in replay, "delete of an object never created"
                        del replay[event.id]
                    else:
                        previous = replay.get(event.id)
                        assert (previous is None) == (event.kind is EventKind.CREATED)
                        assert event.old == previous
                        replay[event.id] = event.new
        assert replay == self.model

    @rule(target=parents, name=st.text(max_size=8), topic=TOPICS)
    def create_parent(self, name: str, topic: str | None) -> uuid.UUID:
        stored = self.db.create(KitParent(name=name, topic=topic))
        self.model[stored.id] = stored
        return stored.id

    @rule(parent=parents, value=st.integers(-5, 5))
    def create_child(self, parent: uuid.UUID, value: int) -> None:
        obj = KitChild(parent=parent, name="c", value=value)
        if parent in self.model:
            self.model[obj.id] = self.db.create(obj)
        else:
            with pytest.raises(nbdb.ReferenceError):
                self.db.create(obj)

    @rule(parent=parents, size=st.integers(0, 100), use_stale=st.booleans())
    def update_parent(self, parent: uuid.UUID, size: int, use_stale: bool) -> None:
        current = self.model.get(parent)
        copy = self.stale.get(parent) if use_stale else current
        if current is None or copy is None:
            return
        if copy.version != current.version:
            with pytest.raises(nbdb.ConflictError):
                self.db.update(copy.replace(size=size))
            return
        self.stale[parent] = current
        self.model[parent] = self.db.update(copy.replace(size=size))

    @rule(parent=parents, cascade=st.booleans())
    def delete_parent(self, parent: uuid.UUID, cascade: bool) -> None:
        current = self.model.get(parent)
        if current is None:
            with pytest.raises(nbdb.NotFoundError):
                self.db.delete(KitParent, parent)
            return
        children = [k for k, v in self.model.items() if isinstance(v, KitChild) and v.parent == parent]
        if children and not cascade:
            with pytest.raises(nbdb.ReferenceError):
                self.db.delete(current)
            return
        if (
            children
            and self.db.capabilities.transactions is nbdb.Atomicity.SINGLE_PARTITION
            and len({current.topic, *(self.model[k].topic for k in children)}) > 1
        ):
            # A cascade commits as one transaction: across topics (partitions) it is refused.
            with pytest.raises(nbdb.UnsupportedError):
                self.db.delete(current, cascade=True)
            return
        self.db.delete(current, cascade=cascade)
        for key in [*children, parent]:
            del self.model[key]

    @rule(count=st.integers(1, 4), topic=TOPICS)
    def transaction_of_parents(self, count: int, topic: str | None) -> None:
        if self.db.capabilities.transactions is nbdb.Atomicity.NONE:
            return
        with self.db.transaction() as txn:
            for i in range(count):
                txn.create(KitParent(name=f"txn{i}", topic=topic))
        for stored in txn.results:
            assert stored is not None
            self.model[stored.id] = stored

    @invariant()
    def store_matches_model(self) -> None:
        stored: dict[uuid.UUID, Any] = {o.id: o for o in self.db.list(KitParent)}
        stored.update({o.id: o for o in self.db.list(KitChild)})
        assert stored == self.model


def test_random_operations_match_reference_model(nbdb_url: str) -> None:
    machine = type("BoundReferenceModel", (ReferenceModel,), {"url": nbdb_url})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=15,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
