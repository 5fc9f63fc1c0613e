#!/usr/bin/env bash
# A real-network lab on one machine: a network namespace (the "remote hosts") joined to this one
# by a link that delays every packet, so ssh and codex-remote talk real TCP with a real round
# trip. netem is not in every kernel (not in this one), so the link is a TUN pair with
# scripts/netlab_relay.py holding each packet RTT/2 each way. Needs root, `ip` (iproute2) and
# python3. Addresses are from 198.18.0.0/15, the range set aside for benchmarks (RFC 2544),
# and never leave the machine.
#
#   scripts/netlab.sh up DIR [RTT_MS]   make the lab; DIR/lab.env then holds NETLAB_NS,
#                                       NETLAB_HOST (the hosts' address), NETLAB_CLIENT,
#                                       NETLAB_DEAD (an address whose packets are dropped),
#                                       NETLAB_RTT_MS
#   scripts/netlab.sh exec DIR CMD...   run CMD inside the hosts' namespace (e.g. an sshd)
#   scripts/netlab.sh down DIR          kill what runs in the namespace, remove the link and namespace
#
# Several labs can exist at once: each takes its names from a hash of DIR.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

usage() { sed -n '2,16p' "$0" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd="$1" dir="$2"
shift 2
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
tag="$(printf '%s' "$dir" | sha256sum | cut -c1-6)"
ns="crlab-$tag" dev_c="crl${tag}c" dev_h="crl${tag}h"
# One /30 per lab, picked from the tag, so two labs do not share addresses.
n=$((16#${tag:0:4} % 16000))
base="198.$((18 + n / 8000)).$(((n % 8000) / 32)).$(((n % 32) * 8))"
client="${base%.*}.$((${base##*.} + 1))" host="${base%.*}.$((${base##*.} + 2))"
# A host that is down: routed into the link, but nothing in the namespace has it, so its
# packets are dropped there (a connect to it times out, as to a machine that is off).
dead="${base%.*}.$((${base##*.} + 3))"

down() {
    if ip netns list | grep -qw "$ns"; then
        # Everything started in the namespace (sshds, codexd) ends with it.
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
        ip -n "$ns" link del "$dev_h" 2>/dev/null || true
        ip netns del "$ns"
    fi
    if [ -f "$dir/relay.pid" ]; then
        kill "$(cat "$dir/relay.pid")" 2>/dev/null || true
        rm -f "$dir/relay.pid"
    fi
    ip link del "$dev_c" 2>/dev/null || true
    ip link del "$dev_h" 2>/dev/null || true
    rm -f "$dir/lab.env"
}

case "$cmd" in
up)
    rtt="${1:-50}"
    [ "$(id -u)" = 0 ] || { echo "netlab: needs root (network namespaces)" >&2; exit 1; }
    down
    ip netns add "$ns"
    ip tuntap add dev "$dev_c" mode tun
    ip tuntap add dev "$dev_h" mode tun
    # The relay attaches to both devices first; the hosts' end then moves into the namespace
    # (an attached TUN keeps its file across the move).
    python3 "$here/netlab_relay.py" "$dev_c" "$dev_h" "$(awk "BEGIN{print $rtt/2}")" \
        >"$dir/relay.log" 2>&1 &
    echo $! >"$dir/relay.pid"
    for _ in $(seq 100); do grep -q ready "$dir/relay.log" 2>/dev/null && break; sleep 0.05; done
    grep -q ready "$dir/relay.log" || { cat "$dir/relay.log" >&2; down; exit 1; }
    ip link set "$dev_h" netns "$ns"
    ip addr add "$client" peer "$host" dev "$dev_c"
    ip link set "$dev_c" up
    ip route add "$dead" dev "$dev_c"
    ip -n "$ns" addr add "$host" peer "$client" dev "$dev_h"
    ip -n "$ns" link set "$dev_h" up
    ip -n "$ns" link set lo up
    cat >"$dir/lab.env" <<ENV
NETLAB_NS=$ns
NETLAB_HOST=$host
NETLAB_CLIENT=$client
NETLAB_DEAD=$dead
NETLAB_RTT_MS=$rtt
ENV
    cat "$dir/lab.env"
    ;;
exec)
    [ $# -ge 1 ] || usage
    exec ip netns exec "$ns" "$@"
    ;;
down)
    down
    ;;
*)
    usage
    ;;
esac
