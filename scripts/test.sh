#!/usr/bin/env bash
# Fresh machine -> the whole test suite: real servers (Debian packages, Cassandra and
# Hazelcast from Maven Central), the Python environment with every backend, then pytest: nbdb's own
# tests and the conformance kit against every backend on a real server.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/install-servers.sh
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
# The whole suite includes the slow Cassandra harness tests (3 nodes, kill -9 durability, auth).
export NBDB_TEST_CASSANDRA_EXTRA="${NBDB_TEST_CASSANDRA_EXTRA:-1}"
# Every backend runs the conformance kit; spawn:KIND starts a throwaway server (etcd also as a
# 3-member cluster, Redis behind Sentinel, OVSDB over a unix socket, TLS, a raft cluster and
# relays in front of one: ~4 min more); sqlite
# needs no server, only a file (and sqlite:// runs the same code in memory).
# --durations: the CI log ends with the slowest tests (setup, call and teardown apart), so where its
# time goes is read from any run, not measured again.
sqlite_dir=$(mktemp -d)
trap 'rm -rf "$sqlite_dir"' EXIT
.venv/bin/pytest \
  --durations=40 \
  --nbdb-url=memory:// \
  --nbdb-url="sqlite:///$sqlite_dir/kit.db" \
  --nbdb-url=sqlite:// \
  --nbdb-url=spawn:redis \
  --nbdb-url=spawn:etcd \
  '--nbdb-url=spawn:etcd?members=3' \
  --nbdb-url=spawn:redis-sentinel \
  --nbdb-url=spawn:ovsdb \
  '--nbdb-url=spawn:ovsdb?unix=true' \
  '--nbdb-url=spawn:ovsdb?tls=true' \
  '--nbdb-url=spawn:ovsdb?members=3' \
  '--nbdb-url=spawn:ovsdb?members=3&relays=2' \
  --nbdb-url=spawn:cassandra \
  --nbdb-url=spawn:hazelcast \
  "$@"
