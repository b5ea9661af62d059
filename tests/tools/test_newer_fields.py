"""A newer model's fields survive ``nbdb dump``/``load``, ``nbdb copy`` and ``verify`` (a rolling upgrade).

A record a newer version of a controller wrote holds fields this version's
model lacks; reads keep them (``__pydantic_extra__``) and writes put them
back. The tools must too: a backup taken, or a migration run, by the older
version must not erase what the newer one stored.
"""

from __future__ import annotations

import io
import json
import pathlib

import pytest
from hypothesis import HealthCheck, given, settings

import nbdb
from nbdb.models import LogicalSwitch
from nbdb.testing.strategies import newer_fields
from nbdb.tools import Copier, CopyOptions, dump, load, verify

pytestmark = pytest.mark.timeout(60)

_NEWER = newer_fields(LogicalSwitch, max_text=6, max_leaves=5)


def _written_by_newer(db: nbdb.Database, newer: dict[str, object]) -> LogicalSwitch:
    stored = db.create(LogicalSwitch(name="newer"))
    document = {**json.loads(stored.model_dump_json(exclude={"version"})), **newer}
    db.backend.write_raw(stored.nbdb_table, stored.id, stored.topic, json.dumps(document).encode())
    return stored


def _stored_fields(db: nbdb.Database, obj: LogicalSwitch) -> dict[str, object]:
    record = db.backend.read(obj.nbdb_table, obj.id)
    assert record is not None
    return json.loads(record.data)  # type: ignore[no-any-return]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(newer=_NEWER)
def test_dump_and_load_keep_a_newer_models_fields(tmp_path: pathlib.Path, newer: dict[str, object]) -> None:
    for f in tmp_path.glob("*.db"):
        f.unlink()
    with nbdb.connect(f"sqlite://{tmp_path}/a.db") as src, nbdb.connect(f"sqlite://{tmp_path}/b.db") as dst:
        stored = _written_by_newer(src, newer)
        out = io.BytesIO()
        dump(src, out, models=[LogicalSwitch])
        line = next(json.loads(x) for x in out.getvalue().splitlines() if b'"table"' in x)
        assert {k: line["data"].get(k) for k in newer} == newer
        load(dst, io.BytesIO(out.getvalue()))
        kept = _stored_fields(dst, stored)
        assert {k: kept.get(k) for k in newer} == newer and kept["name"] == "newer"
        assert verify(src, dst, [LogicalSwitch]) == []
        # Into the memory store too, which keeps objects: a dump of it has them again.
        with nbdb.connect("memory://") as mem:
            load(mem, io.BytesIO(out.getvalue()))
            again = io.BytesIO()
            dump(mem, again, models=[LogicalSwitch])
            assert again.getvalue().splitlines()[1:-1] == out.getvalue().splitlines()[1:-1]


def test_copy_keeps_a_newer_models_fields_and_verify_sees_them(tmp_path: pathlib.Path) -> None:
    newer = {"mtu_hint": 9000, "labels": {"a": [1, None]}}
    with nbdb.connect(f"sqlite://{tmp_path}/a.db") as src, nbdb.connect(f"sqlite://{tmp_path}/b.db") as dst:
        stored = _written_by_newer(src, newer)
        Copier(src, dst, CopyOptions(models=[LogicalSwitch])).run()
        assert {k: _stored_fields(dst, stored).get(k) for k in newer} == newer
        # A newer field that differs is a difference, and a copy over it mends it.
        _written_by_newer_again = {**newer, "mtu_hint": 1500}
        document = {**_stored_fields(src, stored), **_written_by_newer_again}
        src.backend.write_raw(stored.nbdb_table, stored.id, stored.topic, json.dumps(document).encode())
        differences = verify(src, dst, [LogicalSwitch])
        assert [(d.kind, set(d.fields)) for d in differences] == [("different", {"mtu_hint"})]
        Copier(src, dst, CopyOptions(models=[LogicalSwitch], overwrite=True)).run()
        assert _stored_fields(dst, stored)["mtu_hint"] == 1500
        assert verify(src, dst, [LogicalSwitch]) == []
