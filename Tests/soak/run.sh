#!/usr/bin/env bash
# Soak: one aggregator (checkpoints, ledger, status server) and N client processes train for
# MINUTES minutes over tcp loopback; the aggregator's memory is sampled every INTERVAL seconds.
# Prints a table (elapsed, model version, VmRSS, RssAnon, RssFile, ledger and checkpoint bytes)
# and the growth of VmRSS and RssAnon from minute 2 to the end. RssAnon is the process's own
# heap; RssFile is mapped files (the binary, libraries, the ledger's WAL index): page cache.
#
#   make soak                                    # 60 minutes, 8 clients
#   MINUTES=5 bash Tests/soak/run.sh             # a short check
#   APIARY_BIN=.build-release/release/apiary MINUTES=60 bash Tests/soak/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${APIARY_BIN:-.build/debug/apiary}
MINUTES=${MINUTES:-60}
CLIENTS=${CLIENTS:-8}
INTERVAL=${INTERVAL:-30}
DELAY=${DELAY:-0.2}
[ -x "$BIN" ] || { echo "soak: $BIN not found (make build, or set APIARY_BIN)"; exit 1; }
BIN=$(realpath "$BIN")
work=$(mktemp -d /tmp/apiary-soak.XXXXXX)
read -r P_SNAP P_HTTP < <(python3 scripts/free_ports.py)
P_MODEL=$((P_SNAP + 1)); P_UPD=$((P_SNAP + 2))
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

cat > "$work/aggregator.yaml" <<YAML
security:
  insecure: true
endpoints:
  snapshot: tcp://127.0.0.1:$P_SNAP
  model: tcp://127.0.0.1:$P_MODEL
  update: tcp://127.0.0.1:$P_UPD
checkpoint:
  directory: $work/checkpoints
ledger:
  path: $work/ledger.sqlite
http:
  port: $P_HTTP
YAML
"$BIN" aggregator --config "$work/aggregator.yaml" --log-level warning > "$work/aggregator.log" 2>&1 &
agg=$!; pids+=("$agg")
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$P_HTTP/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
for i in $(seq 0 $((CLIENTS - 1))); do
  "$BIN" client --insecure --id "soak-$i" --partition "$i" --delay "$DELAY" --log-level warning \
    --aggregator "tcp://127.0.0.1:$P_SNAP" > "$work/client-$i.log" 2>&1 &
  pids+=("$!")
done

field() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$agg/status"; }
version() { curl -sf "http://127.0.0.1:$P_HTTP/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])' 2>/dev/null || echo "?"; }
bytes() { du -sb "$@" 2>/dev/null | awk '{ s += $1 } END { print s + 0 }'; }

echo "soak: $CLIENTS clients, $MINUTES min, sampling every $INTERVAL s, binary $BIN"
printf '%8s %9s %10s %10s %10s %12s %12s\n' elapsed version VmRSS_KiB RssAnon RssFile ledger_B ckpt_B
start=$(date +%s); end=$((start + MINUTES * 60)); base_rss=""; base_anon=""; last_rss=0; last_anon=0
while :; do
  now=$(date +%s); el=$((now - start))
  kill -0 "$agg" 2>/dev/null || { echo "soak: the aggregator exited"; tail -20 "$work/aggregator.log"; exit 1; }
  rss=$(field VmRSS); anon=$(field RssAnon); file=$(field RssFile)
  printf '%8s %9s %10s %10s %10s %12s %12s\n' "${el}s" "$(version)" "$rss" "$anon" "$file" \
    "$(bytes "$work"/ledger.sqlite*)" "$(bytes "$work/checkpoints")"
  if [ -z "$base_rss" ] && [ "$el" -ge 120 ]; then base_rss=$rss; base_anon=$anon; fi
  last_rss=$rss; last_anon=$anon
  [ "$now" -ge "$end" ] && break
  sleep "$INTERVAL"
done
merged=$(curl -sf "http://127.0.0.1:$P_HTTP/status" | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s.get("merged", s.get("updates", {}).get("merged", "?")))' 2>/dev/null || echo "?")
if [ -n "$base_rss" ]; then
  python3 - "$base_rss" "$last_rss" "$base_anon" "$last_anon" "$MINUTES" <<'PY'
import sys
b, l, ba, la, m = (float(x) for x in sys.argv[1:])
print(f"soak: VmRSS {b/1024:.1f} MiB at minute 2 -> {l/1024:.1f} MiB at minute {m:.0f}: {100*(l-b)/b:+.1f} %")
print(f"soak: RssAnon {ba/1024:.1f} MiB -> {la/1024:.1f} MiB: {100*(la-ba)/ba:+.1f} %")
PY
else
  echo "soak: shorter than 2 minutes, no growth figure"
fi
echo "soak: merged updates: $merged"
