"""Redis backend: atomic Lua commits, a resumable change stream per topic, locks and ids.

URLs (see ``docs/backends/redis.md``)::

    redis://[[user]:password@]host[:port][/db][?option=value&...]
    rediss://...                                   (TLS)
    redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db][?...]

Every commit is one Lua script (EVALSHA, reloaded on NOSCRIPT) that checks the
conditions, bumps the revision, appends the commit to the Redis Streams that
watchers read (before it writes the keys, past any entry another writer put
there), then writes the keys, so a watcher that reconnects resumes from its
revision and misses nothing. The generic part (merging logs, anchors,
"history gone") lives in :mod:`nbdb.families.pubsub`.

Layout under the root ``<prefix>:{<namespace>}:`` (``nbdb:{}:`` by default)::

    k:<key>        hash {v: value, n: version, m: mod revision} of one family key
    d:<dir>        set of the children of a directory (``o/t/``: ``tbl/``...; leaves: ids)
    dmr            hash dir -> revision of the last change below it (validates batched lists)
    rev            the revision counter (INCR once per commit)
    last           "<rev> <token>": the head, written by every commit with its log entry (reads take it here)
    log            stream <rev>-0 {t, c}: every commit, its token and its object changes
    log:<topic>    stream <rev>-0 {t, c}: the changes of one topic's objects
    logs           set of the topics that have a log
    ct:<token>     revision of an applied commit (10 minutes: makes a retried commit exactly-once)
    lease:<key>    lock tokens (SET NX PX)
    id:<name>      id counters (INCR)
"""

from __future__ import annotations

from nbdb.backends.redis.backend import RedisBackend
from nbdb.backends.redis.config import RedisConfig, parse_url

__all__ = ["RedisBackend", "RedisConfig", "parse_url"]
