"""``nbdb bench``: the command runs end to end, and its arithmetic is right.

No timed assertions: figures must exist and be positive, not be fast.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nbdb.bench.report import rows
from nbdb.bench.results import BenchResult, Measurement
from nbdb.bench.stats import percentile, rate, ratio, summarize
from nbdb.cli import main
from nbdb.testing import Server

PNG = b"\x89PNG\r\n\x1a\n"
WORKLOADS = {
    "write.create",
    "write.create.threads",
    "read.get",
    "write.update",
    "write.delete",
    "write.txn",
    "read.list",
    "cache.cold_load",
    "cache.get",
    "cache.find",
    "watch.fanout",
    "churn",
    "churn.controller",
}


@pytest.mark.timeout(120)
def test_bench_runs_on_memory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nprose stays\n")
    code = main(["bench", "--sizes", "tiny", "--backends", "memory", "--out", str(tmp_path), "--doc", str(doc)])
    out = capsys.readouterr().out
    assert code == 0, out
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["backends"]["memory"]["status"] == "ok"
    assert data["errors"] == []
    measured = {(m["workload"], m["impl"]) for m in data["measurements"]}
    assert {w for w, _ in measured} == WORKLOADS
    assert {w for w, impl in measured if impl == "raw"} == WORKLOADS - {"churn", "churn.controller"}
    for m in data["measurements"]:
        assert m["count"] > 0 and m["rate_per_s"] > 0, m
        if m["latency_us"] is not None:
            assert 0 < m["latency_us"]["p50"] <= m["latency_us"]["p99"] <= m["latency_us"]["max"], m
        if m["workload"] == "cache.cold_load":
            assert m["extra"]["bytes_per_object"] > 0
        if m["workload"] in ("watch.fanout", "churn", "churn.controller"):
            assert m["extra"]["missing_events"] == 0, m
    assert data["ratios"] and all(r["ratio"] > 0 for r in data["ratios"])
    names = {t["name"].split(",")[0].split(" of ")[0] for t in data["targets"]}
    assert names >= {"creates", "gets", "CAS updates", "deletes", "cold load", "commit-to-applied p99"}, names
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["latency.png", "ratio.png", "scale_caches.png", "scale_objects.png", "throughput.png"]
    for name in pngs:
        assert (tmp_path / name).read_bytes()[:8] == PNG
    # The table on the terminal, and the generated section of the doc.
    assert "write.create" in out and "nbdb/raw" in out and "Targets" in out
    text = doc.read_text()
    assert "prose stays" in text and "bench:begin" in text and "![Throughput" in text
    # Running again replaces the section instead of appending a second one.
    assert (
        main(
            ["bench", "--sizes", "tiny", "--workloads", "crud", "--no-plots", "--out", str(tmp_path), "--doc", str(doc)]
        )
        == 0
    )
    assert doc.read_text().count("bench:begin") == 1


@pytest.mark.timeout(30)
def test_unknown_backend_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "--backends", "memory,nosuch", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "unknown backend(s) 'nosuch'" in err and "known: memory, sqlite, redis" in err
    assert not (tmp_path / "bench.json").exists()


@pytest.mark.timeout(30)
def test_backend_without_url_is_skipped_with_its_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "--sizes", "tiny", "--backends", "redis", "--no-plots", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1  # nothing measured
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["backends"]["redis"]["status"] == "skipped"
    assert "redis: skipped" in out
    reason = data["backends"]["redis"]["reason"]
    assert "--urls redis=URL" in reason or "no working redis backend" in reason


@pytest.mark.timeout(30)
def test_bad_urls_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--urls", "redis", "--out", str(tmp_path)]) == 2
    assert "--urls wants NAME=URL" in capsys.readouterr().err


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workloads", ""], "unknown workload group(s) (none given); known: crud,"),
        (["--workloads", ","], "unknown workload group(s) (none given); known: crud,"),
        (["--backends", "redis", "--urls", "redis=redis://127.0.0.1:1/0,redis=redis://127.0.0.1:2/0"], "two URLs"),
        (["--backends", "redis", "--urls", "=redis://127.0.0.1:1/0"], "--urls wants NAME=URL, got '=redis://"),
        (["--backends", "redis://127.0.0.1:1/0"], "a server's URL goes in --urls NAME=URL"),
    ],
)
def test_an_empty_or_ambiguous_choice_is_refused_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    """An empty --workloads ran every group ('') or none, exiting 0 (','); of two URLs of one backend the last won."""
    assert main(["bench", "--sizes", "tiny", "--no-plots", "--out", str(tmp_path), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bench.json").exists()


@pytest.mark.timeout(30)
def test_urls_of_a_backend_not_measured_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A typo in --urls, or a URL without its --backends entry, ran the default memory bench instead."""
    args = ["bench", "--sizes", "tiny", "--no-plots", "--out", str(tmp_path)]
    assert main([*args, "--urls", "redis2=redis://127.0.0.1:1/0"]) == 2
    assert "--urls names 'redis2'" in capsys.readouterr().err
    assert main([*args, "--backends", "memory", "--urls", "redis=redis://127.0.0.1:1/0"]) == 2
    assert "which --backends memory leaves out" in capsys.readouterr().err
    assert not (tmp_path / "bench.json").exists()


