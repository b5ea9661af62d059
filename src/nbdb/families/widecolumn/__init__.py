"""The wide-column family: objects, revisions, references, locks and ids on a wide-column store.

A wide-column store (Apache Cassandra, ScyllaDB) has no multi-partition
transaction. What it has is a compare-and-set on one partition (Cassandra's
lightweight transactions: Paxos), and batches that apply atomically and in
isolation within one partition. This package builds :class:`nbdb.spi.Backend`
on those primitives once; a backend supplies a :class:`WideColumnStore`
(:mod:`~nbdb.families.widecolumn.primitives`: create tables, select, apply a
batch, close — and translate its client's errors) and declares its
capabilities. The Cassandra backend's store speaks CQL; a ScyllaDB backend
would reuse that dialect.

A topic is a partition: listing one topic reads one partition, a transaction
whose objects share a topic commits as one conditional batch (atomic), and a
wider one raises UnsupportedError. Revisions are dense and exact, with no
clock involved (:mod:`~nbdb.families.widecolumn.sequencer`); watchers never
skip or repeat a change (:mod:`~nbdb.families.widecolumn.stream`); a commit
whose reply was lost is settled, never guessed
(:mod:`~nbdb.families.widecolumn.commit`). The tables are described in
:mod:`~nbdb.families.widecolumn.layout`.
"""

from __future__ import annotations

from nbdb.families.rules import NO_TOPIC
from nbdb.families.widecolumn.backend import WideColumnBackend
from nbdb.families.widecolumn.layout import BUCKET_SIZE
from nbdb.families.widecolumn.options import WideColumnOptions
from nbdb.families.widecolumn.primitives import (
    Applied,
    Column,
    ColumnType,
    Compare,
    Condition,
    Delete,
    EntryEquals,
    ForwardingStore,
    Insert,
    OutcomeUnknown,
    PendingApply,
    PendingReads,
    Row,
    Select,
    Table,
    Update,
    WideColumnStore,
    Write,
)
from nbdb.families.widecolumn.sharing import ChangeSignal, NamespaceState

__all__ = [
    "BUCKET_SIZE",
    "NO_TOPIC",
    "Applied",
    "ChangeSignal",
    "Column",
    "ColumnType",
    "Compare",
    "Condition",
    "Delete",
    "EntryEquals",
    "ForwardingStore",
    "Insert",
    "NamespaceState",
    "OutcomeUnknown",
    "PendingApply",
    "PendingReads",
    "Row",
    "Select",
    "Table",
    "Update",
    "WideColumnBackend",
    "WideColumnOptions",
    "WideColumnStore",
    "Write",
]
