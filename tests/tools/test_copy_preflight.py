"""``nbdb copy`` into a destination that cannot hold everything the source holds refuses before it writes.

A port bound to a ``Chassis`` (a southbound table OVN_Northbound lacks), or a field whose column an
older schema lacks, made the copy fail part way through: the destination held the switches, half the
ports, and a checkpoint to resume a copy that could never finish.
"""

from __future__ import annotations

import copy
import json
import pathlib
import uuid
from collections.abc import Iterator

import pytest

import nbdb
from nbdb.cli import main
from nbdb.models import LogicalSwitch, LogicalSwitchPort
from nbdb.testing import require_server
from nbdb.testing.ovsdb import OvsdbServer, find_ovn_nb_schema

from .conftest import NB_MODELS, build_network, count_objects

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def older_nb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An OVN_Northbound of an older schema: no ``up`` column in Logical_Switch_Port (and, as ever, no Chassis)."""
    require_server("ovsdb")
    schema = copy.deepcopy(json.loads(find_ovn_nb_schema().read_text()))
    schema["version"] = "6.0.0"
    del schema["tables"]["Logical_Switch_Port"]["columns"]["up"]
    path = tmp_path_factory.mktemp("older") / "older.ovsschema"
    path.write_text(json.dumps(schema))
    with OvsdbServer(schema=path) as server:
        yield server.url


def _copy(src: str, dst: str, state: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    models = [m.nbdb_table for m in NB_MODELS]  # every OVN_Northbound table: the model check lets them all by
    code = main(["copy", src, dst, "--state", str(state), "--models", *models])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("chassis", "said"),
    [
        (True, "LogicalSwitchPort.chassis references Chassis, which the destination cannot store (6 objects"),
        (False, "LogicalSwitchPort.up holds values other than its default None (6 objects"),
    ],
)
def test_a_copy_the_destination_cannot_hold_writes_nothing(
    older_nb: str, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], chassis: bool, said: str
) -> None:
    src, dst = f"sqlite:///{tmp_path}/src.db", f"{older_nb}?namespace=c{uuid.uuid4().hex[:8]}"
    with nbdb.connect(src) as db:
        build_network(db, chassis=chassis, ports=3)  # ports up=False/True: values the older schema cannot hold
    code, err = _copy(src, dst, tmp_path / "state.json", capsys)
    assert code == 2, err
    assert "nothing was written" in err and said in err, err
    with nbdb.connect(dst) as db:
        assert count_objects(db, NB_MODELS) == 0, "the copy wrote part of the source"


def test_what_the_destination_can_hold_is_copied(
    older_nb: str, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Defaults of the missing column, and no chassis: nothing refused."""
    src, dst = f"sqlite:///{tmp_path}/src.db", f"{older_nb}?namespace=c{uuid.uuid4().hex[:8]}"
    with nbdb.connect(src) as db:
        switch = db.create(LogicalSwitch(name="s"))
        db.create(LogicalSwitchPort(switch=switch, name=f"p-{uuid.uuid4().hex[:6]}"))
    code, err = _copy(src, dst, tmp_path / "state.json", capsys)
    assert code == 0, err
    with nbdb.connect(dst) as db:
        assert count_objects(db, NB_MODELS) == 2
