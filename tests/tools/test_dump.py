"""``nbdb dump`` / ``nbdb load``: round trips, and refusal of corrupt, truncated and foreign files."""

from __future__ import annotations

import hashlib
import io
import json
import pathlib
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nbdb
from nbdb.cli import main
from nbdb.models import LogicalSwitch, LogicalSwitchPort
from nbdb.tools import FORMAT, VERSION, DumpFormatError, dump, load, read_dump, verify

from .conftest import OVN_MODELS, build_network, count_objects

pytestmark = pytest.mark.timeout(60)


def dumped(db: nbdb.Database, **kwargs: object) -> bytes:
    out = io.BytesIO()
    dump(db, out, models=OVN_MODELS, source="memory://test", **kwargs)  # type: ignore[arg-type]
    return out.getvalue()


def network_dump() -> bytes:
    with nbdb.connect() as db:
        build_network(db)
        return dumped(db)


def lines_of(data: bytes) -> list[dict[str, object]]:
    return [json.loads(line) for line in data.splitlines()]


def reseal(lines: list[bytes]) -> bytes:
    """Lines (header and objects) with a correct end line: a well-formed file with chosen content."""
    body = b"".join(line + b"\n" for line in lines)
    count = len(lines) - 1
    end = json.dumps({"end": True, "count": count, "sha256": hashlib.sha256(body).hexdigest()}).encode()
    return body + end + b"\n"


def test_the_format_is_header_objects_parents_first_and_end_line() -> None:
    data = network_dump()
    docs = lines_of(data)
    header, objects, end = docs[0], docs[1:-1], docs[-1]
    assert header["format"] == FORMAT and header["version"] == VERSION == 1
    assert header["source"] == "memory://test" and isinstance(header["revision"], int)
    assert end["end"] is True and end["count"] == len(objects)
    assert end["sha256"] == hashlib.sha256(data[: data.rindex(b"\n", 0, len(data) - 1) + 1]).hexdigest()
    seen: set[str] = set()
    for doc in objects:
        data_ = doc["data"]
        assert isinstance(data_, dict) and "version" not in data_
        for field, value in data_.items():
            if field == "id":
                continue
            for ref in value if isinstance(value, list) else [value]:
                if isinstance(ref, str) and ref in ids_of(objects):
                    assert ref in seen, "a reference points to a later line"
        seen.add(str(data_["id"]))


def ids_of(objects: list[dict[str, object]]) -> set[str]:
    return {str(o["data"]["id"]) for o in objects}  # type: ignore[index]


def test_round_trip_through_the_cli(
    tmp_path: pathlib.Path, memory_urls: Callable[[], str], capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = memory_urls(), memory_urls()
    with nbdb.connect(a) as src:
        n = build_network(src)
    path = tmp_path / "backup.jsonl"
    assert main(["dump", a, "-o", str(path), "--models", *[m.nbdb_table for m in OVN_MODELS]]) == 0
    assert f"dumped {n} objects" in capsys.readouterr().err
    assert main(["load", b, str(path)]) == 0
    assert "written, transaction)" in capsys.readouterr().err
    with nbdb.connect(a) as src, nbdb.connect(b) as dst:
        assert verify(src, dst, OVN_MODELS) == []
    # Loading again is refused (the objects exist) ... unless --resume, which is idempotent.
    assert main(["load", b, str(path)]) == 2
    assert "already holds" in capsys.readouterr().err
    assert main(["load", b, str(path), "--resume"]) == 0
    assert f"loaded {n} objects (0 written, resumable)" in capsys.readouterr().err


def test_resumable_load_completes_a_partial_one() -> None:
    data = network_dump()
    with nbdb.connect() as db:
        objects = read_dump(io.BytesIO(data)).objects
        for obj in objects[:7]:  # as if an earlier run stopped after 7 objects
            db.create(obj)
        summary = load(db, io.BytesIO(data), resume=True, batch=4)
        assert summary.written == len(objects) - 7
        assert count_objects(db) == len(objects)


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda d: b"", "the input is empty"),
        (lambda d: b"name,mac\nsw0,0a:00:00:00:00:01\n", "not an nbdb dump"),
        (lambda d: b'{"format": "something-else", "version": 1}\n', "not an nbdb dump"),
        (lambda d: d.replace(b'"version":1', b'"version":2', 1), "newer nbdb"),
        (lambda d: d[: len(d) // 2], "line"),  # cut in the middle of a line
        (lambda d: d[: d.rindex(b'{"count"')], "truncated"),  # cut before the end line
        (lambda d: d.replace(b'"name":"sw0"', b'"name":"sw9"'), "sha256 does not match"),
        (lambda d: d + b'{"table":"LogicalSwitch","data":{}}\n', "after the end line"),
        (lambda d: d.replace(b'"count":', b'"count":1', 1), "counts"),
    ],
    ids=["empty", "csv", "other-format", "newer", "cut-mid-line", "no-end", "altered", "trailing", "bad-count"],
)
def test_corrupt_truncated_or_foreign_files_are_refused_with_nothing_written(
    mangle: Callable[[bytes], bytes], message: str
) -> None:
    data = mangle(network_dump())
    with nbdb.connect() as db:
        with pytest.raises(DumpFormatError, match=message):
            load(db, io.BytesIO(data))
        with pytest.raises(DumpFormatError, match=message):
            load(db, io.BytesIO(data), resume=True)
        assert count_objects(db) == 0


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda o: {"table": "LogicalSwitchPort", "data": {**o["data"], "addresses": ["zz"]}}, "line 3: invalid"),
        (lambda o: {"table": "NoSuchTable", "data": o["data"]}, "line 3: unknown table 'NoSuchTable'"),
        (lambda o: {"table": "LogicalSwitch"}, "line 3: not an object line"),
    ],
    ids=["invalid-object", "unknown-table", "not-an-object"],
)
def test_a_bad_object_is_reported_with_its_line_number(edit: Callable[[dict], dict], message: str) -> None:  # type: ignore[type-arg]
    with nbdb.connect() as db:
        sw = db.create(LogicalSwitch(name="s"))
        db.create(LogicalSwitchPort(switch=sw, name="p"))
        raw = dumped(db).splitlines()[:-1]
    raw[2] = json.dumps(edit(json.loads(raw[2]))).encode()
    with nbdb.connect() as dst:
        with pytest.raises(DumpFormatError, match=message):
            load(dst, io.BytesIO(reseal(raw)))
        assert count_objects(dst) == 0


