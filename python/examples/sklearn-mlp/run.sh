#!/usr/bin/env bash
# Example (b), as a user runs it: the example writes its model as safetensors, an aggregator
# process serves it (--model), five Python clients train it with scikit-learn's own
# partial_fit, a Python evaluator reports test accuracy; passes when /status shows the
# evaluator's accuracy >= TARGET. CURVE is on, with the SDK's default key paths.
#   APIARY_BIN=.build/debug/apiary bash python/examples/sklearn-mlp/run.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "${here}/../../.." && pwd)"
APIARY_BIN="${APIARY_BIN:-${root}/.build/debug/apiary}"
case "${APIARY_BIN}" in /*) ;; *) APIARY_BIN="$(pwd)/${APIARY_BIN}" ;; esac
PY="${PY:-python3}"
TARGET="${TARGET:-0.95}"
work="$(mktemp -d /tmp/apiary-sdk-b.XXXXXX)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "${work}"; }
trap cleanup EXIT
read -r port http < <("${PY}" "${root}/scripts/free_ports.py")
cd "${work}"
ids=(sk-0 sk-1 sk-2 sk-3 sk-4 sk-eval)
"${APIARY_BIN}" keys generate --name aggregator --out keys >/dev/null
for id in "${ids[@]}"; do
  "${APIARY_BIN}" keys generate --name "${id}" --out keys >/dev/null
  "${APIARY_BIN}" keys authorize "keys/${id}.public" --id "${id}" --to keys/authorized_keys >/dev/null
done
"${PY}" "${here}/sklearn_mlp.py" init model.safetensors
"${APIARY_BIN}" model inspect model.safetensors | head -3
ENDPOINTS_SNAPSHOT="tcp://127.0.0.1:${port}" ENDPOINTS_MODEL="tcp://127.0.0.1:$((port + 1))" ENDPOINTS_UPDATE="tcp://127.0.0.1:$((port + 2))" \
CHECKPOINT_DIRECTORY="${work}/state" LEDGER_PATH="${work}/ledger.sqlite" HTTP_PORT="${http}" PROGRESS_INTERVAL_S=2 \
TRAINING_LEARNING_RATE=0.01 TRAINING_LOCAL_EPOCHS=1 \
  "${APIARY_BIN}" aggregator --config "${root}/Configs/aggregator.yaml" --model model.safetensors >"${work}/aggregator.log" 2>&1 &
pids+=("$!")
for k in 0 1 2 3 4; do
  "${PY}" "${here}/sklearn_mlp.py" train --id "sk-${k}" --part "${k}" --parts 5 --aggregator "tcp://127.0.0.1:${port}" >"${work}/sk-${k}.log" 2>&1 &
  pids+=("$!")
done
"${PY}" "${here}/sklearn_mlp.py" evaluate --id sk-eval --aggregator "tcp://127.0.0.1:${port}" >"${work}/sk-eval.log" 2>&1 &
pids+=("$!")
deadline=$((SECONDS + 150))
while (( SECONDS < deadline )); do
  if line="$("${PY}" - "${http}" "${TARGET}" <<'PYEOF'
import json, sys, urllib.request
try:
    s = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/status", timeout=2))
except OSError:
    sys.exit(1)
ev = [r for r in s["fleet"]["evaluators"] if r["evaluator"] == "sk-eval"]
if ev and ev[0]["metrics"]["accuracy"] >= float(sys.argv[2]):
    cm = s["fleet"]["client_metrics"]["values"]
    print(f"evaluator accuracy {ev[0]['metrics']['accuracy']:.4f} >= {sys.argv[2]} at version {ev[0]['version']}, "
          f"{s['updates']['merged']} merged; the clients' own accuracy {cm.get('accuracy', float('nan')):.4f}")
    sys.exit(0)
sys.exit(1)
PYEOF
)"; then
    echo "example (b): scikit-learn MLPClassifier, 5 clients: ${line}"
    if grep -q "cannot get in\|Traceback" "${work}"/sk-*.log; then echo "example (b): a client failed" >&2; cat "${work}"/sk-*.log >&2; exit 1; fi
    exit 0
  fi
  sleep 1
done
echo "example (b): the evaluator did not report accuracy >= ${TARGET} within 150 s" >&2
tail -n 20 "${work}/aggregator.log" "${work}/sk-eval.log" "${work}/sk-0.log" >&2
exit 1
