#!/usr/bin/env bash
# Regenerate docs/benchmarks.md and docs/img/bench/ from one full run of `nbdb bench`.
#
#   bash benchmarks/full_run.sh                 # memory and Redis (a throwaway redis-server)
#   bash benchmarks/full_run.sh memory,redis,etcd,ovsdb,cassandra
#
# Needs the bench extra (pip install -e '.[bench,redis]') and, for server backends, the
# servers from .ci/install-servers.sh. Takes about 10 minutes for memory and Redis on
# 2 cores. Run it on an otherwise idle machine: every figure is a ratio measured in the
# same run, but absolute numbers move with the load.
set -euo pipefail
cd "$(dirname "$0")/.."
backends="${1:-memory,redis}"
nbdb="${NBDB:-nbdb}"
command -v "$nbdb" >/dev/null || nbdb=".venv/bin/nbdb"
exec "$nbdb" bench --backends "$backends" --spawn --out docs/img/bench --doc docs/benchmarks.md
