#!/usr/bin/env bash
# "A real network": the aggregator, two gateways and ten clients in separate network
# namespaces joined by veth links, with added delay and packet loss, and a partition of one
# gateway's uplink while training runs. Needs root (ip netns, nft).
#
#   bash Tests/netns/run.sh          # uses .build/debug/apiary (APIARY=... for another)
#
#        dev1 (5 clients)            dev2 (5 clients)
#          | 10.77.3.0/30              | 10.77.4.0/30
#        gw1 (gateway-1)             gw2 (gateway-2)
#          | 10.77.1.0/30              | 10.77.2.0/30
#          +------------ agg ----------+
#                    (aggregator)
#
# Devices reach only their gateway and gateways only the aggregator: nothing routes (IP
# forwarding stays off in every namespace, and a device has no route to the aggregator).
# Impairments, because this kernel has no netem qdisc:
#   - delay: each gateway reaches the aggregator through Tests/netns/delay_proxy.py, run in the
#     gateway's namespace, which holds every chunk for NETNS_DELAY_MS in each direction;
#   - loss: an nftables rule in every namespace drops NETNS_LOSS_PERCENT of the packets arriving
#     on each veth (so each direction of each link loses that share);
#   - partition: an nftables rule in gw1 drops everything on its uplink for NETNS_PARTITION_S.
# Checks: the aggregator's evaluated test accuracy reaches NETNS_TARGET; while cut off, gw1
# keeps merging its devices' updates (its /status version grows) and the aggregator merges
# nothing from it; after the cut, gateway-1's updates are merged by the aggregator again.
#
# NETNS_MODE=direct runs the same network without gateways (the proxies carry the devices'
# connections to the aggregator), for a binary without `apiary gateway`.
#
# Everything it makes (namespaces with their veths, processes, the temporary directory) is
# removed on exit, failure or interrupt; namespaces are named apns-<pid>-*, and those of an
# earlier run that died without cleaning up are removed at start. Last line: "netns: ok" or a
# "netns: FAIL ..." message (exit status 1).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

delay_ms="${NETNS_DELAY_MS:-30}"          # one-way delay added on each gateway uplink
loss_pct="${NETNS_LOSS_PERCENT:-5}"       # packets dropped on arrival at each veth, in percent
partition_s="${NETNS_PARTITION_S:-15}"    # how long gw1's uplink is cut
target="${NETNS_TARGET:-0.90}"            # test accuracy to reach (the demo's target)
budget_s="${NETNS_BUDGET_S:-150}"         # the whole run, setup to cleanup
mode="${NETNS_MODE:-gateway}"             # gateway | direct
clients_per_dev=5

[[ "$(id -u)" == 0 ]] || { echo "netns: FAIL needs root (network namespaces, nftables)" >&2; exit 1; }
[[ "$mode" == gateway || "$mode" == direct ]] || { echo "netns: FAIL NETNS_MODE=$mode (gateway or direct)" >&2; exit 1; }
src_bin="${APIARY:-$root/.build/debug/apiary}"
[[ -x "$src_bin" ]] || { echo "netns: FAIL $src_bin not found (swift build --product apiary)" >&2; exit 1; }

