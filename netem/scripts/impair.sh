#!/usr/bin/env bash
# Impairs one front-end↔worker link of the testbed (testbed.sh), on both ends.
#
#   impair.sh set I [delay MS] [jitter MS] [loss PCT] [gemodel P R [1-H [1-K]]] [rate RATE] [limit PKTS]
#             [--udp-port PORT]
#   impair.sh clear I
#   impair.sh check      say whether this kernel has sch_netem
#
# With sch_netem: tc netem on both veth ends (delay ± jitter, random or Gilbert-Elliott loss,
# rate, and a queue limit big enough for multi-second delays: default 100000 packets).
# Without it (modprobe sch_netem / `tc qdisc add ... netem` fails, as on this project's CI
# kernel) it says so and falls back:
#   * random loss: iptables `-m statistic --mode random --probability P -j DROP` on the OUTPUT
#     chain of both namespaces (each direction loses PCT%);
#   * delay/jitter/gemodel/rate: the userspace relay. Pass --udp-port PORT (the worker's UDP
#     port); a `glimpse-relay serve` is started in the front-end namespace listening on
#     127.0.0.1:(PORT+I) and forwarding to 10.10.I.2:PORT — point the front-end's --node at
#     that address. Its control port is 127.0.0.1:(7400+I) in the same namespace.
# Environment: GLIMPSE_NETNS_PREFIX (default "glimpse"); GLIMPSE_RELAY_BIN (default:
# glimpse-relay on PATH, else target/{release,debug}/glimpse-relay).
set -euo pipefail

PREFIX="${GLIMPSE_NETNS_PREFIX:-glimpse}"
FE="${PREFIX}-fe"
RUN_DIR="/run/glimpse-netem/${PREFIX}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

die() {
    echo "impair.sh: $*" >&2
    exit 1
}

# Prints "yes" if a netem qdisc can be attached (probed on a throwaway namespace's lo).
have_netem() {
    local probe="${PREFIX}-netem-probe-$$" ok=no
    if command -v modprobe >/dev/null; then
        modprobe sch_netem 2>/dev/null || true
    fi
    ip netns add "$probe" 2>/dev/null || {
        echo no
        return
    }
    if ip netns exec "$probe" tc qdisc add dev lo root netem delay 1ms 2>/dev/null; then
        ok=yes
    fi
    ip netns del "$probe" 2>/dev/null || true
    echo "$ok"
}

relay_bin() {
    if [[ -n "${GLIMPSE_RELAY_BIN:-}" ]]; then
        echo "$GLIMPSE_RELAY_BIN"
    elif command -v glimpse-relay >/dev/null; then
        command -v glimpse-relay
    else
        local root
        root="$(cd "$HERE/../.." && pwd)"
        for p in "$root/target/release/glimpse-relay" "$root/target/debug/glimpse-relay"; do
            if [[ -x "$p" ]]; then
                echo "$p"
                return
            fi
        done
        die "glimpse-relay not found (cargo build -p glimpse-netem, or set GLIMPSE_RELAY_BIN)"
    fi
}

ends() {
    # "namespace device" for both ends of link I.
    echo "$FE fe-w$1"
    echo "${PREFIX}-w$1 eth0"
}