def test_a_duplicate_object_is_refused() -> None:
    with nbdb.connect() as db:
        db.create(LogicalSwitch(name="s"))
        raw = dumped(db).splitlines()[:-1]
    with pytest.raises(DumpFormatError, match=r"line 3: LogicalSwitch .* appears twice"):
        read_dump(io.BytesIO(reseal([*raw, raw[1]])))


def test_a_dangling_reference_is_refused_before_writing() -> None:
    with nbdb.connect() as db:
        sw = db.create(LogicalSwitch(name="shared"))
        db.create(LogicalSwitchPort(switch=sw, name="p", topic="tenant-a"))
        data = dumped(db, topics=["tenant-a"])
    with nbdb.connect() as dst:
        with pytest.raises(nbdb.ReferenceError, match="neither in the dump nor in the destination"):
            load(dst, io.BytesIO(data))
        assert count_objects(dst) == 0
        dst.create(LogicalSwitch(id=sw.id, name="shared"))  # present in the destination: fine
        assert load(dst, io.BytesIO(data)).written == 1


names = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=20)
ext_ids = st.dictionaries(names, st.text(max_size=30), max_size=3)


@st.composite
def networks(draw: st.DrawFn) -> list[nbdb.Model]:
    objects: list[nbdb.Model] = []
    port_names = iter(draw(st.lists(names, unique=True, min_size=12, max_size=12)))  # unique, as in OVN's schema
    for _ in range(draw(st.integers(0, 4))):
        topic = draw(st.sampled_from([None, "tenant-a", "t.b:c@d"]))
        sw = LogicalSwitch(name=draw(st.text(max_size=30)), external_ids=draw(ext_ids), topic=topic)
        objects.append(sw)
        for _ in range(draw(st.integers(0, 3))):
            objects.append(
                LogicalSwitchPort(
                    switch=sw,
                    name=next(port_names),
                    topic=topic,
                    up=draw(st.none() | st.booleans()),
                    tag=draw(st.none() | st.integers(1, 4095)),
                    options=draw(ext_ids),
                    addresses=draw(st.lists(st.sampled_from(["unknown", "dynamic", "0a:00:00:00:00:01 10.0.0.1"]))),
                )
            )
    return objects


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(networks())
def test_any_objects_round_trip(objects: list[nbdb.Model]) -> None:
    with nbdb.connect() as src, nbdb.connect() as dst:
        for obj in objects:
            src.create(obj)
        data = dumped(src)
        assert load(dst, io.BytesIO(data)).count == len(objects)
        assert verify(src, dst, OVN_MODELS) == []
        assert dumped(dst).splitlines()[1:-1] == data.splitlines()[1:-1]  # the same objects, line for line


@pytest.mark.timeout(60)
def test_ttls_survive_dump_load_and_copy() -> None:
    import io

    from nbdb.tools.copy import Copier, CopyOptions
    from nbdb.tools.dump import dump, load

    with nbdb.connect("memory://") as source, nbdb.connect("memory://") as loaded, nbdb.connect("memory://") as copied:
        mortal = source.create(LogicalSwitch(name="mortal"), ttl=300)
        source.create(LogicalSwitch(name="forever"))
        out = io.BytesIO()
        dump(source, out, models=[LogicalSwitch])
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
        assert [d.get("ttl") for d in lines if d.get("table") == "LogicalSwitch" and d["data"]["name"] == "mortal"] == [
            300
        ]
        load(loaded, io.BytesIO(out.getvalue()).readlines())
        assert loaded.backend.ttls(["LogicalSwitch"]) == {("LogicalSwitch", mortal.id): 300}
        Copier(source, copied, CopyOptions(models=[LogicalSwitch])).run()
        assert copied.backend.ttls(["LogicalSwitch"]) == {("LogicalSwitch", mortal.id): 300}


@pytest.mark.parametrize("where", ["a directory", "no such directory"])
def test_cli_dump_to_a_path_it_cannot_write_is_a_clean_error(
    where: str, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`nbdb dump URL -o DIR` or into a missing directory ended in an IsADirectoryError/FileNotFoundError traceback."""
    output = tmp_path if where == "a directory" else tmp_path / "missing" / "d.jsonl"
    assert main(["dump", "memory://", "-o", str(output)]) == 2
    assert "cannot write it" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_cli_load_from_a_terminal_says_what_it_wants() -> None:
    """`nbdb load URL` without a file or a redirection waited silently for a dump typed in."""
    import os
    import subprocess
    import sys

    parent, child = os.openpty()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    try:
        run = subprocess.run(
            [sys.executable, "-m", "nbdb.cli", "load", "memory://"],
            stdin=child,
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
        )
    finally:
        os.close(child)
        os.close(parent)
    assert run.returncode == 2, run.stderr
    assert "no dump to read: give FILE" in run.stderr