# Tools: ip, ping, python3, and nftables for the loss and the partition (installed with apt-get
# when missing).
missing=()
command -v nft >/dev/null || missing+=(nftables)
command -v ip >/dev/null || missing+=(iproute2)
command -v ping >/dev/null || missing+=(iputils-ping)
if (( ${#missing[@]} )); then
    echo "netns: installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
for tool in ip nft ping python3; do
    command -v "$tool" >/dev/null || { echo "netns: FAIL $tool not found" >&2; exit 1; }
done
# The interpreter itself, not a version manager's shim: the status probes run often.
py="$(python3 -c 'import sys; print(sys.executable)')"

prefix="apns-$$"
namespaces=()
pids=()
work=""

# ---------------------------------------------------------------------------------------------
# Cleanup: on every exit. Processes first (TERM, then KILL after 3 s), then whatever still runs
# inside our namespaces, then the veths and the namespaces, then the temporary directory.
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    local p n i alive
    disown -a  # no "Killed" job notices
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for i in $(seq 1 30); do
        alive=0
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [[ $alive == 0 ]] && break
        sleep 0.1
    done
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
    for n in "${namespaces[@]}"; do remove_namespace "$n"; done
    [[ -n "$work" ]] && rm -rf "$work"
    exit "$rc"
}

# Kill what runs in a namespace of ours, delete its veths (the peer goes with each) and the
# namespace itself.
remove_namespace() {
    local n=$1 p ifname
    for p in $(ip netns pids "$n" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
    for ifname in $(ip -n "$n" -o link show type veth 2>/dev/null | awk -F'[:@ ]+' '{print $2}'); do
        ip -n "$n" link del "$ifname" 2>/dev/null || true
    done
    ip netns del "$n" 2>/dev/null || true
}

trap cleanup EXIT
trap 'echo "netns: interrupted" >&2; exit 130' INT
trap 'echo "netns: terminated" >&2; exit 143' TERM

# Leftovers of an earlier run that died without its EXIT trap (SIGKILL): namespaces and
# temporary directories named after a process id that no longer runs.
for n in $(ip netns list | awk '{print $1}' | grep -E '^apns-[0-9]+-' || true); do
    owner="${n#apns-}"; owner="${owner%%-*}"
    if ! kill -0 "$owner" 2>/dev/null; then
        echo "netns: removing stale namespace $n"
        remove_namespace "$n"
    fi
done
for d in /tmp/apns-[0-9]*.*; do
    [[ -d "$d" ]] || continue
    owner="${d#/tmp/apns-}"; owner="${owner%%.*}"
    kill -0 "$owner" 2>/dev/null || rm -rf "$d"
done

work="$(mktemp -d "/tmp/apns-$$.XXXXXX")"
# A private copy of the binary: it may be rebuilt while this runs.
cp "$src_bin" "$work/apiary"
bin="$work/apiary"
# (An unknown subcommand with --help prints the top-level help with status 0: look at the usage.)
gateway_usage="$("$bin" gateway --help 2>&1 || true)"
if [[ "$mode" == gateway && "$gateway_usage" != *"USAGE: apiary gateway"* ]]; then
    echo "netns: FAIL $src_bin has no 'gateway' subcommand (NETNS_MODE=direct runs without gateways)" >&2
    exit 1
fi

budget_end=$budget_s  # bash's SECONDS counts from the start of this script

# ---------------------------------------------------------------------------------------------
# Helpers.
ns() { echo "$prefix-$1"; }
in_ns() { local n; n="$(ns "$1")"; shift; ip netns exec "$n" "$@"; }

# fail MESSAGE [LOG...]: the last lines of each log, then the message, then exit 1.
fail() {
    local msg=$1 f
    shift
    for f in "$@"; do
        [[ -f "$f" ]] || continue
        echo "---- ${f#"$work"/} (last 15 lines)"
        tail -n 15 "$f"
    done
    echo "netns: FAIL $msg" >&2
    exit 1
}

# wait_for TIMEOUT_S COMMAND...: true once COMMAND succeeds, false after TIMEOUT_S; fails the
# run outright past the overall budget.
wait_for() {
    local limit=$((SECONDS + $1))
    shift
    until "$@"; do
        ((SECONDS < budget_end)) || fail "over the ${budget_s} s budget (waiting for: $*)"
        ((SECONDS < limit)) || return 1
        sleep 0.5
    done
}

# Elapsed seconds since a start time from now_s, with 1 decimal.
now_s() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now_s)" 'BEGIN { printf "%.1f", b - a }'; }
fmt3() { awk -v a="$1" 'BEGIN { if (a == "-") print a; else printf "%.3f", a }'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "-" && a + 0 >= b + 0) }'; }
gt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "-" && a + 0 > b + 0) }'; }

# Every status server listens on 127.0.0.1:9464 inside its own namespace.
http_port=9464
# status NS FIELD...: fields of NS's /status (see probe.py json), "-" each when unreachable.
status() {
    local n=$1
    shift
    in_ns "$n" "$py" "$here/probe.py" json "http://127.0.0.1:$http_port/status" "$@" 2>/dev/null \
        || printf -- '- %.0s' "$@"
}
healthy() { in_ns "$1" "$py" "$here/probe.py" json "http://127.0.0.1:$http_port/status" version >/dev/null 2>&1; }

