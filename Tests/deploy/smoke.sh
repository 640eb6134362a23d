#!/usr/bin/env bash
# Run the deployment's configs with a real binary, the way the image runs them, on loopback:
#
#   bash Tests/deploy/smoke.sh            # uses .build/debug/apiary (APIARY=... for another)
#
# Part 1, one aggregator: Deploy/keys-init.sh makes the keys of an aggregator and three clients
# (as the compose key service does); the aggregator runs with Deploy/config/aggregator.yaml and
# the clients with Deploy/config/client.yaml, given their id, partition and key through the same
# environment variables as compose.yaml and the Kubernetes StatefulSets. Checks that every
# client's updates are merged, that the TCP connect succeeds, that SIGTERM stops everything with
# exit status 0, and that the last checkpoint is valid.
#
# Part 2, scaled out as compose.yaml runs it: keys-init.sh with a --gateway group; three shards
# with Deploy/config/shard.yaml (SHARDS_INDEX and the shard map from the environment), two
# clients on shard 0, a gateway with Deploy/config/gateway.yaml in front of the shards and two
# devices behind it. Checks /healthz of every shard and the gateway (the compose healthcheck's
# command); that a second shard on a shard's state directory refuses to start; that every shard
# merges the clients' and the gateway's slices and the gateway its devices' updates; a rolling
# restart of one shard (SIGTERM, exit 0, a start with another range refused, the restart
# resumes and merges again); the gateway merging while every shard is down and pushing again
# once they are back; then SIGTERM with exit status 0 everywhere and valid final checkpoints.
#
# Only the paths below /etc/apiary and /var/lib/apiary and the endpoints are redirected (to a
# temporary directory and to free 127.0.0.1 ports), through the environment as well. Every
# process started is stopped on exit (SMOKE_KEEP=1 keeps the temporary directory with the logs).
# Last line: "N passed, M failed".
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
apiary="${APIARY:-$root/.build/debug/apiary}"
[[ -x "$apiary" ]] || { echo "smoke.sh: $apiary not found (swift build --product apiary)" >&2; exit 1; }
apiary="$(cd "$(dirname "$apiary")" && pwd)/$(basename "$apiary")"

work="$(mktemp -d "${TMPDIR:-/tmp}/apiary-deploy-smoke.XXXXXX")"
pids=()              # part 1's processes
declare -A proc=()   # part 2's: name -> pid
cleanup() {
    for p in "${pids[@]}" "${proc[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    if [[ -n "${SMOKE_KEEP:-}" ]]; then echo "smoke.sh: kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $1"; }
fail() {
    failed=$((failed + 1))
    echo "FAIL $1"
    shift
    for f in "$@"; do [[ -f "$f" ]] && sed 's/^/     /' "$f" | tail -n 20; done
}

# N free loopback ports (bound together and released at once; a race with another process is
# unlikely and fails loudly).
free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
for s in socks:
    s.close()
EOF
}

# ---------------------------------------------------------------------------------------------
# Part 1: one aggregator.
read -r p_snapshot p_model p_update < <(free_ports 3)
export ENDPOINTS_SNAPSHOT="tcp://127.0.0.1:$p_snapshot"
export ENDPOINTS_MODEL="tcp://127.0.0.1:$p_model"
export ENDPOINTS_UPDATE="tcp://127.0.0.1:$p_update"

clients=(client-0 client-7 client-13)
partitions=(0 7 13)

# 1. Keys, as the compose service apiary-keys makes them (twice: the second run keeps them).
if APIARY="$apiary" sh "$root/Deploy/keys-init.sh" "$work/keys/aggregator" "$work/keys/clients" "${clients[@]}" \
        >"$work/keys.log" 2>&1 \
   && APIARY="$apiary" sh "$root/Deploy/keys-init.sh" "$work/keys/aggregator" "$work/keys/clients" "${clients[@]}" \
        >>"$work/keys.log" 2>&1 \
   && [[ "$(grep -c . "$work/keys/aggregator/authorized_keys")" == 3 ]]; then
    ok "keys-init.sh makes and authorizes 3 client keys, idempotently"
