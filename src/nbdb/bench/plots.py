"""PNG plots of a run (matplotlib, Agg, imported only when plotting).

- ``throughput.png``: rate of each workload through nbdb and raw, per backend
- ``ratio.png``: nbdb / raw per workload and backend, with the 0.9 target
- ``latency.png``: p50 and p99 per operation, per backend, nbdb and raw
- ``scale_objects.png``: cold-load rate and memory per object as objects grow
- ``scale_caches.png``: commit-to-applied p50 / p99 as caches grow
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from nbdb.bench.results import NBDB, RATIO_TARGET, RAW, BenchResult, Measurement

__all__ = ["write_plots"]

_DPI = 80
_LATENCY_WORKLOADS = (
    "write.create",
    "read.get",
    "write.update",
    "write.delete",
    "write.txn",
    "read.list",
    "watch.fanout",
    "watch.spread",
    "churn",
    "churn.controller",
)


def _label(m: Measurement) -> str:
    params = ",".join(f"{k[0]}={v}" for k, v in sorted(m.params.items()))
    return f"{m.workload} {params}".strip()


def _headline(result: BenchResult) -> list[Measurement]:
    """One measurement per (workload, backend, impl): the largest parameter (the headline figure)."""
    best: dict[tuple[str, str, str], Measurement] = {}
    for m in result.measurements:
        key = (m.workload, m.backend, m.impl)
        if m.workload == "write.txn":
            key = (_label(m), m.backend, m.impl)
        old = best.get(key)
        if old is None or sorted(m.params.values()) > sorted(old.params.values()):
            best[key] = m
    return list(best.values())


def write_plots(result: BenchResult, out_dir: Path) -> dict[str, Path]:
    """Write the PNGs into ``out_dir``; their titles and paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    backends = [b for b, info in result.backends.items() if info.get("status") == "ok"]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    headline = _headline(result)
    labels = sorted(
        {_label(m) for m in headline if m.workload not in ("watch.fanout", "watch.spread")},
        key=lambda s: (s.split()[0] not in ("cache.get", "cache.find"), s),
    )

    def save(fig: Any, name: str, title: str) -> None:
        fig.tight_layout()
        path = out_dir / name
        fig.savefig(path, dpi=_DPI)
        plt.close(fig)
        written[title] = path

    # Throughput: horizontal bars, log scale, nbdb solid and raw hatched.
    fig, ax = plt.subplots(figsize=(9, 0.35 * max(4, len(labels)) * max(1, len(backends)) ** 0.5 + 1.5))
    height = 0.8 / max(1, 2 * len(backends))
    for b_i, backend in enumerate(backends):
        for s_i, impl in enumerate((NBDB, RAW)):
            vals = []
            for label in labels:
                m = next((x for x in headline if _label(x) == label and x.backend == backend and x.impl == impl), None)
                vals.append(m.rate if m is not None else 0.0)
            offset = (2 * b_i + s_i) * height
            ax.barh(
                [i + offset for i in range(len(labels))],
                vals,
                height,
                color=colours[b_i % len(colours)],
                hatch="//" if impl == RAW else None,
                alpha=1.0 if impl == NBDB else 0.55,
                label=f"{backend} {impl}",
            )
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(labels))], labels, fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("operations or objects per second (log)")
    ax.set_title("Throughput: nbdb (solid) and the raw client (hatched)")
    ax.invert_yaxis()
    ax.legend(fontsize=7, loc="lower right")
    save(fig, "throughput.png", "Throughput per workload and backend")

    # Ratios.
    ratios = [r for r in result.ratios() if not math.isnan(r.value)]
    if ratios:
        names = sorted({r.workload + (f" {_params(r.params)}" if r.params else "") for r in ratios})
        fig, ax = plt.subplots(figsize=(9, 0.3 * len(names) + 1.5))
        h = 0.8 / max(1, len(backends))
        for b_i, backend in enumerate(backends):
            vals = []
            for name in names:
                r = next(
                    (
                        r
                        for r in ratios
                        if r.backend == backend and r.workload + (f" {_params(r.params)}" if r.params else "") == name
                    ),
                    None,
                )
                vals.append(r.value if r is not None else 0.0)
            ax.barh([i + b_i * h for i in range(len(names))], vals, h, label=backend, color=colours[b_i % 10])
        ax.axvline(RATIO_TARGET, color="black", linestyle="--", linewidth=1, label=f"target {RATIO_TARGET}")
        ax.set_yticks([i + 0.4 - h / 2 for i in range(len(names))], names, fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("nbdb / raw throughput (log; 1 = as fast as the raw client)")
        ax.set_title("What nbdb costs over the raw client, same run")
        ax.invert_yaxis()
        ax.legend(fontsize=7)
        save(fig, "ratio.png", "nbdb / raw per workload")

    # Latency percentiles.
    lat = [m for m in headline if m.latency is not None and m.workload in _LATENCY_WORKLOADS and m.latency.count > 0]
    if lat:
        names = sorted({_label(m) for m in lat}, key=lambda s: _LATENCY_WORKLOADS.index(s.split()[0]))
        series = [
            (b, impl) for b in backends for impl in (NBDB, RAW) if any(m.backend == b and m.impl == impl for m in lat)
        ]
        fig, ax = plt.subplots(figsize=(9, 0.35 * len(names) * max(1, len(series)) ** 0.5 + 1.5))
        h = 0.8 / max(1, len(series))
        for s_i, (backend, impl) in enumerate(series):
            p50, p99 = [], []
            for name in names:
                m = next((x for x in lat if _label(x) == name and x.backend == backend and x.impl == impl), None)
                p50.append(m.latency.p50 if m is not None and m.latency is not None else 0.0)
                p99.append(m.latency.p99 if m is not None and m.latency is not None else 0.0)
            colour = colours[backends.index(backend) % 10]
            ys = [i + s_i * h for i in range(len(names))]
            ax.barh(ys, p99, h, color=colour, alpha=0.35, hatch="//" if impl == RAW else None)
            ax.barh(
                ys,
                p50,
                h,
                color=colour,
                alpha=0.9 if impl == NBDB else 0.6,
                hatch="//" if impl == RAW else None,
                label=f"{backend} {impl}",
            )
        ax.set_yticks([i + 0.4 - h / 2 for i in range(len(names))], names, fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("latency, µs (log): dark bar p50, light bar p99")
        ax.set_title("Latency per operation (raw hatched)")
        ax.invert_yaxis()
        ax.legend(fontsize=7, loc="lower right")
        save(fig, "latency.png", "Latency p50 and p99 per operation")

    # Scale: objects.
    loads = [m for m in result.measurements if m.workload == "cache.cold_load"]
    if loads:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
        for b_i, backend in enumerate(backends):
            for impl in (NBDB, RAW):
                pts = sorted((m.params["objects"], m) for m in loads if m.backend == backend and m.impl == impl)
                if not pts:
                    continue
                style = "-o" if impl == NBDB else "--s"
                xs = [p[0] for p in pts]
                ax1.plot(xs, [p[1].rate for p in pts], style, color=colours[b_i % 10], label=f"{backend} {impl}")
                ax2.plot(
                    xs,
                    [p[1].extra.get("bytes_per_object", math.nan) for p in pts],
                    style,
                    color=colours[b_i % 10],
                    label=f"{backend} {impl}",
                )
        for ax in (ax1, ax2):
            ax.set_xscale("log")
            ax.set_xlabel("objects (ports)")
            ax.grid(alpha=0.3)
        ax1.set_yscale("log")
        ax1.set_ylabel("cold load, objects/s")
        ax1.axhline(50_000, color="black", linestyle=":", linewidth=1)
        ax2.set_ylabel("bytes per cached object")
        ax2.axhline(1024, color="black", linestyle=":", linewidth=1)
        ax1.legend(fontsize=7)
        fig.suptitle("Scale: cache cold load and memory as objects grow (dotted: targets)", fontsize=10)
        save(fig, "scale_objects.png", "Scale sweep over objects")

    # Scale: caches.
    fans = [m for m in result.measurements if m.workload == "watch.fanout" and m.latency is not None]
    if fans:
        fig, ax = plt.subplots(figsize=(9, 3.6))
        for b_i, backend in enumerate(backends):
            for impl in (NBDB, RAW):
                pts = sorted((m.params["caches"], m) for m in fans if m.backend == backend and m.impl == impl)
                if not pts:
                    continue
                xs = [p[0] for p in pts]
                colour = colours[b_i % 10]
                dash = "-" if impl == NBDB else "--"
                ax.plot(
                    xs,
                    [p[1].latency.p99 / 1e3 for p in pts if p[1].latency],
                    dash + "o",
                    color=colour,
                    label=f"{backend} {impl} p99",
                )
                ax.plot(
                    xs,
                    [p[1].latency.p50 / 1e3 for p in pts if p[1].latency],
                    dash + "^",
                    color=colour,
                    alpha=0.5,
                    label=f"{backend} {impl} p50",
                )
        ax.axhline(10, color="black", linestyle=":", linewidth=1, label="target p99 10 ms")
        ax.set_xlabel("caches following one writer")
        ax.set_ylabel("commit to applied, ms")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        ax.set_title("Scale: watch fan-out latency as caches grow", fontsize=10)
        save(fig, "scale_caches.png", "Scale sweep over caches")
    return written


def _params(params: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(params.items()))