# start NAME NS LOG COMMAND...: a process in a namespace, in the background, remembered for
# cleanup. A simple command run with & is exec'd in the forked child, and `ip netns exec` execs
# the command in turn, so $! is the process itself (a child of this shell: `wait` works).
declare -A pid_of=()
start() {
    local name=$1 n=$2 log=$3
    shift 3
    ip netns exec "$(ns "$n")" "$@" >"$log" 2>&1 &
    pids+=("$!")
    pid_of[$name]=$!
}
running() { kill -0 "${pid_of[$1]}" 2>/dev/null; }

# ---------------------------------------------------------------------------------------------
# 1. The network: five namespaces, four veth links, no forwarding, loss on every veth.
echo "netns: building the network (prefix $prefix)"
for n in agg gw1 gw2 dev1 dev2; do
    ip netns add "$(ns $n)"
    namespaces+=("$(ns $n)")
    in_ns $n ip link set dev lo up
    in_ns $n sysctl -qw net.ipv4.ip_forward=0
done

# link NS_A IF_A ADDR_A NS_B IF_B ADDR_B: a veth pair with a /30 on it.
link() {
    ip -n "$(ns "$1")" link add name "$2" type veth peer name "$5" netns "$(ns "$4")"
    ip -n "$(ns "$1")" addr add "$3/30" dev "$2"
    ip -n "$(ns "$4")" addr add "$6/30" dev "$5"
    ip -n "$(ns "$1")" link set dev "$2" up
    ip -n "$(ns "$4")" link set dev "$5" up
}
# Interface names: in agg "gw1" and "gw2"; in a gateway "wan" (uplink) and "lan" (its devices);
# in a device namespace "gw".
link agg gw1 10.77.1.1 gw1 wan 10.77.1.2
link agg gw2 10.77.2.1 gw2 wan 10.77.2.2
link gw1 lan 10.77.3.1 dev1 gw 10.77.3.2
link gw2 lan 10.77.4.1 dev2 gw 10.77.4.2
agg_addr=([1]=10.77.1.1 [2]=10.77.2.1)  # the aggregator as seen from gw1 and gw2
gw_addr=([1]=10.77.3.1 [2]=10.77.4.1)   # each gateway as seen from its devices

# Loss: in every namespace, count what arrives on a veth and drop loss_pct percent of it.
for n in agg gw1 gw2 dev1 dev2; do
    in_ns $n nft -f - <<EOF
table inet apns_loss {
    chain input {
        type filter hook input priority 0; policy accept;
        iifname != "lo" counter
        iifname != "lo" numgen random mod 100 < $loss_pct counter drop
    }
}
EOF
done

# No path from a device to the aggregator, nor between the gateways: nothing routes.
for pair in "dev1 ${agg_addr[1]}" "dev2 ${agg_addr[2]}" "gw1 10.77.2.2"; do
    read -r n addr <<<"$pair"
    if in_ns "$n" ip route get "$addr" >/dev/null 2>&1; then
        fail "$n has a route to $addr; only neighbours on a link may talk"
    fi
done

# ---------------------------------------------------------------------------------------------
# 2. The aggregator, in agg, on every address of its namespace.
mkdir -p "$work/agg" "$work/gw1" "$work/gw2" "$work/dev1" "$work/dev2"
cat >"$work/agg/aggregator.yaml" <<EOF
endpoints:
  model: tcp://0.0.0.0:5557
  snapshot: tcp://0.0.0.0:5556
  update: tcp://0.0.0.0:5558
security:
  insecure: true
checkpoint:
  directory: $work/agg/checkpoints
ledger:
  path: $work/agg/ledger.sqlite
evaluation:
  enabled: true
  every_versions: 10
  interval_s: 1
http:
  host: 127.0.0.1
  port: $http_port
progress:
  interval_s: 5
EOF
start aggregator agg "$work/agg/aggregator.log" "$bin" aggregator --config "$work/agg/aggregator.yaml" --insecure
wait_for 20 healthy agg || fail "the aggregator's status server did not come up" "$work/agg/aggregator.log"