@pytest.mark.timeout(30)
def test_json_round_trip_keeps_every_figure(tmp_path: Path) -> None:
    result = BenchResult(meta={"sizes": {"name": "tiny"}}, backends={"memory": {"status": "ok"}})
    result.add(
        [
            Measurement("read.get", "memory", "nbdb", 100, 2_000_000, "ops", summarize([1000, 2000, 3000])),
            Measurement("read.get", "memory", "raw", 100, 1_000_000, "ops", summarize([500])),
            Measurement(
                "cache.cold_load",
                "memory",
                "nbdb",
                10,
                1000,
                "objects",
                None,
                {"objects": 10},
                {"bytes_per_object": 900.0},
            ),
        ]
    )
    path = tmp_path / "bench.json"
    result.write_json(path)
    again = BenchResult.read_json(path)
    assert again.as_dict() == result.as_dict()
    [r] = again.ratios()
    assert r.value == pytest.approx(0.5)
    mem = next(t for t in again.targets() if t.name.startswith("memory per cached port"))
    assert mem.met is True


@pytest.mark.timeout(30)
def test_an_extra_baseline_gets_its_own_ratio_row_and_target() -> None:
    result = BenchResult(backends={"cassandra": {"status": "ok"}})
    result.add(
        [
            Measurement("write.create", "cassandra", "nbdb", 100, 2_000_000, "ops"),
            Measurement("write.create", "cassandra", "raw", 100, 1_000_000, "ops"),
            Measurement("write.create", "cassandra", "raw+seq", 100, 2_500_000, "ops"),
        ]
    )
    assert sorted((r.baseline, round(r.value, 2)) for r in result.ratios()) == [("raw", 0.5), ("raw+seq", 1.25)]
    table = rows(result)
    assert [(row[1], row[4], row[5]) for row in table] == [
        ("", "100k ops/s", "0.50"),
        ("vs raw+seq", "40k ops/s", "1.25"),
    ]
    names = {t.name: t.met for t in result.targets()}
    assert names == {"nbdb/raw write.create": False, "nbdb/raw+seq write.create": True}


@pytest.mark.timeout(30)
def test_best_round_is_kept() -> None:
    result = BenchResult()
    result.add([Measurement("read.get", "memory", "nbdb", 100, 2_000, "ops")])
    result.add([Measurement("read.get", "memory", "nbdb", 100, 1_000, "ops")])
    result.add([Measurement("read.get", "memory", "nbdb", 100, 3_000, "ops")])
    [m] = result.measurements
    assert m.elapsed_ns == 1_000


finite = st.floats(min_value=0, max_value=1e12, allow_nan=False)


@pytest.mark.timeout(60)
@given(st.lists(finite, min_size=1, max_size=200), st.floats(min_value=0, max_value=100))
def test_percentile_is_a_sample_with_enough_values_below(values: list[float], q: float) -> None:
    values.sort()
    p = percentile(values, q)
    assert p in values
    below = sum(1 for v in values if v <= p)
    assert below >= math.ceil(q / 100 * len(values))
    # ... and it is the smallest such sample (nearest rank).
    assert sum(1 for v in values if v < p) < max(1, math.ceil(q / 100 * len(values)))


@pytest.mark.timeout(60)
@given(st.lists(st.integers(min_value=1, max_value=10**10), min_size=1, max_size=300))
def test_summary_is_ordered(latencies: list[int]) -> None:
    s = summarize(latencies)
    assert s.count == len(latencies)
    assert min(latencies) / 1e3 <= s.p50 <= s.p90 <= s.p99 <= s.max == max(latencies) / 1e3
    assert min(latencies) / 1e3 <= s.mean * (1 + 1e-12) and s.mean <= s.max * (1 + 1e-12)


@pytest.mark.timeout(60)
@given(
    st.integers(min_value=1, max_value=10**9),
    st.integers(min_value=1, max_value=10**12),
    st.floats(min_value=1e-3, max_value=1e9),
    st.floats(min_value=1e-3, max_value=1e9),
)
def test_rate_and_ratio(count: int, elapsed_ns: int, a: float, b: float) -> None:
    assert rate(count, elapsed_ns) == pytest.approx(count / (elapsed_ns / 1e9))
    assert ratio(a, b) == pytest.approx(a / b)
    assert ratio(a, b) * ratio(b, a) == pytest.approx(1.0)