else
    fail "keys-init.sh" "$work/keys.log"
fi

# 2. The aggregator with the deployment config.
mkdir -p "$work/state"
SECURITY_SECRET_KEY_FILE="$work/keys/aggregator/aggregator.secret" \
SECURITY_AUTHORIZED_KEYS="$work/keys/aggregator/authorized_keys" \
CHECKPOINT_DIRECTORY="$work/state/checkpoints" \
LEDGER_PATH="$work/state/ledger.sqlite" \
PROGRESS_INTERVAL_S=2 \
    "$apiary" aggregator --config "$root/Deploy/config/aggregator.yaml" >"$work/aggregator.log" 2>&1 &
agg=$!
pids+=("$agg")

started=0
for _ in $(seq 1 100); do
    if bash -c "exec 3<>/dev/tcp/127.0.0.1/$p_snapshot" 2>/dev/null; then started=1; break; fi
    kill -0 "$agg" 2>/dev/null || break
    sleep 0.2
done
if [[ $started == 1 ]]; then
    ok "aggregator starts with Deploy/config/aggregator.yaml; the healthcheck's TCP connect succeeds"
else
    fail "aggregator did not start" "$work/aggregator.log"
fi

# 3. Three clients with the deployment config, id, partition and key from the environment.
for i in "${!clients[@]}"; do
    id="${clients[$i]}"
    CLIENT_ID="$id" DATA_PARTITION="${partitions[$i]}" DATA_DELAY_S=0 \
    SECURITY_SECRET_KEY_FILE="$work/keys/clients/$id.secret" \
    SECURITY_SERVER_PUBLIC_KEY_FILE="$work/keys/clients/aggregator.public" \
        "$apiary" client --config "$root/Deploy/config/client.yaml" >"$work/$id.log" 2>&1 &
    pids+=("$!")
done

# 4. Every client's updates merged (the ledger records merges once they are durable).
merged_all=0
for _ in $(seq 1 60); do
    if "$apiary" ledger --path "$work/state/ledger.sqlite" --json >"$work/ledger.json" 2>/dev/null \
       && python3 - "$work/ledger.json" "${clients[@]}" <<'EOF'
import json, sys
totals = {t["client"]: t for t in json.load(open(sys.argv[1]))["totals"]}
ok = all(int(totals.get(c, {}).get("merged", 0)) >= 3 for c in sys.argv[2:])
sys.exit(0 if ok else 1)
EOF
    then merged_all=1; break; fi
    sleep 0.5
done
if [[ $merged_all == 1 ]]; then
    ok "updates of ${clients[*]} merged (ledger)"
else
    fail "not every client's updates were merged within 30 s" "$work/ledger.json" "$work/aggregator.log" "$work/client-13.log"
fi
# The aggregator refuses one unknown key at start, its own self-test; any other refusal or an
# identity mismatch means a key and an id disagree.
if [[ "$(grep -c "connection refused" "$work/aggregator.log")" -le 1 ]] \
   && ! grep -q "identity_mismatch" "$work/aggregator.log" "$work/ledger.json"; then
    ok "no client refused (keys and ids agree)"
else
    fail "the aggregator refused a client (key or id)" "$work/aggregator.log"
fi

# 5. SIGTERM: clients, then the aggregator; every process exits 0 (wait in this shell: the
# processes are its children).
bad_exit=""
stop() { # pid name
    local rc=0
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" || rc=$?
    [[ "$rc" == 0 ]] || bad_exit+=" $2=$rc"
}
for i in "${!clients[@]}"; do
    stop "${pids[$((i + 1))]}" "${clients[$i]}"
done
stop "$agg" aggregator
pids=()
if [[ -z "$bad_exit" ]]; then
    ok "SIGTERM stops the aggregator and the clients with exit status 0"