clear_link() {
    local i="$1" ns dev line
    while read -r ns dev; do
        ip netns exec "$ns" tc qdisc del dev "$dev" root 2>/dev/null || true
        # Delete our statistic DROP rules (tagged with the comment glimpse-impair).
        while read -r line; do
            [[ -n "$line" ]] || continue
            # shellcheck disable=SC2086 # the rule is a list of words, as iptables -S prints it
            ip netns exec "$ns" iptables ${line/#-A/-D} 2>/dev/null || true
        done < <(ip netns exec "$ns" iptables -S OUTPUT 2>/dev/null | grep -- "glimpse-impair" | grep -- "-o $dev " || true)
    done < <(ends "$i")
    local pidfile="$RUN_DIR/relay-$i.pid"
    if [[ -f "$pidfile" ]]; then
        kill "$(cat "$pidfile")" 2>/dev/null || true
        rm -f "$pidfile"
    fi
}

set_link() {
    local i="$1"
    shift
    [[ "$i" =~ ^[0-9]+$ ]] || die "link index must be a number, got '$i'"
    ip netns list | grep -q "^${PREFIX}-w${i}\b" || die "no namespace ${PREFIX}-w${i} (testbed.sh up N first)"
    local delay="" jitter="" loss="" ge="" rate="" limit=100000 udp_port=""
    while (($#)); do
        case "$1" in
        delay) delay="$2"; shift 2 ;;
        jitter) jitter="$2"; shift 2 ;;
        loss) loss="$2"; shift 2 ;;
        gemodel)
            ge="$2 $3"
            shift 3
            while (($#)) && [[ "$1" =~ ^[0-9.]+$ ]]; do ge="$ge $1"; shift; done
            ;;
        rate) rate="$2"; shift 2 ;;
        limit) limit="$2"; shift 2 ;;
        --udp-port) udp_port="$2"; shift 2 ;;
        *) die "unknown argument '$1'" ;;
        esac
    done
    clear_link "$i"
    if [[ "$(have_netem)" == yes ]]; then
        local args=(limit "$limit") ns dev
        [[ -n "$delay" ]] && args+=(delay "${delay}ms")
        [[ -n "$delay" && -n "$jitter" ]] && args+=("${jitter}ms")
        if [[ -n "$ge" ]]; then
            # shellcheck disable=SC2206 # word splitting of the numbers is intended
            local g=($ge)
            args+=(loss gemodel "${g[@]/%/%}")
        elif [[ -n "$loss" ]]; then
            args+=(loss "${loss}%")
        fi
        [[ -n "$rate" ]] && args+=(rate "$rate")
        while read -r ns dev; do
            ip netns exec "$ns" tc qdisc add dev "$dev" root netem "${args[@]}"
        done < <(ends "$i")
        echo "link $i: tc netem ${args[*]} on both ends"
        return
    fi
    echo "impair.sh: this kernel has no sch_netem (tc netem unavailable); falling back to iptables + glimpse-relay" >&2
    if [[ -n "$loss" ]]; then
        command -v iptables >/dev/null || die "iptables not found (apt-get install iptables)"
        local p ns dev
        p="$(awk -v l="$loss" 'BEGIN { printf "%.6f", l / 100 }')"
        while read -r ns dev; do
            ip netns exec "$ns" iptables -A OUTPUT -o "$dev" -m comment --comment "glimpse-impair" \
                -m statistic --mode random --probability "$p" -j DROP
        done < <(ends "$i")
        echo "link $i: iptables random drop p=$p on both ends"
    fi
    if [[ -n "$delay$jitter$ge$rate" ]]; then
        [[ -n "$udp_port" ]] || die "delay/jitter/gemodel/rate without netem need the relay: pass --udp-port PORT (the worker's UDP port)"
        local spec="" bin
        [[ -n "$delay" ]] && spec+=" delay=${delay}ms"
        [[ -n "$jitter" ]] && spec+=" jitter=${jitter}ms"
        if [[ -n "$ge" ]]; then
            # shellcheck disable=SC2206
            local g=($ge) csv="" x
            for x in "${g[@]}"; do csv+="${csv:+,}$(awk -v v="$x" 'BEGIN { print v / 100 }')"; done
            spec+=" ge=$csv"
        fi
        [[ -n "$rate" ]] && spec+=" rate=$rate"
        bin="$(relay_bin)"
        mkdir -p "$RUN_DIR"
        # The relay delays each direction by DELAY, so the round trip grows by 2×DELAY, as
        # with netem on both ends.
        ip netns exec "$FE" "$bin" serve --listen "127.0.0.1:$((udp_port + i))" \
            --upstream "10.10.${i}.2:${udp_port}" --control "127.0.0.1:$((7400 + i))" \
            --both "${spec# }" >"$RUN_DIR/relay-$i.log" 2>&1 &
        echo $! >"$RUN_DIR/relay-$i.pid"
        echo "link $i: relay in ${FE} at 127.0.0.1:$((udp_port + i)) -> 10.10.${i}.2:${udp_port} (${spec# }); control 127.0.0.1:$((7400 + i))"
    fi
}

case "${1:-}" in
set)
    shift
    (($#)) || die "usage: impair.sh set I [options]"
    set_link "$@"
    ;;
clear)
    [[ -n "${2:-}" ]] || die "usage: impair.sh clear I"
    clear_link "$2"
    echo "link $2: cleared"
    ;;
check)
    if [[ "$(have_netem)" == yes ]]; then echo "sch_netem: available"; else echo "sch_netem: missing (fallback: iptables statistic loss + glimpse-relay delay)"; fi
    ;;
*)
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