@pytest.mark.timeout(10)
def test_missing_figures_are_nan_not_numbers() -> None:
    assert math.isnan(percentile([], 50))
    assert math.isnan(rate(0, 10)) and math.isnan(rate(10, 0))
    assert math.isnan(ratio(math.nan, 1.0)) and math.isnan(ratio(1.0, 0.0)) and math.isnan(ratio(0.0, 1.0))
    assert summarize([]).count == 0
    with pytest.raises(ValueError):
        percentile([1.0], 101)


@pytest.mark.timeout(120)
def test_bench_redis_against_its_raw_client(redis_server: Server, tmp_path: Path) -> None:
    pytest.importorskip("nbdb.backends.redis")
    urls = f"redis={redis_server.url}"
    code = main(
        [
            "bench",
            "--sizes",
            "tiny",
            "--backends",
            "redis",
            "--urls",
            urls,
            "--workloads",
            "crud,fanout",
            "--no-plots",
            "--out",
            str(tmp_path),
        ]
    )
    data = json.loads((tmp_path / "bench.json").read_text())
    assert code == 0, data["errors"]
    assert data["backends"]["redis"]["raw_baseline"] == "yes"
    ratios = {r["workload"] for r in data["ratios"]}
    assert ratios == {"write.create", "read.get", "write.update", "write.delete", "watch.fanout"}