else
    fail "exit status after SIGTERM:$bad_exit" "$work/aggregator.log"
fi

# 6. The final checkpoint is valid.
last="$(find "$work/state/checkpoints" -name 'checkpoint-*.safetensors' 2>/dev/null | sort | tail -n 1)"
if [[ -n "$last" ]] && "$apiary" checkpoint inspect "$last" >"$work/inspect.log" 2>&1; then
    ok "final checkpoint $(basename "$last") is valid"
else
    fail "no valid checkpoint in the state directory" "$work/inspect.log"
fi

# ---------------------------------------------------------------------------------------------
# Part 2: three shards, clients on them, a gateway in front of them with devices behind it.
unset ENDPOINTS_SNAPSHOT ENDPOINTS_MODEL ENDPOINTS_UPDATE

# The compose healthcheck's command (GET /healthz on 9464), to run with another port.
hc="$(sed -n 's/^ *- "\(exec 3<>\/dev\/tcp\/127\.0\.0\.1\/9464 .*\)"$/\1/p' "$root/Deploy/compose.yaml" | sed 's/\\\\/\\/g')"
healthy() { # port
    [[ -n "$hc" ]] && bash -c "${hc//9464/$1}" 2>/dev/null
}
wait_healthy() { # port name: until /healthz answers, while the process lives (30 s at most)
    local _
    for _ in $(seq 1 150); do
        healthy "$1" && return 0
        kill -0 "${proc[$2]}" 2>/dev/null || return 1
        sleep 0.2
    done
    return 1
}
start() { # name command...: in the background, output to $work/<name>.log
    local name=$1
    shift
    "$@" >"$work/$name.log" 2>&1 &
    proc[$name]=$!
}
stop2() { # name: SIGTERM; its exit status must be 0
    local rc=0
    kill -TERM "${proc[$1]}" 2>/dev/null || true
    wait "${proc[$1]}" || rc=$?
    unset "proc[$1]"
    [[ "$rc" == 0 ]] || { echo "$1 exited with status $rc"; return 1; }
}
merged() { # LEDGER MIN ID...: every id has at least MIN merged rows
    local ledger=$1 min=$2
    shift 2
    "$apiary" ledger --path "$ledger" --json 2>/dev/null | python3 -c '
import json, sys
totals = {t["client"]: int(t.get("merged", 0)) for t in json.load(sys.stdin)["totals"]}
sys.exit(0 if all(totals.get(c, 0) >= int(sys.argv[1]) for c in sys.argv[2:]) else 1)
' "$min" "$@"
}
count() { # LEDGER ID: merged rows of ID
    "$apiary" ledger --path "$1" --json 2>/dev/null | python3 -c '
import json, sys
print(sum(int(t.get("merged", 0)) for t in json.load(sys.stdin)["totals"] if t["client"] == sys.argv[1]))
' "$2" || echo 0
}
wait_for() { # SECONDS command...: until the command succeeds
    local _
    for _ in $(seq 1 $(($1 * 2))); do
        "${@:2}" && return 0
        sleep 0.5
    done
    return 1
}

