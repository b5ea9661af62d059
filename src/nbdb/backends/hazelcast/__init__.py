"""Hazelcast backend: the change-log family on an open-source Hazelcast 5 cluster.

URL (see ``docs/backends/hazelcast.md``)::

    hazelcast://host:port[,host:port...]/cluster-name[?option=value&...]

Layout: five IMaps per namespace, ``nbdb.<namespace>.<name>``::

    kv     family key -> version (8 bytes) | revision of the last write (8) | value
    log    revision -> commit token (24 ASCII bytes) | the commit's object changes | every stored
           key it changes, with its bytes before and after (what it takes to finish the commit)
    meta   "head" -> revision | token of the latest wholly applied commit;  "trim" -> newest
           trimmed revision;  "commit" is the key of the commit lock (an IMap key lock, nothing stored)
    lease  lock name -> owner token (TTL'd entries);  ids: counter name -> last id handed out

Why a commit is atomic. Under the namespace's commit lock a committer reads ``head`` and
every key its commit checks or changes (all at once), checks the conditions, and decides
the commit with one single-key write: ``putIfAbsent`` of its ``log`` entry at ``head + 1``.
Then it moves each key from the bytes it read to the new ones (compare-and-set, all at
once) and, once they are in, ``head`` to ``head + 1``. Before the decision nothing is
written; after it, the entry holds everything needed to finish the commit, and applying
it again changes nothing. A committer that finds a decided entry past ``head`` (its client
died, or its lock lapsed) applies it before its own commit.

Where the members have nbdb's jar (java/hazelcast-member), the client sends all of this as
one task that the member owning the commit lock runs, with the same bytes (:mod:`._member`);
the task hands back, having written nothing, what needs the client's own protocol (a
decided commit to apply first, data nbdb did not write).

Why readers never see half of one. ``head`` moves only once its commit is wholly applied,
so every commit up to ``head`` is visible whole; a list takes the commit lock, so it reads
exactly the state at the ``head`` it reports. One that outlasts the lock's lease (``commit_lease``)
is told by its failed unlock and checked: read again, or refused, if a commit was decided meanwhile.

Why the change stream has no gap. Revisions are dense (one entry per revision, taken by
``putIfAbsent``), each ``log`` entry holds the whole commit (so a transaction is one change
in every stream), and a reader delivers entries up to ``head`` only: every one of them is
written, unless it is at or below the ``trim`` mark, which is raised before entries are
removed. A watcher also checks that the entry of its own revision still holds the token it
saw (the pub/sub family's anchor), so a cluster that lost its data (every member
restarted: the open-source server keeps nothing on disk) gives
:class:`nbdb.HistoryGoneError` and caches re-list.

Exactly once. Every commit carries the key-value family's commit token: the key
``t/<token>`` is written by the same commit on condition that it is absent. When the reply
to the decision is lost (or a write after it fails) the backend raises
:class:`nbdb.CommitUnknownError` and the family settles the token with a commit of its own
that writes the key as "void" if it is absent; that commit first applies any decided
commit it finds, so it finds the token applied (the commit landed, and its revision is
returned) or voids it (it never will land). A commit is never applied twice and never
reported as a conflict.

Locks and ids come from IMaps (TTL'd lease entries, and counters moved by
compare-and-swap), not from the CP Subsystem: since Hazelcast 5.5 the CP Subsystem is an
Enterprise feature and the open-source member refuses every CP call, unsafe mode included.
They survive the loss of a member (synchronous backups) but not a split brain.
"""

from nbdb.backends.hazelcast._backend import HazelcastBackend
from nbdb.backends.hazelcast._client import HazelcastConfig, parse_url

__all__ = ["HazelcastBackend", "HazelcastConfig", "parse_url"]
