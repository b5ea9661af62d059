#!/usr/bin/env bash
# The README's quick look: the embedded backend through nbdb and through a plain dict, in under a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
nbdb="${NBDB:-nbdb}"
command -v "$nbdb" >/dev/null || nbdb=".venv/bin/nbdb"
exec "$nbdb" bench --quick --out "${1:-bench-out}"