# ---------------------------------------------------------------------------------------------
# 3. The delaying proxies, one in each gateway's namespace. Gateway mode: the gateway's
# upstream endpoints are 127.0.0.1:5556-5558 of its namespace, forwarded to the aggregator.
# Direct mode: the proxy listens where the gateway would, for the devices.
declare -a proxy_listen=()
for g in 1 2; do
    if [[ "$mode" == gateway ]]; then listen=127.0.0.1; else listen="${gw_addr[$g]}"; fi
    start "proxy$g" "gw$g" "$work/gw$g/proxy.log" "$py" -u "$here/delay_proxy.py" --delay-ms "$delay_ms" \
        "$listen:5556=${agg_addr[$g]}:5556" "$listen:5557=${agg_addr[$g]}:5557" "$listen:5558=${agg_addr[$g]}:5558"
    proxy_listen[g]=$listen
done
for g in 1 2; do
    wait_for 10 grep -qs ready "$work/gw$g/proxy.log" || fail "the proxy in gw$g did not start" "$work/gw$g/proxy.log"
done

# Measure what the links do, from gw1: the loss with 200 pings to the aggregator (not through
# the proxy), and the round trip to the aggregator's snapshot socket, directly and through the
# proxy (probe.py rtt: one ZMTP greeting exchange, median of 15).
ping_loss="$(in_ns gw1 ping -q -c 200 -i 0.005 -W 1 "${agg_addr[1]}" | sed -n 's/.* \([0-9.]*\)% packet loss.*/\1/p' || true)"
rtt_direct="$(in_ns gw1 "$py" "$here/probe.py" rtt "${agg_addr[1]}" 5556 15)" || fail "no round trip gw1 -> aggregator"
rtt_proxy="$(in_ns gw1 "$py" "$here/probe.py" rtt "${proxy_listen[1]}" 5556 15)" || fail "no round trip through the proxy" "$work/gw1/proxy.log"
added_rtt="$(awk -v a="$rtt_proxy" -v b="$rtt_direct" 'BEGIN { printf "%.1f", a - b }')"
echo "netns: gw1 -> aggregator: ping loss ${ping_loss}% (two links crossed per round trip at ${loss_pct}% each)," \
     "round trip ${rtt_direct} ms direct, ${rtt_proxy} ms through the proxy (+${added_rtt} ms)"
# The proxy must add about 2 x delay_ms per round trip (one delay each way).
awk -v a="$added_rtt" -v d="$delay_ms" 'BEGIN { exit !(a >= 1.6 * d && a <= 2 * d + 40) }' \
    || fail "the proxy added ${added_rtt} ms per round trip, expected about $((2 * delay_ms)) ms"

# ---------------------------------------------------------------------------------------------
# 4. The gateways (gateway mode), each with its own status server and state.
if [[ "$mode" == gateway ]]; then
    for g in 1 2; do
        cat >"$work/gw$g/gateway.yaml" <<EOF
endpoints:
  model: tcp://${gw_addr[$g]}:5557
  snapshot: tcp://${gw_addr[$g]}:5556
  update: tcp://${gw_addr[$g]}:5558
security:
  insecure: true
checkpoint:
  directory: $work/gw$g/checkpoints
ledger:
  path: $work/gw$g/ledger.sqlite
evaluation:
  enabled: true
  interval_s: 1
http:
  host: 127.0.0.1
  port: $http_port
progress:
  interval_s: 5
gateway:
  push_every_merges: 20
  push_interval_s: 2
upstream:
  client:
    id: gateway-$g
  endpoints:
    model: tcp://127.0.0.1:5557
    snapshot: tcp://127.0.0.1:5556
    update: tcp://127.0.0.1:5558
  security:
    insecure: true
EOF
        start "gateway$g" "gw$g" "$work/gw$g/gateway.log" "$bin" gateway --config "$work/gw$g/gateway.yaml" --insecure
    done
    for g in 1 2; do
        wait_for 20 healthy "gw$g" || fail "gateway-$g's status server did not come up" "$work/gw$g/gateway.log"
    done
fi

# ---------------------------------------------------------------------------------------------
# 5. Five clients behind each gateway: partitions 0-4 in dev1, 5-9 in dev2, with the workload's
# per-partition device delays. They connect to their gateway's address only.
for g in 1 2; do
    for i in $(seq 0 $((clients_per_dev - 1))); do
        part=$(((g - 1) * clients_per_dev + i))
        id="dev$g-c$part"
        start "$id" "dev$g" "$work/dev$g/$id.log" env \
            ENDPOINTS_MODEL="tcp://${gw_addr[$g]}:5557" \
            ENDPOINTS_SNAPSHOT="tcp://${gw_addr[$g]}:5556" \
            ENDPOINTS_UPDATE="tcp://${gw_addr[$g]}:5558" \
            "$bin" client --config "$root/Configs/client.yaml" --id "$id" --partition "$part" --insecure
    done
