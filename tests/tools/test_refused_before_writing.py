"""What an operator's copy or load must refuse before it writes anything (found by a trial of the tools).

- A list or optional reference to an object neither copied nor in the destination (a ``--topics`` copy of
  ports bound to a chassis that has no topic): the reference was left out, the object written, and its
  second write failed in the destination, which then held most of the copy.
- With ``--skip-corrupt``, an object referencing a corrupt record left out: the same half-copy, with the
  destination's message, which did not say that the missing object was a corrupt source record.
- ``nbdb load URL missing.jsonl``: it connected first, leaving a new, empty sqlite file behind.
- A unique name held by an object to be deleted (``--overwrite`` into another copy of the network, a name
  freed and taken again within one followed batch): the creates came before the deletes, and failed.
"""

from __future__ import annotations

import pathlib
import sqlite3
import uuid

import pytest

import nbdb
from nbdb.cli import main
from nbdb.models import Chassis, LogicalSwitch, LogicalSwitchPort, PortGroup
from nbdb.tools import CheckpointFile, Copier, CopyOptions
from nbdb.tools.checkpoint import Checkpoint
from nbdb.tools.copy import copy_scope

from .conftest import OVN_MODELS, build_network, count_objects

pytestmark = pytest.mark.timeout(60)


def _copier(src: nbdb.Database, dst: nbdb.Database, **options: object) -> Copier:
    return Copier(src, dst, CopyOptions(models=OVN_MODELS, **options))  # type: ignore[arg-type]


def _tenant_on_a_shared_chassis(src: nbdb.Database) -> Chassis:
    host = src.create(Chassis(name="hv0", encap_ip="192.168.0.1"))  # no topic: shared
    sw = src.create(LogicalSwitch(name="sw", topic="tenant-a"))
    ports = [src.create(LogicalSwitchPort(switch=sw, name=f"p{i}", topic="tenant-a")) for i in range(3)]
    src.create(LogicalSwitchPort(switch=sw, name="bound", chassis=host, topic="tenant-a"))  # optional reference
    src.create(PortGroup(name="pg", ports=sorted(p.id for p in ports), topic="tenant-a"))
    return host


def test_an_optional_reference_outside_the_copy_is_refused_before_anything_is_written() -> None:
    with nbdb.connect() as src, nbdb.connect() as dst:
        _tenant_on_a_shared_chassis(src)
        with pytest.raises(nbdb.ReferenceError, match=r"Chassis .* neither copied nor in the destination"):
            _copier(src, dst, topics=["tenant-a"]).run()
        assert count_objects(dst) == 0


def test_a_reference_outside_the_copy_to_an_object_the_destination_holds_is_copied() -> None:
    with nbdb.connect() as src, nbdb.connect() as dst:
        host = _tenant_on_a_shared_chassis(src)
        dst.create(host.model_copy(update={"version": 0}))
        result = _copier(src, dst, topics=["tenant-a"]).run()
        assert result.differences == []
        bound = next(p for p in dst.list(LogicalSwitchPort) if p.name == "bound")
        assert bound.chassis == host.id


def _spoil(path: pathlib.Path, table: str, id: uuid.UUID) -> None:
    """What another tool might do: overwrite one object's stored value with bytes that do not decode."""
    raw = sqlite3.connect(path, isolation_level=None)
    try:
        (key,) = [
            k for (k,) in raw.execute("SELECT key FROM nbdb_keys") if k.startswith("o/") and f"/{table}/{id}" in k
        ]
        raw.execute("UPDATE nbdb_keys SET value = ? WHERE key = ?", (b"{not json", key))
    finally:
        raw.close()


def test_skip_corrupt_refuses_a_referrer_of_a_corrupt_record_before_anything_is_written(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "src.db"
    with nbdb.connect(f"sqlite:///{path}") as src:
        sw = src.create(LogicalSwitch(name="sw"))
        ports = [src.create(LogicalSwitchPort(switch=sw, name=f"p{i}")) for i in range(3)]
        src.create(PortGroup(name="pg", ports=sorted(p.id for p in ports)))
        lone = src.create(LogicalSwitch(name="lone"))
    _spoil(path, "LogicalSwitchPort", ports[1].id)
    with nbdb.connect(f"sqlite:///{path}") as src, nbdb.connect() as dst:
        with pytest.raises(nbdb.CorruptRecordError):
            _copier(src, dst).run()
        with pytest.raises(nbdb.ReferenceError, match=rf"corrupt source records.*LogicalSwitchPort {ports[1].id}"):
            _copier(src, dst, skip_corrupt=True).run()
        assert count_objects(dst) == 0
    # A corrupt record nothing references is left out, as documented.
    _spoil(path, "LogicalSwitch", lone.id)
    with nbdb.connect(f"sqlite:///{path}") as src, nbdb.connect() as dst:
        src.delete(src.list(PortGroup)[0])
        result = _copier(src, dst, skip_corrupt=True).run()
        assert result.differences == [] and result.written == 3  # sw, and the ports but the corrupt one
        assert {s.name for s in dst.list(LogicalSwitch)} == {"sw"}


def test_load_of_a_missing_file_leaves_no_database_file_behind(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "new.db"
    assert main(["load", f"sqlite:///{target}", str(tmp_path / "missing.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert not target.exists()


def test_overwrite_replaces_objects_that_hold_the_same_unique_names_under_other_ids() -> None:
    # --overwrite promises a destination equal to the source; one holding another copy of the network (same
    # names, other ids) stopped the copy with UniqueViolationError: its deletes came after the creates.
    with nbdb.connect() as src, nbdb.connect() as dst:
        n = build_network(src)
        build_network(dst)
        result = _copier(src, dst, overwrite=True).run()
        assert result.differences == []
        assert count_objects(dst) == n


def test_a_followed_batch_that_frees_a_name_and_takes_it_again_is_applied(tmp_path: pathlib.Path) -> None:
    # Source commits that delete a switch and its port and create others of the same names: their net effect,
    # applied deletes last, stopped a resumed (or following) copy with UniqueViolationError.
    models = [LogicalSwitch, LogicalSwitchPort]
    with nbdb.connect() as src, nbdb.connect() as dst:
        old = src.create(LogicalSwitch(name="x"))
        src.create(LogicalSwitchPort(switch=old, name="p"))
        assert Copier(src, dst, CopyOptions(models=models)).run().differences == []
        with src.watch(models) as watch:
            revision = watch.revision
        state = CheckpointFile(tmp_path / "state.json")
        state.save(Checkpoint("memory://src", "memory://dst", copy_scope(models, None), "follow", revision))
        with src.transaction() as txn:
            txn.delete(src.list(LogicalSwitchPort)[0])
            txn.delete(old)
            new = txn.create(LogicalSwitch(name="x"))
        src.create(LogicalSwitchPort(switch=new.id, name="p"))
        options = CopyOptions(models=models)
        result = Copier(
            src, dst, options, checkpoint=state, source_url="memory://src", destination_url="memory://dst"
        ).run()
        assert result.resumed == "follow" and result.syncs == 0
        assert result.differences == []
