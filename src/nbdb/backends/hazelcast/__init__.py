"""Hazelcast backend: the change-log family on an open-source Hazelcast 5 cluster.

URL (see ``docs/backends/hazelcast.md``)::

    hazelcast://host:port[,host:port...]/cluster-name[?option=value&...]

Layout: five IMaps per namespace, ``nbdb.<namespace>.<name>``::

    kv     family key -> version (8 bytes) | revision of the last write (8) | value
    log    revision -> commit token (24 ASCII bytes) | the commit's key changes (pubsub encoding)
    meta   "head" -> revision | token of the latest commit;  "trim" -> newest trimmed revision;
           "commit" is the key of the commit lock (an IMap key lock, nothing stored)
    lease  lock name -> owner token (TTL'd entries);  ids: counter name -> last id handed out

Why a commit is atomic. A commit is one Hazelcast transaction of type TWO_PHASE with
durability 1: the member coordinating it copies the transaction log to a backup member
before committing, and if the coordinator dies the backup finishes the commit or rolls it
back (never half of it). The transaction reads ``head`` with ``getForUpdate`` (a
transactional key lock, so revisions are unique and dense even if two committers ever ran
at once), checks every condition on keys it locks, and writes the objects, the ``log``
entry of revision ``head + 1`` and the new ``head``. All of it lands, or none of it.

Why readers never see half of one. Hazelcast applies the commit phase partition by
partition, so an instant exists where some keys of a commit are visible and others are
not. Every committer therefore holds the ``commit`` key lock of ``meta`` from before its
transaction begins until ``commit()`` has returned, which Hazelcast does only once every
partition applied its part. Hence when a committer holds that lock, every commit up to
``head`` is wholly visible, and a list that takes the same lock reads one revision exactly.

Why the change stream has no gap. Revisions are dense (one ``head`` key lock), each
``log`` entry holds the whole commit (so a transaction is one change in every stream),
and a reader delivers entries in order only up to the first one it cannot see yet: an
entry below ``head`` that is missing is a commit still being applied, never a hole, unless
it is at or below the ``trim`` mark, which is raised before entries are removed. A watcher
also checks that the entry of its own revision still holds the token it saw (the pub/sub
family's anchor), so a cluster that lost its data (every member restarted: the open-source
server keeps nothing on disk) gives :class:`nbdb.HistoryGoneError` and caches re-list.
A Ringbuffer or the event journal would be the grid's natural log, but neither takes part
in a transaction (nor is the journal readable from the Python client), so the log is a map.

Exactly once. Every commit carries the key-value family's commit token: the key
``t/<token>`` is written in the same transaction on condition that it is absent. When the
reply to ``commit()`` is lost the backend raises :class:`nbdb.CommitUnknownError` and the
family settles the token with a commit of its own that writes the key as "void" if it is
absent. That commit waits on the key's lock, which our transaction holds until it has
committed or rolled back (even when the backup member finishes it), so it finds the token
applied (the commit landed, and its revision is returned) or voids it (it never will
land). A commit is never applied twice and never reported as a conflict.

Locks and ids come from IMaps (TTL'd lease entries, and counters moved by
compare-and-swap), not from the CP Subsystem: since Hazelcast 5.5 the CP Subsystem is an
Enterprise feature and the open-source member refuses every CP call, unsafe mode included.
They survive the loss of a member (synchronous backups) but not a split brain.
"""

from nbdb.backends.hazelcast._backend import HazelcastBackend
from nbdb.backends.hazelcast._client import HazelcastConfig, parse_url

__all__ = ["HazelcastBackend", "HazelcastConfig", "parse_url"]
