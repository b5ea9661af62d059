#!/usr/bin/env bash
# Fresh machine -> the main job on the embedded default: install nbdb in .venv and run the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[metrics]'
exec .venv/bin/nbdb demo "$@"
