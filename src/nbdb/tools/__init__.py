"""Moving data between backends: ``nbdb copy`` (live, resumable, verified), ``nbdb dump`` and ``nbdb load``.

See ``docs/tools.md``. The pieces are usable from Python too::

    from nbdb.tools import Copier, CopyOptions

    with nbdb.connect(src_url) as src, nbdb.connect(dst_url) as dst:
        result = Copier(src, dst, CopyOptions(follow=False)).run()
        assert result.differences == []
"""

from __future__ import annotations

from nbdb.tools.apply import Applier
from nbdb.tools.checkpoint import CheckpointFile, default_state_path
from nbdb.tools.copy import Copier, CopyIncomplete, CopyOptions, CopyResult
from nbdb.tools.dump import FORMAT, VERSION, DumpFile, DumpFormatError, dump, load, read_dump
from nbdb.tools.order import object_order, table_order
from nbdb.tools.snapshot import Snapshot, take_snapshot
from nbdb.tools.verify import Difference, compare, verify

__all__ = [
    "FORMAT",
    "VERSION",
    "Applier",
    "CheckpointFile",
    "Copier",
    "CopyIncomplete",
    "CopyOptions",
    "CopyResult",
    "Difference",
    "DumpFile",
    "DumpFormatError",
    "Snapshot",
    "compare",
    "default_state_path",
    "dump",
    "load",
    "object_order",
    "read_dump",
    "table_order",
    "take_snapshot",
    "verify",
]