part2() {
    local k="$work/keys2" i id
    # Free ports: per shard model, snapshot, update, http; the same four for the gateway.
    local -a pt s_model s_snapshot s_update s_http
    read -r -a pt < <(free_ports 16)
    for i in 0 1 2; do
        s_model[i]=${pt[4 * i]}; s_snapshot[i]=${pt[4 * i + 1]}; s_update[i]=${pt[4 * i + 2]}; s_http[i]=${pt[4 * i + 3]}
    done
    local g_model=${pt[12]} g_snapshot=${pt[13]} g_update=${pt[14]} g_http=${pt[15]}
    # The shard map, as clients reach the shards (comma-separated lists: SHARDS_MODEL, ...).
    local map_model="" map_snapshot="" map_update=""
    for i in 0 1 2; do
        map_model+="${map_model:+,}tcp://127.0.0.1:${s_model[i]}"
        map_snapshot+="${map_snapshot:+,}tcp://127.0.0.1:${s_snapshot[i]}"
        map_update+="${map_update:+,}tcp://127.0.0.1:${s_update[i]}"
    done
    local clients2=(client-0 client-7) devices=(device-4 device-11)
    # Who pushes to the shards: the clients and the gateway.
    local uppers=("${clients2[@]}" gateway-1)

    start_shard() { # index [VAR=value...]: its own ports and state, SHARDS_INDEX, the map
        local i=$1
        shift
        start "shard-$i" env SHARDS_INDEX="$i" SHARDS_MODEL="$map_model" SHARDS_SNAPSHOT="$map_snapshot" \
            SHARDS_UPDATE="$map_update" ENDPOINTS_MODEL="tcp://127.0.0.1:${s_model[i]}" \
            ENDPOINTS_SNAPSHOT="tcp://127.0.0.1:${s_snapshot[i]}" ENDPOINTS_UPDATE="tcp://127.0.0.1:${s_update[i]}" \
            HTTP_HOST=127.0.0.1 HTTP_PORT="${s_http[i]}" \
            SECURITY_SECRET_KEY_FILE="$k/aggregator/aggregator.secret" SECURITY_AUTHORIZED_KEYS="$k/aggregator/authorized_keys" \
            CHECKPOINT_DIRECTORY="$work/shard-$i/checkpoints" LEDGER_PATH="$work/shard-$i/ledger.sqlite" \
            PROGRESS_INTERVAL_S=2 "$@" "$apiary" aggregator --config "$root/Deploy/config/shard.yaml"
    }
    all_shards_merged() { # MIN ID...
        local i
        for i in 0 1 2; do merged "$work/shard-$i/ledger.sqlite" "$@" || return 1; done
    }
    ledgers() { # the ledgers as text, for a failure report
        local i
        for i in 0 1 2; do "$apiary" ledger --path "$work/shard-$i/ledger.sqlite" >"$work/ledger-$i.txt" 2>&1 || true; done
        "$apiary" ledger --path "$work/gateway/ledger.sqlite" >"$work/ledger-gw.txt" 2>&1 || true
    }

    # 7. Keys of the scaled-out compose file: clients, and a gateway with its devices.
    if APIARY="$apiary" sh "$root/Deploy/keys-init.sh" "$k/aggregator" "$k/clients" "${clients2[@]}" \
            --gateway gateway-1 "$k/gateway" "$k/devices" "${devices[@]}" >"$work/keys2.log" 2>&1 \
       && APIARY="$apiary" sh "$root/Deploy/keys-init.sh" "$k/aggregator" "$k/clients" "${clients2[@]}" \
            --gateway gateway-1 "$k/gateway" "$k/devices" "${devices[@]}" >>"$work/keys2.log" 2>&1 \
       && [[ "$(cut -d' ' -f2 "$k/aggregator/authorized_keys" | sort | tr '\n' ' ')" == "client-0 client-7 gateway-1 " ]] \
       && [[ "$(cut -d' ' -f2 "$k/gateway/authorized_keys" | sort | tr '\n' ' ')" == "device-11 device-4 " ]] \
       && [[ -f "$k/gateway/gateway.secret" && -f "$k/gateway/gateway-1.secret" && -f "$k/gateway/aggregator.public" \
             && -f "$k/devices/gateway.public" && -f "$k/devices/device-4.secret" ]]; then
        ok "keys-init.sh --gateway: gateway-1 authorized at the shards, device-4 and device-11 at the gateway, idempotently"
    else
        fail "keys-init.sh --gateway" "$work/keys2.log"
        return
    fi

    # 8. Three shards, one config file, SHARDS_INDEX and the map from the environment.
    for i in 0 1 2; do start_shard "$i"; done
    local up=1
    for i in 0 1 2; do wait_healthy "${s_http[i]}" "shard-$i" || up=0; done
    if [[ -z "$hc" ]]; then
        fail "no /healthz healthcheck command found in Deploy/compose.yaml"
        return
    elif [[ $up == 1 ]]; then
        ok "3 shards start with Deploy/config/shard.yaml and SHARDS_INDEX 0-2; the compose healthcheck (GET /healthz) passes"
    else
        fail "a shard did not start or answer /healthz" "$work/shard-0.log" "$work/shard-1.log" "$work/shard-2.log"
        return
    fi

    # A second process given shard 0's state directory (two pods on one volume, a copied
    # compose service) refuses to start instead of writing checkpoints beside it.
    local rc=0
    timeout 20 env SHARDS_INDEX=0 SHARDS_MODEL="$map_model" SHARDS_SNAPSHOT="$map_snapshot" SHARDS_UPDATE="$map_update" \
        ENDPOINTS_MODEL="tcp://127.0.0.1:$g_model" ENDPOINTS_SNAPSHOT="tcp://127.0.0.1:$g_snapshot" \
        ENDPOINTS_UPDATE="tcp://127.0.0.1:$g_update" HTTP_PORT=0 \
        SECURITY_SECRET_KEY_FILE="$k/aggregator/aggregator.secret" SECURITY_AUTHORIZED_KEYS="$k/aggregator/authorized_keys" \
        CHECKPOINT_DIRECTORY="$work/shard-0/checkpoints" LEDGER_PATH="$work/shard-0-twin.sqlite" \
        "$apiary" aggregator --config "$root/Deploy/config/shard.yaml" >"$work/shard-0-twin.log" 2>&1 || rc=$?
    if [[ $rc != 0 && $rc != 124 ]]; then
        ok "a second shard on shard 0's state directory refuses to start (exit status $rc)"
    else
        fail "a second shard on shard 0's state directory did not refuse to start (exit status $rc)" "$work/shard-0-twin.log"
    fi

    # 9. Clients on shard 0 (client.yaml); the gateway (gateway.yaml) on shard 0 and devices on it.
    for id in "${clients2[@]}"; do
        start "$id" env CLIENT_ID="$id" DATA_PARTITION="${id#client-}" DATA_DELAY_S=0 \
            SECURITY_SECRET_KEY_FILE="$k/clients/$id.secret" SECURITY_SERVER_PUBLIC_KEY_FILE="$k/clients/aggregator.public" \
            ENDPOINTS_MODEL="tcp://127.0.0.1:${s_model[0]}" ENDPOINTS_SNAPSHOT="tcp://127.0.0.1:${s_snapshot[0]}" \
            ENDPOINTS_UPDATE="tcp://127.0.0.1:${s_update[0]}" \
            "$apiary" client --config "$root/Deploy/config/client.yaml"
    done
    start gateway env ENDPOINTS_MODEL="tcp://127.0.0.1:$g_model" ENDPOINTS_SNAPSHOT="tcp://127.0.0.1:$g_snapshot" \
        ENDPOINTS_UPDATE="tcp://127.0.0.1:$g_update" HTTP_HOST=127.0.0.1 HTTP_PORT="$g_http" \
        SECURITY_SECRET_KEY_FILE="$k/gateway/gateway.secret" SECURITY_AUTHORIZED_KEYS="$k/gateway/authorized_keys" \
        CHECKPOINT_DIRECTORY="$work/gateway/checkpoints" LEDGER_PATH="$work/gateway/ledger.sqlite" PROGRESS_INTERVAL_S=2 \
        UPSTREAM_CLIENT_ID=gateway-1 UPSTREAM_SECURITY_SECRET_KEY_FILE="$k/gateway/gateway-1.secret" \
        UPSTREAM_SECURITY_SERVER_PUBLIC_KEY_FILE="$k/gateway/aggregator.public" \
        UPSTREAM_ENDPOINTS_MODEL="tcp://127.0.0.1:${s_model[0]}" UPSTREAM_ENDPOINTS_SNAPSHOT="tcp://127.0.0.1:${s_snapshot[0]}" \
        UPSTREAM_ENDPOINTS_UPDATE="tcp://127.0.0.1:${s_update[0]}" \
        "$apiary" gateway --config "$root/Deploy/config/gateway.yaml"
    if wait_healthy "$g_http" gateway; then
        ok "the gateway starts with Deploy/config/gateway.yaml in front of the shards; the compose healthcheck passes"
    else
        fail "the gateway did not start or answer /healthz" "$work/gateway.log"
        return
    fi
    for id in "${devices[@]}"; do
        start "$id" env CLIENT_ID="$id" DATA_PARTITION="${id#device-}" DATA_DELAY_S=0 \
            SECURITY_SECRET_KEY_FILE="$k/devices/$id.secret" SECURITY_SERVER_PUBLIC_KEY_FILE="$k/devices/gateway.public" \
            ENDPOINTS_MODEL="tcp://127.0.0.1:$g_model" ENDPOINTS_SNAPSHOT="tcp://127.0.0.1:$g_snapshot" \
            ENDPOINTS_UPDATE="tcp://127.0.0.1:$g_update" \
            "$apiary" client --config "$root/Deploy/config/client.yaml"
    done

    # 10. Every shard merges the slices of the clients (and the gateway); the gateway its devices'.
    if wait_for 60 all_shards_merged 3 "${uppers[@]}" \
       && wait_for 30 merged "$work/gateway/ledger.sqlite" 3 "${devices[@]}"; then
        ok "every shard merges the slices of ${uppers[*]}; the gateway merges ${devices[*]}"
    else
        ledgers
        fail "not every slice or device update was merged" "$work/ledger-0.txt" "$work/ledger-1.txt" "$work/ledger-2.txt" \
            "$work/ledger-gw.txt" "$work/gateway.log" "$work/client-0.log"
    fi
    # Each server refuses one unknown key at start, its own self-test (as in part 1).
    local refused=0 log
    for log in "$work"/shard-?.log "$work/gateway.log"; do
        [[ -f "$log" ]] || continue
        [[ "$(grep -c "connection refused" "$log")" -le 1 ]] || refused=1
        ! grep -q "identity_mismatch" "$log" || refused=1
    done
    if [[ $refused == 0 ]]; then
        ok "no client, device or gateway refused (keys and ids agree)"
    else
        fail "a shard or the gateway refused a peer (key or id)" "$work/shard-0.log" "$work/gateway.log"
    fi

    # 11. Rolling restart of shard 1: SIGTERM; a start with another range is refused; the
    # restart resumes from its checkpoint and merges the slices of every pusher again.
    local before=()
    rc=0
    if stop2 shard-1 >>"$work/stop2.log"; then
        for id in "${uppers[@]}"; do before+=("$(count "$work/shard-1/ledger.sqlite" "$id")"); done
        timeout 20 env SHARDS_INDEX=1 SHARDS_MODEL="$map_model" SHARDS_SNAPSHOT="$map_snapshot" SHARDS_UPDATE="$map_update" \
            SHARDS_BOUNDARIES=0,100,434,650 ENDPOINTS_MODEL="tcp://127.0.0.1:${s_model[1]}" \
            ENDPOINTS_SNAPSHOT="tcp://127.0.0.1:${s_snapshot[1]}" ENDPOINTS_UPDATE="tcp://127.0.0.1:${s_update[1]}" \
            HTTP_PORT=0 SECURITY_SECRET_KEY_FILE="$k/aggregator/aggregator.secret" \
            SECURITY_AUTHORIZED_KEYS="$k/aggregator/authorized_keys" CHECKPOINT_DIRECTORY="$work/shard-1/checkpoints" \
            LEDGER_PATH="$work/shard-1/ledger.sqlite" \
            "$apiary" aggregator --config "$root/Deploy/config/shard.yaml" >"$work/shard-1-range.log" 2>&1 || rc=$?
        if [[ $rc != 0 && $rc != 124 ]] && grep -qi "checkpoint" "$work/shard-1-range.log"; then
            ok "shard 1 started with other boundaries refuses its checkpoint (exit status $rc)"
        else
            fail "shard 1 started with other boundaries did not refuse (exit status $rc)" "$work/shard-1-range.log"
        fi
        start_shard 1
        local resumed=1
        wait_healthy "${s_http[1]}" shard-1 || resumed=0
        for i in "${!uppers[@]}"; do
            [[ $resumed == 1 ]] && wait_for 60 merged "$work/shard-1/ledger.sqlite" $((before[i] + 3)) "${uppers[$i]}" || resumed=0
        done
        if [[ $resumed == 1 ]] && grep -q "resuming from checkpoint" "$work/shard-1.log"; then
            ok "rolling restart of shard 1: exit 0 on SIGTERM, resumes from its checkpoint, ${uppers[*]} carry on"
        else
            ledgers
            fail "shard 1 did not resume, or not every pusher's slices were merged after its restart" "$work/shard-1.log" \
                "$work/ledger-1.txt" "$work/client-0.log"
        fi
    else
        fail "shard 1 did not stop cleanly on SIGTERM" "$work/stop2.log" "$work/shard-1.log"
    fi

    # 12. The uplink drops: every shard down; the gateway keeps merging its devices' updates,
    # and its pushes are merged again once the shards are back.
    local down=1 g_before s_before=() back=1
    for i in 0 1 2; do stop2 "shard-$i" >>"$work/stop2.log" || down=0; done
    g_before=$(count "$work/gateway/ledger.sqlite" device-4)
    if [[ $down == 1 ]] && wait_for 20 merged "$work/gateway/ledger.sqlite" $((g_before + 5)) device-4; then
        ok "every shard down (each exited 0 on SIGTERM): the gateway keeps merging device-4's updates"
    else
        fail "with the shards down the gateway merged nothing, or a shard did not exit 0" "$work/stop2.log" "$work/gateway.log"
    fi
    for i in 0 1 2; do
        s_before[i]=$(count "$work/shard-$i/ledger.sqlite" gateway-1)
        start_shard "$i"
    done
    for i in 0 1 2; do
        wait_healthy "${s_http[i]}" "shard-$i" && wait_for 60 merged "$work/shard-$i/ledger.sqlite" $((s_before[i] + 2)) gateway-1 || back=0
    done
    if [[ $back == 1 ]]; then
        ok "the shards restart from their checkpoints and merge the gateway's pushes again"
    else
        ledgers
        fail "after the shards' restart the gateway's pushes were not merged" "$work/gateway.log" "$work/ledger-0.txt"
    fi

    # 13. SIGTERM: devices, clients, the gateway, the shards; every exit status 0.
    local bad="" names=("${devices[@]}" "${clients2[@]}" gateway shard-0 shard-1 shard-2)
    for id in "${names[@]}"; do
        stop2 "$id" >>"$work/stop2.log" || bad+=" $id"
    done
    if [[ -z "$bad" ]]; then
        ok "SIGTERM stops ${names[*]} with exit status 0"
    else
        fail "exit status after SIGTERM:$bad" "$work/stop2.log"
    fi

    # 14. Each shard's (and the gateway's) final checkpoint is valid.
    local last badcp="" d dirs=(shard-0 shard-1 shard-2 gateway)
    for d in "${dirs[@]}"; do
        last="$(find "$work/$d/checkpoints" -name 'checkpoint-*.safetensors' 2>/dev/null | sort | tail -n 1)"
        if [[ -z "$last" ]] || ! "$apiary" checkpoint inspect "$last" >>"$work/inspect2.log" 2>&1; then badcp+=" $d"; fi
    done
    if [[ -z "$badcp" ]]; then
        ok "the final checkpoints of ${dirs[*]} are valid"
    else
        fail "no valid final checkpoint for:$badcp" "$work/inspect2.log"
    fi
}

part2

echo "$passed passed, $failed failed"
[[ $failed == 0 ]]
