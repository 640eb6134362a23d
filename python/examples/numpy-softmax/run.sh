#!/usr/bin/env bash
# Example (a), as a user runs it: an aggregator process serving the bundled digits model and
# five Python client processes (numpy softmax, non-IID shards), CURVE on with keys made by
# `apiary keys`; passes when the aggregator's evaluator reports TARGET test accuracy.
#   APIARY_BIN=.build/debug/apiary bash python/examples/numpy-softmax/run.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "${here}/../../.." && pwd)"
APIARY_BIN="${APIARY_BIN:-${root}/.build/debug/apiary}"
case "${APIARY_BIN}" in /*) ;; *) APIARY_BIN="$(pwd)/${APIARY_BIN}" ;; esac
PY="${PY:-python3}"
TARGET="${TARGET:-0.90}"
work="$(mktemp -d /tmp/apiary-sdk-a.XXXXXX)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "${work}"; }
trap cleanup EXIT
read -r port _ < <("${PY}" "${root}/scripts/free_ports.py")
cd "${work}"
"${APIARY_BIN}" keys generate --name aggregator --out keys >/dev/null
for k in 0 1 2 3 4; do
  "${APIARY_BIN}" keys generate --name "np-${k}" --out keys >/dev/null
  "${APIARY_BIN}" keys authorize "keys/np-${k}.public" --id "np-${k}" --to keys/authorized_keys >/dev/null
done
ENDPOINTS_SNAPSHOT="tcp://127.0.0.1:${port}" ENDPOINTS_MODEL="tcp://127.0.0.1:$((port + 1))" ENDPOINTS_UPDATE="tcp://127.0.0.1:$((port + 2))" \
CHECKPOINT_DIRECTORY="${work}/state" LEDGER_PATH="${work}/ledger.sqlite" EVALUATION_EVERY_VERSIONS=10 PROGRESS_INTERVAL_S=1 \
  "${APIARY_BIN}" aggregator --config "${root}/Configs/aggregator.yaml" >"${work}/aggregator.log" 2>&1 &
pids+=("$!")
for k in 0 1 2 3 4; do
  # keys/np-K.secret and keys/aggregator.public are the SDK's defaults.
  "${PY}" "${here}/softmax_client.py" --id "np-${k}" --part "${k}" --parts 5 --aggregator "tcp://127.0.0.1:${port}" \
    --data "${root}/Sources/ApiaryLearning/Resources/digits.csv" >"${work}/np-${k}.log" 2>&1 &
  pids+=("$!")
done
deadline=$((SECONDS + 120))
while (( SECONDS < deadline )); do
  acc="$(grep -o 'accuracy=[0-9.]*' "${work}/aggregator.log" | tail -1 | cut -d= -f2 || true)"
  if [[ -n "${acc}" ]] && "${PY}" -c "import sys; sys.exit(0 if float('${acc}') >= ${TARGET} else 1)"; then
    echo "example (a): 5 numpy clients reached test accuracy ${acc} >= ${TARGET} ($(grep -o 'merged=[0-9]*' "${work}/aggregator.log" | tail -1))"
    if grep -q "cannot get in\|Traceback" "${work}"/np-*.log; then echo "example (a): a client failed" >&2; cat "${work}"/np-*.log >&2; exit 1; fi
    exit 0
  fi
  sleep 1
done
echo "example (a): accuracy ${acc:-none} below ${TARGET} after 120 s" >&2
tail -n 20 "${work}/aggregator.log" "${work}"/np-0.log >&2
exit 1
