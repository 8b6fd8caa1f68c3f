#!/usr/bin/env bash
# Builds the seed's testbed on one Linux host with network namespaces: a front-end namespace
# and N worker namespaces, one veth link per worker with its own /24 (10.10.i.0/24: the
# front-end end is 10.10.i.1, the worker end 10.10.i.2).
#
#   testbed.sh up N      create ${PREFIX}-fe and ${PREFIX}-w1..wN (needs root)
#   testbed.sh down      delete every namespace of the testbed (and its links)
#   testbed.sh status    list the testbed's namespaces and addresses
#
# Run a process inside with: ip netns exec ${PREFIX}-w1 glimpse-node serve --listen 10.10.1.2:7443 ...
# Environment: GLIMPSE_NETNS_PREFIX (default "glimpse"), the namespace name prefix.
set -euo pipefail

PREFIX="${GLIMPSE_NETNS_PREFIX:-glimpse}"
FE="${PREFIX}-fe"

die() {
    echo "testbed.sh: $*" >&2
    exit 1
}

need_root() {
    [[ "$(id -u)" -eq 0 ]] || die "must run as root (network namespaces and veth links)"
    command -v ip >/dev/null || die "iproute2 'ip' not found"
}

namespaces() {
    ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${PREFIX}-(fe|w[0-9]+)$" || true
}

up() {
    local n="$1" i
    if ! [[ "$n" =~ ^[0-9]+$ ]] || ((n < 1 || n > 250)); then
        die "N must be 1..250, got '$n'"
    fi
    need_root
    if [[ -n "$(namespaces)" ]]; then
        die "testbed '${PREFIX}' already exists; run 'testbed.sh down' first"
    fi
    # On any failure, remove what was created so far.
    trap 'echo "testbed.sh: setup failed, cleaning up" >&2; down' ERR
    ip netns add "$FE"
    ip -n "$FE" link set lo up
    for ((i = 1; i <= n; i++)); do
        local w="${PREFIX}-w${i}"
        ip netns add "$w"
        ip -n "$w" link set lo up
        # Create the pair inside the front-end namespace, then move one end to the worker.
        ip -n "$FE" link add "fe-w${i}" type veth peer name eth0 netns "$w"
        ip -n "$FE" addr add "10.10.${i}.1/24" dev "fe-w${i}"
        ip -n "$w" addr add "10.10.${i}.2/24" dev eth0
        # Per-packet loss experiments need per-packet segments: no GSO/TSO/GRO batching.
        if command -v ethtool >/dev/null; then
            ip netns exec "$FE" ethtool -K "fe-w${i}" gso off tso off gro off >/dev/null 2>&1 || true
            ip netns exec "$w" ethtool -K eth0 gso off tso off gro off >/dev/null 2>&1 || true
        fi
        ip -n "$FE" link set "fe-w${i}" up
        ip -n "$w" link set eth0 up
    done
    trap - ERR
    echo "testbed '${PREFIX}': front-end namespace ${FE}, ${n} worker(s) at 10.10.1..${n}.2 (front-end side 10.10.i.1)"
}

down() {
    need_root
    local ns
    for ns in $(namespaces); do
        # Stop anything a fallback left running inside (relays started by impair.sh).
        ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
        ip netns del "$ns" || echo "testbed.sh: could not delete $ns" >&2
    done
    rm -rf "/run/glimpse-netem/${PREFIX}"
}

status() {
    local ns
    for ns in $(namespaces); do
        echo "== $ns"
        ip -n "$ns" -brief addr show | grep -v '^lo ' || true
    done
}

case "${1:-}" in
up) up "${2:-}" ;;
down) down ;;
status) status ;;
*)
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
