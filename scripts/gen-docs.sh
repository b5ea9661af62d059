#!/usr/bin/env bash
# Regenerate the parts of docs/ that come from code (the capability matrix).
set -euo pipefail
cd "$(dirname "$0")/.."
NBDB="${NBDB:-.venv/bin/nbdb}"
command -v "$NBDB" >/dev/null 2>&1 || NBDB=nbdb
{
  cat <<'HEAD'
# Capability matrix

Generated from each backend's `capabilities` declaration by `scripts/gen-docs.sh`
(`nbdb backends --markdown --builtin`); do not edit by hand. `tests/test_cli.py` fails when
this file and the code disagree. What each column means: `src/nbdb/capabilities.py`;
how the conformance kit turns each into an expectation: [semantics.md](semantics.md).

HEAD
  # nbdb's own backends only: a backend another package installed here is no part of nbdb's docs.
  "$NBDB" backends --markdown --builtin
} > docs/capabilities.md
echo "wrote docs/capabilities.md"
