"""``nbdb copy`` into a destination that cannot hold everything the source holds refuses before it writes.

A port bound to a ``Chassis`` (a southbound table OVN_Northbound lacks), or a field whose column an
older schema lacks, made the copy fail part way through: the destination held the switches, half the
ports, and a checkpoint to resume a copy that could never finish.
"""

from __future__ import annotations

import copy
import json
import pathlib
import threading
import uuid
from collections.abc import Iterator

import pytest

import nbdb
from nbdb.cli import main
from nbdb.conformance.kit import eventually
from nbdb.models import Chassis, LogicalSwitch, LogicalSwitchPort
from nbdb.testing import require_server
from nbdb.testing.ovsdb import OvsdbServer, find_ovn_nb_schema
from nbdb.tools.checkpoint import CheckpointFile
from nbdb.tools.copy import Copier, CopyOptions

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


@pytest.mark.parametrize("chassis", [False, True])
def test_an_object_the_destination_cannot_hold_arriving_while_following_stops_the_copy_clearly(
    older_nb: str, tmp_path: pathlib.Path, chassis: bool
) -> None:
    """The check before the first pass did not cover the changes applied while following.

    A port turned ``up`` (a column the older schema lacks) or bound to a ``Chassis`` (a table
    OVN_Northbound lacks) was refused by its write, with the backend's own message, after the other
    objects of the same source commit had been written. Now each batch is checked before any of it
    is written, and the copy stops with the first pass's report.
    """
    dst_url = f"{older_nb}?namespace=c{uuid.uuid4().hex[:8]}"
    state = tmp_path / "state.json"
    with nbdb.connect() as src, nbdb.connect(dst_url) as dst:
        tag = uuid.uuid4().hex[:6]  # unique names are unique across the server's namespaces
        switch = src.create(LogicalSwitch(name=f"s-{tag}"))
        port = src.create(LogicalSwitchPort(switch=switch, name=f"p-{tag}"))
        stop = threading.Event()
        copier = Copier(
            src,
            dst,
            CopyOptions(models=NB_MODELS, follow=True, poll_interval=0.05),
            checkpoint=CheckpointFile(state),
            source_url="memory://src",
            destination_url=dst_url,
            stop=stop,
        )
        raised: list[BaseException] = []

        def run() -> None:
            try:
                copier.run()
            except BaseException as exc:  # reported below
                raised.append(exc)

        runner = threading.Thread(target=run)
        runner.start()
        try:
            following = lambda: state.exists() and json.loads(state.read_text())["phase"] == "follow"  # noqa: E731
            assert eventually(lambda: following() or not runner.is_alive(), 60) and not raised, raised
            bound = src.create(Chassis(name=f"hv-{tag}", hostname="hv1"))  # not copied: no NB table
            with src.transaction() as txn:  # one source commit: one batch
                late = txn.create(LogicalSwitchPort(switch=switch, name=f"late-{tag}"))
                txn.update(port.replace(chassis=bound.id) if chassis else port.replace(up=True))
            if chassis:
                said = "LogicalSwitchPort.chassis references Chassis, which the destination cannot store (1 objects"
            else:
                said = "LogicalSwitchPort.up holds values other than its default None (1 objects"
            runner.join(30)
        finally:
            stop.set()
            runner.join(60)
        assert len(raised) == 1 and isinstance(raised[0], nbdb.UnsupportedError), raised
        message = str(raised[0])
        assert said in message and "while following" in message, message
        assert copier.result.syncs == 1, "the copy synced again"
        # Nothing of the refused batch was written; the checkpoint resumes before it.
        assert dst.get(LogicalSwitchPort, port.id).up is None
        assert late.id not in {p.id for p in dst.list(LogicalSwitchPort)}
        assert json.loads(state.read_text())["phase"] == "follow"
