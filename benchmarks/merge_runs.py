"""Merge the ``bench.json`` of several ``nbdb bench`` runs and rewrite a doc's generated section from them.

A quick run of all seven backends is long on a small machine; running it in parts (each part a
set of backends, e.g. the ones a change did not touch first) and merging them keeps every
figure a same-run pair: a backend's nbdb and raw figures always come from one part::

    python benchmarks/merge_runs.py /tmp/a/bench.json /tmp/b/bench.json --json docs/img/bench-quick/bench.json \\
        --doc docs/benchmarks.md

The merged run's header names every part's command, date and load averages. A backend
measured in more than one part keeps the last part's figures.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nbdb.bench.cli import BACKENDS
from nbdb.bench.report import markdown, update_doc
from nbdb.bench.results import BenchResult


def merge(parts: list[BenchResult]) -> BenchResult:
    """One result holding each backend's figures from the last part that measured it."""
    owner: dict[str, int] = {}
    for index, part in enumerate(parts):
        for backend, info in part.backends.items():
            if info.get("status") == "ok" or backend not in owner:
                owner[backend] = index
    merged = BenchResult(meta=dict(parts[-1].meta))
    order = {name: i for i, name in enumerate(BACKENDS)}
    for backend, index in sorted(owner.items(), key=lambda item: (order.get(item[0], len(order)), item[0])):
        part = parts[index]
        merged.backends[backend] = part.backends[backend]
        merged.measurements += [m for m in part.measurements if m.backend == backend]
        merged.errors += [e for e in part.errors if e.get("backend") == backend]
    loads = [
        f"{p.meta.get('date', '?')}, load average {', '.join(f'{x:.2f}' for x in p.meta.get('loadavg_at_start', []))} "
        f"→ {', '.join(f'{x:.2f}' for x in p.meta.get('loadavg_at_end', []))}"
        for p in parts
    ]
    merged.meta["date"] = parts[-1].meta.get("date", "?")
    # The doc quotes the command in backticks: each part's command its own quote.
    merged.meta["command"] = "` and `".join(str(p.meta.get("command", "nbdb bench")) for p in parts)
    merged.meta["parts"] = [{"command": p.meta.get("command"), "date": p.meta.get("date")} for p in parts]
    merged.meta["loadavg_at_start"] = parts[0].meta.get("loadavg_at_start", [])
    merged.meta["loadavg_at_end"] = parts[-1].meta.get("loadavg_at_end", [])
    merged.meta["part_loads"] = loads
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="+", type=Path, help="bench.json of each part, in the order they ran")
    parser.add_argument("--json", type=Path, help="write the merged bench.json here")
    parser.add_argument("--doc", type=Path, help="rewrite the generated section of this Markdown file")
    opts = parser.parse_args()
    merged = merge([BenchResult.read_json(p) for p in opts.parts])
    if opts.json is not None:
        opts.json.parent.mkdir(parents=True, exist_ok=True)
        merged.write_json(opts.json)
    if opts.doc is not None:
        section = markdown(merged, {})
        loads = "; ".join(f"part {i + 1} started {load}" for i, load in enumerate(merged.meta["part_loads"]))
        section = section.replace("\n", f"\n\nRun in {len(opts.parts)} parts, one after the other: {loads}.\n", 1)
        update_doc(opts.doc, section)
    print(f"merged {len(opts.parts)} part(s): {', '.join(sorted(merged.backends))}")


if __name__ == "__main__":
    main()
