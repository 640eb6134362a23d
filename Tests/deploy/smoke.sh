#!/usr/bin/env bash
# Run the deployment's configs with a real binary, the way the image runs them, on loopback:
#
#   bash Tests/deploy/smoke.sh            # uses .build/debug/apiary (APIARY=... for another)
#
# Deploy/keys-init.sh makes the keys of an aggregator and three clients (as the compose key
# service does); the aggregator runs with Deploy/config/aggregator.yaml and the clients with
# Deploy/config/client.yaml, given their id, partition and key through the same environment
# variables as compose.yaml and the Kubernetes StatefulSets. Only the paths below /etc/apiary and
# /var/lib/apiary and the endpoints are redirected (to a temporary directory and to free
# loopback ports), through the environment as well. Then it checks that every client's updates
# are merged, that the healthcheck's TCP connect succeeds, that SIGTERM stops everything with
# exit status 0, and that the last checkpoint is valid. Last line: "N passed, M failed".
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
apiary="${APIARY:-$root/.build/debug/apiary}"
[[ -x "$apiary" ]] || { echo "smoke.sh: $apiary not found (swift build --product apiary)" >&2; exit 1; }
apiary="$(cd "$(dirname "$apiary")" && pwd)/$(basename "$apiary")"

work="$(mktemp -d "${TMPDIR:-/tmp}/apiary-deploy-smoke.XXXXXX")"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    rm -rf "$work"
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

# Three free loopback ports (bound and released at once; a race with another process is
# unlikely and fails loudly).
read -r p_snapshot p_model p_update < <(python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
for s in socks:
    s.close()
EOF
)
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

echo "$passed passed, $failed failed"
[[ $failed == 0 ]]
