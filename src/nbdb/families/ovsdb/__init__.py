"""The OVSDB-transactional family: nbdb models as rows of real OVSDB tables.

One job per module:

* :mod:`.datum` — OVSDB values on the wire and as Python cells, update2 diffs;
* :mod:`.schema` — a database schema as typed data;
* :mod:`.mapping` — models onto tables and columns, for any schema (bindings as data);
* :mod:`.ovn` — the bindings of nbdb's logical schema in ``OVN_Northbound``;
* :mod:`.rows` — rows <-> model documents, derived versions, commit tokens;
* :mod:`.replica` — the monitored rows, their records and change history;
* :mod:`.stream` — change streams read from a replica;
* :mod:`.results` — a transaction's outcome as typed per-operation errors;
* :mod:`.planner` — one commit as one OVSDB transaction;
* :mod:`.settle` — settling a commit whose reply was lost;
* :mod:`.counters` — id counters in ``NB_Global``: the increment, settling a lost one;
* :mod:`.family` — the SPI on top of them (:class:`OvsdbFamilyBackend`);
* :mod:`.schemagen` — an OVSDB schema for models without a bound table;
* :mod:`.modelgen` — nbdb models generated from any OVSDB schema.

See ``docs/backends/ovsdb.md`` for the mapping, versions, revisions and the
guarantees under faults.
"""

from nbdb.families.ovsdb.family import OvsdbFamilyBackend, TransactLost, TransactNotSent
from nbdb.families.ovsdb.mapping import Mapping_, TableBinding, TableMap, build_mapping
from nbdb.families.ovsdb.ovn import OVN_BINDINGS
from nbdb.families.ovsdb.replica import Replica
from nbdb.families.ovsdb.schema import DatabaseSchema
from nbdb.families.ovsdb.schemagen import generate_schema

__all__ = [
    "OVN_BINDINGS",
    "DatabaseSchema",
    "Mapping_",
    "OvsdbFamilyBackend",
    "Replica",
    "TableBinding",
    "TableMap",
    "TransactLost",
    "TransactNotSent",
    "build_mapping",
    "generate_schema",
]