@pytest.mark.timeout(120)
def test_bench_without_matplotlib_runs_and_says_so(tmp_path: Path) -> None:
    """Without the [bench] extra the figures still come, with a clear word about the plots."""
    import subprocess
    import sys

    script = (
        "import sys; sys.modules['matplotlib'] = None\n"  # the import now fails, as without the extra
        "from nbdb.cli import main\n"
        "args = ['bench', '--backends', 'memory', '--quick', '--workloads', 'crud']\n"
        f"sys.exit(main(args + ['--out', {str(tmp_path)!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stderr
    assert "matplotlib is not installed, so no plots" in done.stderr
    assert json.loads((tmp_path / "bench.json").read_text())["measurements"]
    assert not list(tmp_path.glob("*.png"))


def test_the_full_sweep_reaches_a_million_objects_where_the_backend_allows() -> None:
    from nbdb.bench.config import SIZES
    from nbdb.bench.runner import plan
    from nbdb.bench.target import Target
    from nbdb.bench.workloads import GROUPS

    full = SIZES["full"]
    cache_group = [g for g in GROUPS if g.name == "cache"]
    sizes_of = {
        name: sorted({s.params["objects"] for s in plan([Target(name, "x://")], full, cache_group) if s.impl == "nbdb"})
        for name in ("memory", "etcd")
    }
    assert sizes_of["memory"][-1] == 1_000_000
    assert sizes_of["etcd"][-1] == 100_000 and 1_000_000 not in sizes_of["etcd"]


@pytest.mark.timeout(60)
def test_a_failed_step_names_its_parameters_and_spares_the_others() -> None:
    import io

    from nbdb.bench.config import SIZES
    from nbdb.bench.report import print_report
    from nbdb.bench.runner import run_bench
    from nbdb.bench.workloads import Group

    def nbdb_side(target: object, sizes: object, **params: int) -> list[Measurement]:
        return [Measurement("write.create.threads", "memory", "nbdb", 1, 1000, params=dict(params))]

    def raw_side(target: object, sizes: object, **params: int) -> list[Measurement]:
        if params.get("topics", 1) > 1:
            raise KeyError("LogicalSwitchPort-3")
        return [Measurement("write.create.threads", "memory", "raw", 1, 1000, params=dict(params))]

    group = Group("probe", nbdb_side, raw_side, lambda _: [{}, {"threads": 4, "topics": 4}])
    result = run_bench(["memory"], SIZES["tiny"], groups=[group])
    assert [(e["workload"], e["params"], e["impl"]) for e in result.errors] == [("probe", "threads=4 topics=4", "raw")]
    # The failure of one parameter set does not hide the figures of the others.
    assert sorted((m.impl, tuple(m.params.items())) for m in result.measurements) == [
        ("nbdb", ()),
        ("nbdb", (("threads", 4), ("topics", 4))),
        ("raw", ()),
    ]
    out = io.StringIO()
    print_report(result, out)
    assert "memory: probe threads=4 topics=4 (raw) failed — KeyError: 'LogicalSwitchPort-3'" in out.getvalue()


@pytest.mark.timeout(60)
def test_a_step_failing_part_way_keeps_what_it_measured_and_reports_why() -> None:
    from nbdb.bench.config import SIZES
    from nbdb.bench.results import PartialRun
    from nbdb.bench.runner import run_bench
    from nbdb.bench.workloads import Group

    def nbdb_side(target: object, sizes: object, **params: int) -> list[Measurement]:
        return [Measurement("ovn.create", "memory", "nbdb", 1, 1000, params=dict(params))]

    def raw_side(target: object, sizes: object, **params: int) -> list[Measurement]:
        done = [Measurement("ovn.cold_load", "memory", "ignored", 5, 1000, params=dict(params))]
        raise PartialRun(done, TimeoutError("the baseline's IDL did not load"))

    group = Group("probe", nbdb_side, raw_side, lambda _: [{"ports": 9}])
    result = run_bench(["memory"], SIZES["tiny"], groups=[group])
    assert [(m.workload, m.impl) for m in result.measurements if m.impl != "nbdb"] == [("ovn.cold_load", "raw")]
    assert [(e["impl"], e["error"]) for e in result.errors] == [
        ("raw", "TimeoutError: the baseline's IDL did not load")
    ]


def test_ovn_ports_option_picks_the_sweep_sizes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nbdb import errors
    from nbdb.bench.cli import _parse_counts

    assert _parse_counts("--ovn-ports", "100_000") == (100_000,)
    assert _parse_counts("--ovn-ports", "1000, 10000") == (1_000, 10_000)
    for bad in ("", "0", "ten", "1000,-1"):
        with pytest.raises(errors.ValidationError, match="--ovn-ports"):
            _parse_counts("--ovn-ports", bad)
    code = main(["bench", "--sizes", "tiny", "--ovn-ports", "x", "--no-plots", "--out", str(tmp_path)])
    assert code != 0
    assert "--ovn-ports" in capsys.readouterr().err


@pytest.mark.timeout(180)
def test_spread_fanout_follows_from_other_processes(redis_server: Server, tmp_path: Path) -> None:
    """Caches in other processes (a Database each) get every write; the p99 target is checked on Redis."""
    pytest.importorskip("nbdb.backends.redis")
    code = main(
        [
            "bench", "--sizes", "tiny", "--backends", "redis", "--urls", f"redis={redis_server.url}",
            "--workloads", "spread", "--no-plots", "--out", str(tmp_path),
        ]
    )  # fmt: skip
    data = json.loads((tmp_path / "bench.json").read_text())
    assert code == 0, data["errors"]
    (spread,) = [m for m in data["measurements"] if m["workload"] == "watch.spread"]
    assert spread["impl"] == "nbdb" and spread["params"] == {"processes": 2, "caches": 4}
    assert spread["extra"]["missing_events"] == 0
    assert spread["count"] == 4 * 10  # every cache in every process saw every write once
    assert 0 < spread["latency_us"]["p50"] <= spread["latency_us"]["p99"]
    assert any(t["name"] == "commit-to-applied p99, 4 caches over 2 processes" for t in data["targets"])


def test_spread_needs_caches_a_multiple_of_processes() -> None:
    from nbdb.bench.config import SIZES
    from nbdb.bench.target import Target
    from nbdb.bench.workloads import fanout

    with pytest.raises(ValueError, match="multiple of processes"):
        fanout.run_spread(Target("redis", "redis://127.0.0.1:1/0"), SIZES["tiny"], processes=3, caches=4)


def test_the_spread_group_runs_on_servers_only() -> None:
    from nbdb.bench.workloads import GROUPS

    (group,) = [g for g in GROUPS if g.name == "spread"]
    assert "memory" not in group.backends and {"redis", "etcd"} <= set(group.backends)


@given(st.integers(0, 2**48 - 1))
def test_a_port_mac_is_0a_then_the_low_40_bits_of_its_number(i: int) -> None:
    from nbdb.bench.data import _mac

    mac = _mac(i)
    octets = mac.split(":")
    assert len(octets) == 6 and all(len(o) == 2 and o == o.lower() for o in octets)
    assert int(mac.replace(":", ""), 16) == (0x0A << 40) | (i & (2**40 - 1))


@pytest.mark.timeout(120)
def test_ctrl_c_keeps_the_figures_measured_so_far(tmp_path: Path) -> None:
    """Ctrl-C in a long run exited 130 with nothing written: every figure measured was lost."""
    import os
    import signal
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    argv = [
        sys.executable,
        "-m",
        "nbdb.cli",
        "bench",
        "--workloads",
        "crud,cache",
        "--no-plots",
        "--out",
        str(tmp_path),
    ]
    bench = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        assert bench.stderr is not None
        started = 0
        for line in bench.stderr:  # one progress line per step: the third means two are measured
            started += line.startswith("bench: ")
            if started == 3:
                break
        bench.send_signal(signal.SIGINT)
        out, err = bench.communicate(timeout=60)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
    assert bench.returncode == 130, err
    assert "nbdb bench: interrupted during memory" in err and "Traceback" not in err, err
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["meta"]["interrupted"].startswith("memory · ")
    assert data["measurements"], "the steps measured before Ctrl-C are kept"
    assert "write.create" in out
