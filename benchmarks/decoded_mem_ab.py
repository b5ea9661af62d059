"""A/B of the bytes a decoded copy costs: ``tracemalloc`` per object a ``db.list`` and a ``db.cache`` hold.

One SQLite file per process is filled with ``--count`` ``KitParent`` objects, in transactions of
``--batch`` (1: a commit per object, each copy of a revision of its own), after 300 creates and
deletes that take the revisions past CPython's small ints; then, per side and round, one process
each (sides in turns):

- ``list B/obj``: what is still allocated once ``db.list()`` returned, per object it returned;
- ``cache B/obj``: what is still allocated once ``db.cache()`` synced, per object.

::

    python benchmarks/decoded_mem_ab.py --a /path/to/main/src --b src --count 5000 --batch 500 --rounds 2
"""

from __future__ import annotations

from abrun import ab_parser, ab_rounds, print_medians

WORKER = r"""
import gc, json, os, sys, tempfile, tracemalloc
import nbdb
from nbdb.conformance.kit import KitParent

count, batch = int(sys.argv[1]), int(sys.argv[2])
db = nbdb.connect(f"sqlite:///{tempfile.mkdtemp()}/db.sqlite")
for i in range(300):
    db.create(KitParent(name=f"warm{i}"))
for obj in db.list(KitParent):
    db.delete(obj)
made = 0
while made < count:
    with db.transaction() as txn:
        for _ in range(min(batch, count - made)):
            txn.create(KitParent(name=f"p{made}"))
            made += 1
db.list(KitParent)  # decoders and shared tables built outside the measure

def held():
    gc.collect()
    return tracemalloc.get_traced_memory()[0]

tracemalloc.start()
before = held()
listed = db.list(KitParent)
per_list = (held() - before) / len(listed)
del listed
before = held()
cache = db.cache(KitParent)
cache.wait_synced(timeout=120)
per_cache = (held() - before) / count
tracemalloc.stop()
print(json.dumps({"list B/obj": per_list, "cache B/obj": per_cache}))
sys.stdout.flush()
os._exit(0)
"""


def main() -> None:
    parser = ab_parser(__doc__, 5_000)  # --count: the objects
    parser.add_argument("--batch", type=int, default=500, help="objects per transaction (1: a commit each)")
    opts = parser.parse_args()
    rows = ab_rounds({"a": opts.a, "b": opts.b}, opts.rounds, WORKER, [str(opts.count), str(opts.batch)])
    print_medians(rows)


if __name__ == "__main__":
    main()
