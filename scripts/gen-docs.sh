#!/usr/bin/env bash
# Regenerate the parts of docs/ that come from code (the capability matrix).
#
# It runs this checkout's nbdb: `python -m nbdb` with this checkout's src/ first on the path, and checks
# that the nbdb imported is this one. The `nbdb` on PATH (another checkout's, an installed release) wrote
# its own backends' capabilities into these docs. The Python: $PYTHON, else $BIN/python (as scripts/check.sh
# takes BIN), else .venv/bin/python, else python3. NBDB=/path/to/command overrides all of that.
set -euo pipefail
cd "$(dirname "$0")/.."
fail() {
  echo "gen-docs.sh: $*" >&2
  exit 1
}
if [[ -n "${NBDB:-}" ]]; then
  nbdb=("$NBDB")
else
  if [[ -n "${PYTHON:-}" ]]; then
    python=$PYTHON
  elif [[ -n "${BIN:-}" ]]; then
    python=$BIN/python
  elif [[ -x .venv/bin/python ]]; then
    python=.venv/bin/python
  else
    python=$(command -v python3 || true)
    [[ -n $python ]] || fail "no Python: set PYTHON=/path/to/python (one with nbdb's dependencies) or BIN=/path/to/venv/bin"
  fi
  command -v "$python" >/dev/null 2>&1 || fail "$python is not an executable Python: set PYTHON= or BIN= to one"
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
  here=$("$python" -c 'import pathlib, nbdb; print(pathlib.Path(nbdb.__file__).resolve().parent)') \
    || fail "$python cannot import this checkout's nbdb (src/): give it nbdb's dependencies, or set PYTHON= or BIN="
  [[ $here == "$(cd src/nbdb && pwd -P)" ]] \
    || fail "$python imports nbdb from $here, not this checkout's src/nbdb"
  nbdb=("$python" -m nbdb)
fi
out=$(mktemp docs/.capabilities.md.XXXXXX)
trap 'rm -f "$out"' EXIT
{
  cat <<'HEAD'
# Capability matrix

Generated from each backend's `capabilities` declaration by `scripts/gen-docs.sh`
(`nbdb backends --markdown --builtin`); do not edit by hand. `tests/test_cli.py` fails when
this file and the code disagree. What each column means: `src/nbdb/capabilities.py`;
how the conformance kit turns each into an expectation: [semantics.md](semantics.md).

HEAD
  # nbdb's own backends only: a backend another package installed here is no part of nbdb's docs.
  "${nbdb[@]}" backends --markdown --builtin
} > "$out"
chmod 0644 "$out"  # mktemp made it 0600
mv "$out" docs/capabilities.md
trap - EXIT
echo "wrote docs/capabilities.md"