done
t0="$(now_s)"
echo "netns: $mode mode: aggregator, $([[ $mode == gateway ]] && echo "2 gateways, ")$((2 * clients_per_dev)) clients started"

# What the aggregator has merged from behind gateway g: gateway-g's updates, or in direct mode
# those of the clients in dev<g>.
if [[ "$mode" == gateway ]]; then
    from_field=([1]='clients.list[id=gateway-1].merged' [2]='clients.list[id=gateway-2].merged')
else
    from_field=([1]='clients.list[id^=dev1-].merged' [2]='clients.list[id^=dev2-].merged')
fi
merged_from() { status agg "${from_field[$1]}"; }
# Three merges from behind each: the uplinks carry training before one is cut.
both_merged() { ge "$(merged_from 1)" 3 && ge "$(merged_from 2)" 3; }

# Accuracy watcher: the first time the aggregator's evaluated accuracy reaches the target.
t_target=""
acc_at_target=""
check_target() {
    local acc
    [[ -z "$t_target" ]] || return 0
    acc="$(status agg evaluation.latest.accuracy)"
    if ge "$acc" "$target"; then
        t_target="$(since "$t0")"
        acc_at_target="$(fmt3 "$acc")"
        echo "netns: test accuracy $acc_at_target >= $target after ${t_target} s"
    fi
}

# ---------------------------------------------------------------------------------------------
# 6. Training flows over both delayed, lossy uplinks.
wait_for 60 both_merged || fail "no updates from behind both gateways reached the aggregator" \
    "$work/agg/aggregator.log" "$work/gw1/gateway.log" "$work/gw1/proxy.log" "$work/dev1/dev1-c0.log"
t_first="$(since "$t0")"
echo "netns: updates from behind both gateways merged by the aggregator after ${t_first} s"
check_target

# ---------------------------------------------------------------------------------------------
# 7. The partition: drop everything on gw1's uplink, both ways, for partition_s seconds.
agg_before="$(status agg version)"
in_ns gw1 nft -f - <<'EOF'
table inet apns_cut {
    chain input { type filter hook input priority -10; policy accept; iifname "wan" drop; }
    chain output { type filter hook output priority -10; policy accept; oifname "wan" drop; }
}
EOF
t_cut="$(now_s)"
echo "netns: gw1's uplink cut for ${partition_s} s"
# Anything already in flight lands within 2 s; from then on nothing from gw1 may be merged.
sleep 2
from1_cut="$(merged_from 1)"
[[ "$mode" == gateway ]] && read -r gw1_before gw1_acc_before < <(status gw1 version evaluation.latest.accuracy)
# left_of SECONDS: how much of the partition is left once SECONDS more are taken off (false
# when nothing is).
left_of() { awk -v p="$partition_s" -v e="$(since "$t_cut")" -v m="$1" 'BEGIN { l = p - e - m; printf "%.2f", l; exit !(l > 0) }'; }
while left_of 2.5 >/dev/null; do
    check_target
    sleep 0.5
done
# The last readings of the partition, then the rest of it, then the restore.
from1_end="$(merged_from 1)"
agg_end="$(status agg version)"
[[ "$mode" == gateway ]] && read -r gw1_end gw1_acc_end < <(status gw1 version evaluation.latest.accuracy)
if left="$(left_of 0)"; then sleep "$left"; fi
in_ns gw1 nft delete table inet apns_cut
t_restore="$(now_s)"
cut_s="$(awk -v a="$t_cut" -v b="$t_restore" 'BEGIN { printf "%.1f", b - a }')"
echo "netns: gw1's uplink restored after ${cut_s} s"

[[ "$from1_end" == "$from1_cut" ]] \
    || fail "the aggregator merged from behind gw1 during the partition ($from1_cut -> $from1_end): the cut did not hold"
gt "$agg_end" "$agg_before" \
    || fail "the aggregator merged nothing during the partition (version $agg_before -> $agg_end): gw2 should go on" \
        "$work/agg/aggregator.log" "$work/gw2/gateway.log"
