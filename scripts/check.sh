#!/usr/bin/env bash
# Format, lint and type checks (ruff, mypy strict on src/), as httpx's scripts/check does.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
"$BIN/ruff" format --check src tests benchmarks
"$BIN/ruff" check src tests benchmarks
"$BIN/mypy"
