#!/usr/bin/env bash
# Install the real servers nbdb is tested against, on a fresh Debian 12 machine:
#   - redis-server (+ redis-tools: redis-cli, redis-sentinel), etcd-server, etcd-client,
#     openvswitch-common (ovsdb-server, ovsdb-tool, ovs-appctl), ovn-central/ovn-common
#     (OVN NB schema, ovn-nbctl, ovn-northd), openssl, a JDK 17 and Maven;
#   - Apache Cassandra 5.0 (cassandra-all and its dependencies) and the open-source Hazelcast 5
#     member (com.hazelcast:hazelcast), resolved from Maven Central with .ci/maven/<name>/pom.xml
#     into ${NBDB_CACHE:-$HOME/.cache/nbdb}/<name>;
#   - nbdb's member-side code for Hazelcast (java/hazelcast-member), built with Maven into
#     ${NBDB_CACHE:-$HOME/.cache/nbdb}/hazelcast/nbdb/nbdb-hazelcast-member.jar (rebuilt only
#     when its sources change).
#
# Idempotent and quiet when everything is already there. Distro services are never left
# running: package maintainer scripts are refused by a policy-rc.d during the install, and
# any unit systemd may have started is stopped and disabled afterwards, so the default
# ports (6379, 2379, 6641...) stay free for whoever needs them.
#
# Usage: bash .ci/install-servers.sh [--force]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HOME=${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}
CACHE=${NBDB_CACHE:-$HOME/.cache/nbdb}
FORCE=0
[[ ${1:-} == --force ]] && FORCE=1

PACKAGES=(
    redis-server redis-tools
    etcd-server etcd-client
    openvswitch-common
    ovn-central ovn-common
    openssl ca-certificates
    openjdk-17-jre-headless openjdk-17-jdk-headless maven
)
# Distro services these packages ship; none of them may keep running after the install.
SERVICES=(redis-server redis-sentinel etcd openvswitch-switch ovn-central ovn-northd ovn-ovsdb-server-nb ovn-ovsdb-server-sb)

log() { echo "install-servers: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else die "need root (or sudo) to run: $*"
    fi
}

missing_packages() {
    local p
    for p in "${PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
            echo "$p"
        fi
    done
}

stop_distro_services() {
    local s
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
        for s in "${SERVICES[@]}"; do
            as_root systemctl disable --now "$s" >/dev/null 2>&1 || true
        done
    else
        for s in "${SERVICES[@]}"; do
            if [[ -x /etc/init.d/$s ]]; then
                as_root /etc/init.d/"$s" stop >/dev/null 2>&1 || true
            fi
        done
    fi
}

install_packages() {
    local missing
    mapfile -t missing < <(missing_packages)
    [[ ${#missing[@]} -eq 0 ]] && return 0
    log "installing Debian packages: ${missing[*]}"
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [[ ! -e $policy ]]; then
        # 101 = "action forbidden": maintainer scripts must not start the services.
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
        as_root chmod 755 "$policy"
        created_policy=1
    fi
    local rc=0
    export DEBIAN_FRONTEND=noninteractive
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/tmp/nbdb-apt.log 2>&1; then
        # A stale or empty package list is the usual cause on a fresh machine.
        as_root apt-get update -qq >>/tmp/nbdb-apt.log 2>&1 || true
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >>/tmp/nbdb-apt.log 2>&1 || rc=$?
    fi
    [[ $created_policy -eq 1 ]] && as_root rm -f "$policy"
    if [[ $rc -ne 0 ]]; then
        tail -n 30 /tmp/nbdb-apt.log >&2
        die "apt-get install failed (full log: /tmp/nbdb-apt.log)"
    fi
    stop_distro_services
}

# install_from_maven NAME ARTIFACT VERSION_PROPERTY: resolve .ci/maven/NAME/pom.xml's
# dependencies into $CACHE/NAME/lib and record the version in $CACHE/NAME/VERSION; a run with
# the same version in the pom does nothing (unless --force).
install_from_maven() {
    local name=$1 artifact=$2 property=$3
    local pom=$ROOT/.ci/maven/$name/pom.xml dir=$CACHE/$name version
    [[ -f $pom ]] || die "missing $pom"
    version=$(sed -n "s:.*<$property>\(.*\)</$property>.*:\1:p" "$pom" | head -n 1)
    [[ -n $version ]] || die "no <$property> in $pom"
    if [[ $FORCE -eq 0 && -f $dir/VERSION && $(cat "$dir/VERSION") == "$version" && -d $dir/lib ]]; then
        return 0
    fi
    command -v mvn >/dev/null || die "mvn not found (install the Debian package 'maven')"
    log "fetching $artifact $version from Maven Central into $dir"
    local tmp=$dir/lib.tmp
    rm -rf "$tmp"
    mkdir -p "$dir"
    if ! mvn -B -q -f "$pom" dependency:copy-dependencies -DoutputDirectory="$tmp" >"$dir/mvn.log" 2>&1; then
        tail -n 30 "$dir/mvn.log" >&2
        die "Maven could not resolve $artifact:$version (is Maven Central reachable? log: $dir/mvn.log)"
    fi
    ls "$tmp/${artifact##*:}-$version.jar" >/dev/null 2>&1 || die "${artifact##*:}-$version.jar missing after Maven run"
    rm -rf "$dir/lib"
    mv "$tmp" "$dir/lib"
    echo "$version" >"$dir/VERSION"
    rm -f "$dir/mvn.log"
}

# build_member_jar: nbdb's Hazelcast member-side code (java/hazelcast-member), compiled against the
# member version of .ci/maven/hazelcast/pom.xml into $CACHE/hazelcast/nbdb/; a run with the same
# sources and version does nothing (unless --force).
build_member_jar() {
    local src=$ROOT/java/hazelcast-member dir=$CACHE/hazelcast/nbdb version stamp
    version=$(cat "$CACHE/hazelcast/VERSION")
    stamp=$( (echo "$version"; cd "$src" && find pom.xml src -type f | sort | xargs sha256sum) | sha256sum | cut -d' ' -f1)
    if [[ $FORCE -eq 0 && -f $dir/STAMP && $(cat "$dir/STAMP") == "$stamp" && -f $dir/nbdb-hazelcast-member.jar ]]; then
        return 0
    fi
    log "building nbdb's Hazelcast member jar (java/hazelcast-member, hazelcast $version)"
    local build=$dir/build
    rm -rf "$build"
    mkdir -p "$build"
    cp -r "$src/pom.xml" "$src/src" "$build/"
    if ! mvn -B -q -f "$build/pom.xml" -Dhazelcast.version="$version" package >"$dir/mvn.log" 2>&1; then
        tail -n 30 "$dir/mvn.log" >&2
        die "Maven could not build java/hazelcast-member (log: $dir/mvn.log)"
    fi
    mv "$build/target/nbdb-hazelcast-member.jar" "$dir/nbdb-hazelcast-member.jar"
    rm -rf "$build" "$dir/mvn.log"
    echo "$stamp" >"$dir/STAMP"
}

install_packages
install_from_maven cassandra org.apache.cassandra:cassandra-all cassandra.version
install_from_maven hazelcast com.hazelcast:hazelcast server.version
build_member_jar