if [[ "$mode" == gateway ]]; then
    gt "$gw1_end" "$gw1_before" \
        || fail "gw1 stopped merging while cut off (version $gw1_before -> $gw1_end)" "$work/gw1/gateway.log" "$work/dev1/dev1-c0.log"
fi

# ---------------------------------------------------------------------------------------------
# 8. Reconnection: the aggregator merges from behind gw1 again.
reconnected() { gt "$(merged_from 1)" "$from1_end"; }
wait_for 60 reconnected || fail "nothing from behind gw1 merged within 60 s of the restore" \
    "$work/agg/aggregator.log" "$work/gw1/gateway.log" "$work/gw1/proxy.log"
t_reconnect="$(since "$t_restore")"
echo "netns: updates from behind gw1 merged again ${t_reconnect} s after the restore"

# ---------------------------------------------------------------------------------------------
# 9. Training completes.
target_reached() { check_target; [[ -n "$t_target" ]]; }
wait_for $((budget_end - SECONDS - 10)) target_reached \
    || fail "test accuracy $(status agg evaluation.latest.accuracy) did not reach $target in time" \
        "$work/agg/aggregator.log"

# Every process is still up (nothing crashed on the way).
for name in "${!pid_of[@]}"; do
    running "$name" || fail "$name exited during the run" "$(find "$work" -name "$name.log" | head -n 1)"
done

# Final figures, then a graceful stop of the aggregator and the gateways (exit status 0).
read -r agg_final from1_final from2_final acc_final rejected < <(status agg version "${from_field[1]}" "${from_field[2]}" \
    evaluation.latest.accuracy updates.rejected_by_reason)
acc_final="$(fmt3 "$acc_final")"
if [[ "$mode" == gateway ]]; then
    gw1_final="$(status gw1 version)"
    gw2_final="$(status gw2 version)"
fi
drops=0
packets=0
for n in agg gw1 gw2 dev1 dev2; do
    read -r seen dropped < <(in_ns $n nft list table inet apns_loss | awk '/counter/ { for (i = 1; i <= NF; i++) if ($i == "packets") v[++k] = $(i + 1) } END { print v[1], v[2] }')
    packets=$((packets + seen))
    drops=$((drops + dropped))
done

stop_ok=1
for name in gateway1 gateway2 aggregator; do
    [[ -n "${pid_of[$name]:-}" ]] || continue
    kill -TERM "${pid_of[$name]}"
    rc=0
    wait "${pid_of[$name]}" || rc=$?
    if [[ $rc != 0 ]]; then echo "netns: $name exited with status $rc after SIGTERM"; stop_ok=0; fi
done
[[ $stop_ok == 1 ]] || fail "SIGTERM did not stop everything cleanly" "$work/agg/aggregator.log" "$work/gw1/gateway.log" "$work/gw2/gateway.log"

echo
echo "netns summary ($mode mode, $((2 * clients_per_dev)) clients, $SECONDS s in all)"
echo "  added delay      ${delay_ms} ms each way on both uplinks: round trip ${rtt_direct} ms direct -> ${rtt_proxy} ms through the proxy (+${added_rtt} ms)"
echo "  packet loss      ${loss_pct}% on arrival at every veth; ping gw1 -> aggregator lost ${ping_loss}%; ${drops} of ${packets} packets dropped in all"
echo "  partition        gw1's uplink cut for ${cut_s} s; updates from behind gw1 merged again ${t_reconnect} s after the restore"
if [[ "$mode" == gateway ]]; then
    echo "  gw1 version      ${gw1_before} 2 s into the cut -> ${gw1_end} at the restore (merging on its own) -> ${gw1_final} at the end;" \
         "its test accuracy $(fmt3 "$gw1_acc_before") -> $(fmt3 "$gw1_acc_end") while cut off"
    echo "  gw2 version      ${gw2_final} at the end"
fi
echo "  aggregator       version ${agg_before} at the cut -> ${agg_end} at the restore -> ${agg_final} at the end;" \
     "merged from behind gw1 ${from1_cut} (cut) -> ${from1_end} (restore) -> ${from1_final}, gw2 ${from2_final};" \
     "rejected ${rejected}"
echo "  time to target   test accuracy ${acc_at_target} >= ${target} after ${t_target} s (first merges after ${t_first} s); final ${acc_final}"
echo "netns: ok"
