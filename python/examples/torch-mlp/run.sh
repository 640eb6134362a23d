#!/usr/bin/env bash
# Example (c), as a user with PyTorch runs it: torch_mlp.py writes the module's state_dict as
# safetensors, an aggregator serves it (BatchNorm's int64 num_batches_tracked left out with
# MODEL_EXCLUDE), five Python clients train it through apiary.torch.TorchTrainer, a Python
# evaluator reports test accuracy; once /status shows TARGET, the model is exported with the
# left-out tensors copied back, and loaded with load_state_dict(strict=True). CURVE is on.
#   PY=/path/to/python-with-torch APIARY_BIN=.build/debug/apiary bash python/examples/torch-mlp/run.sh
# (make python-torch TORCH_PYTHON=... runs it; not part of make test: torch is not a required install.)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "${here}/../../.." && pwd)"
APIARY_BIN="${APIARY_BIN:-${root}/.build/debug/apiary}"
case "${APIARY_BIN}" in /*) ;; *) APIARY_BIN="$(pwd)/${APIARY_BIN}" ;; esac
PY="${PY:-python3}"
TARGET="${TARGET:-0.93}"
"${PY}" -c "import torch, safetensors.torch, sklearn, apiary" || { echo "example (c): ${PY} needs torch, safetensors, scikit-learn and the SDK" >&2; exit 1; }
work="$(mktemp -d /tmp/apiary-sdk-c.XXXXXX)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "${work}"; }
trap cleanup EXIT
read -r port http < <("${PY}" "${root}/scripts/free_ports.py")
cd "${work}"
ids=(t-0 t-1 t-2 t-3 t-4 t-eval)
"${APIARY_BIN}" keys generate --name aggregator --out keys >/dev/null
for id in "${ids[@]}"; do
  "${APIARY_BIN}" keys generate --name "${id}" --out keys >/dev/null
  "${APIARY_BIN}" keys authorize "keys/${id}.public" --id "${id}" --to keys/authorized_keys >/dev/null
done
"${PY}" "${here}/torch_mlp.py" init model.safetensors
export MODEL_EXCLUDE='*.num_batches_tracked'
ENDPOINTS_SNAPSHOT="tcp://127.0.0.1:${port}" ENDPOINTS_MODEL="tcp://127.0.0.1:$((port + 1))" ENDPOINTS_UPDATE="tcp://127.0.0.1:$((port + 2))" \
CHECKPOINT_DIRECTORY="${work}/state" LEDGER_PATH="${work}/ledger.sqlite" HTTP_PORT="${http}" PROGRESS_INTERVAL_S=2 \
TRAINING_LEARNING_RATE=0.05 TRAINING_LOCAL_EPOCHS=1 \
  "${APIARY_BIN}" aggregator --config "${root}/Configs/aggregator.yaml" --model model.safetensors >"${work}/aggregator.log" 2>&1 &
pids+=("$!")
for k in 0 1 2 3 4; do
  "${PY}" "${here}/torch_mlp.py" train --id "t-${k}" --part "${k}" --parts 5 --aggregator "tcp://127.0.0.1:${port}" >"${work}/t-${k}.log" 2>&1 &
  pids+=("$!")
done
"${PY}" "${here}/torch_mlp.py" evaluate --id t-eval --aggregator "tcp://127.0.0.1:${port}" >"${work}/t-eval.log" 2>&1 &
pids+=("$!")
deadline=$((SECONDS + 240))
while (( SECONDS < deadline )); do
  if line="$("${PY}" - "${http}" "${TARGET}" <<'PYEOF'
import json, sys, urllib.request
try:
    s = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/status", timeout=2))
except OSError:
    sys.exit(1)
ev = [r for r in s["fleet"]["evaluators"] if r["evaluator"] == "t-eval"]
if ev and ev[0]["metrics"]["accuracy"] >= float(sys.argv[2]):
    print(f"evaluator accuracy {ev[0]['metrics']['accuracy']:.4f} >= {sys.argv[2]} at version {ev[0]['version']}, "
          f"{s['updates']['merged']} merged")
    sys.exit(0)
sys.exit(1)
PYEOF
)"; then
    echo "example (c): PyTorch MLP with BatchNorm, 5 clients: ${line}"
    if grep -q "cannot get in\|Traceback" "${work}"/t-*.log; then echo "example (c): a client failed" >&2; cat "${work}"/t-*.log >&2; exit 1; fi
    kill -TERM "${pids[0]}"; wait "${pids[0]}" || true   # a clean stop writes the last checkpoint
    "${APIARY_BIN}" model export --state "${work}/state" --model model.safetensors --exclude '*.num_batches_tracked' --out trained.safetensors
    "${PY}" "${here}/torch_mlp.py" check trained.safetensors
    exit 0
  fi
  sleep 1
done
echo "example (c): the evaluator did not report accuracy >= ${TARGET} within 240 s" >&2
grep -o 'accuracy=[0-9.]*\|merged=[0-9]*' "${work}/aggregator.log" | tail -4 >&2 || true
tail -n 20 "${work}/aggregator.log" "${work}/t-eval.log" "${work}/t-0.log" >&2
exit 1
