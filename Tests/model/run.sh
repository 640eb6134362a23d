#!/usr/bin/env bash
# Your own model, end to end, without Swift: a numpy MLP (64 -> 1536 -> 10, 115,210 parameters
# in four tensors) written by `safetensors.numpy.save_file`, served by `apiary aggregator
# --model`, trained by three Python client processes and evaluated by a Python evaluator process
# (mlp_fleet.py, on the Python SDK in python/), watched through /status, exported with `apiary model
# export` and read back with `safetensors.numpy.load_file` (check_export.py).
#
#   APIARY_BIN=.build/debug/apiary bash Tests/model/run.sh
#
# Needs python3 with numpy, pyzmq, safetensors and the SDK (make deps-python puts them in .venv).
# Everything listens on 127.0.0.1; every process started is stopped on exit.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/../.." && pwd)"
APIARY_BIN="${APIARY_BIN:-${repo}/.build/debug/apiary}"
case "${APIARY_BIN}" in /*) ;; *) APIARY_BIN="${repo}/${APIARY_BIN}" ;; esac
PY="${PYTHON:-python3}"
TARGET="${MODEL_TARGET:-0.85}"

work="$(mktemp -d "${TMPDIR:-/tmp}/apiary-model.XXXXXX")"
pids=()
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill -TERM "${pid}" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "${pid}" 2>/dev/null || true; done
  if [[ ${status} -ne 0 ]]; then
    for f in "${work}"/*.log; do echo "--- $(basename "${f}") (tail) ---" >&2; tail -n 30 "${f}" >&2 || true; done
  fi
  rm -rf "${work}"
  exit "${status}"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The snapshot port P (ports[1]) with the model and update ports on P+1 and P+2, the layout
# the SDK's aggregator= expects; ports[3] is the status server.
read -r base http < <("${PY}" "${repo}/scripts/free_ports.py")
ports=($((base + 1)) "${base}" $((base + 2)) "${http}")
model="tcp://127.0.0.1:${ports[0]}" snapshot="tcp://127.0.0.1:${ports[1]}" update="tcp://127.0.0.1:${ports[2]}"

"${PY}" "${here}/make_mlp.py" "${work}/mlp.safetensors"
"${APIARY_BIN}" model inspect "${work}/mlp.safetensors" | tee "${work}/inspect-initial.txt"
grep -q "115210" "${work}/inspect-initial.txt"

# Files an aggregator must refuse, each with a one-line error and exit status 1, before it
# binds anything.
"${PY}" - "${work}" <<'PYEOF'
import json, struct, sys
import numpy as np
from safetensors.numpy import save_file
w = sys.argv[1]
good = open(f"{w}/mlp.safetensors", "rb").read()
open(f"{w}/bad-truncated.safetensors", "wb").write(good[: len(good) // 2])
n = struct.unpack("<Q", good[:8])[0]
h = json.loads(good[8 : 8 + n])
h["fc1.bias"]["data_offsets"][1] += 4
hj = json.dumps(h).encode()
open(f"{w}/bad-offsets.safetensors", "wb").write(struct.pack("<Q", len(hj)) + hj + good[8 + n :])
hj = b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}'
open(f"{w}/bad-duplicate.safetensors", "wb").write(struct.pack("<Q", len(hj)) + hj + bytes(8))
hj = b'{"__metadata__":{"format":"pt"}}'
open(f"{w}/bad-empty.safetensors", "wb").write(struct.pack("<Q", len(hj)) + hj)
open(f"{w}/bad-header.safetensors", "wb").write(struct.pack("<Q", 200_000_000) + b"{}")
save_file({"bn.weight": np.ones(4, np.float32), "bn.num_batches_tracked": np.array(3, np.int64)}, f"{w}/bad-integer.safetensors")
PYEOF
for f in truncated offsets duplicate empty header integer; do
  set +e
  "${APIARY_BIN}" aggregator --insecure --model "${work}/bad-${f}.safetensors" >"${work}/bad-${f}.out" 2>"${work}/bad-${f}.err"
  status=$?
  set -e
  lines="$(grep -c . "${work}/bad-${f}.err" || true)"
  if [[ ${status} -ne 1 || ${lines} -ne 1 ]] || ! grep -q "model.initial ${work}/bad-${f}.safetensors: " "${work}/bad-${f}.err"; then
    echo "run.sh: bad-${f}: exit ${status}, ${lines} lines on stderr:" >&2; cat "${work}/bad-${f}.err" >&2; exit 1
  fi
  echo "refused bad-${f}: $(cat "${work}/bad-${f}.err")"
done
grep -q "model.exclude" "${work}/bad-integer.err"

cat >"${work}/aggregator.yaml" <<YAML
endpoints:
  model: ${model}
  snapshot: ${snapshot}
  update: ${update}
fedasync:
  alpha: 0.6
  max_staleness: 16
training:
  learning_rate: 0.05
  local_epochs: 1
  batch_size: 32
  extra:
    hidden_activation: relu
checkpoint:
  directory: ${work}/state
ledger:
  path: ${work}/ledger.sqlite
http:
  port: ${ports[3]}
progress:
  interval_s: 2
YAML

"${APIARY_BIN}" aggregator --config "${work}/aggregator.yaml" --model "${work}/mlp.safetensors" --insecure \
  >"${work}/aggregator.log" 2>&1 &
agg=$!
pids+=("${agg}")
"${PY}" - "${ports[1]}" <<'PYEOF'
import socket, sys, time
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=0.5).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit("aggregator not listening after 20 s")
PYEOF

common=(--snapshot "${snapshot}")
for k in 0 1 2; do
  parts="$(seq -s, "${k}" 3 19)"
  "${PY}" "${here}/mlp_fleet.py" train "${common[@]}" --id "py-${k}" --parts "${parts}" --rounds 400 \
    >"${work}/client-${k}.log" 2>&1 &
  pids+=("$!")
done
"${PY}" "${here}/mlp_fleet.py" evaluate "${common[@]}" --id py-eval --until-accuracy "${TARGET}" --seconds 150 \
  >"${work}/evaluator.log" 2>&1 &
evaluator=$!
pids+=("${evaluator}")
wait "${evaluator}"
tail -n 2 "${work}/evaluator.log"

# What an operator sees: the evaluator's series and the clients' metrics in /status.
"${PY}" - "${ports[3]}" <<'PYEOF'
import json, sys, urllib.request
s = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/status", timeout=5))
f = s["fleet"]
ev = [r for r in f["evaluators"] if r["evaluator"] == "py-eval"]
assert ev and "accuracy" in ev[0]["metrics"], f"no py-eval report in /status: {f}"
cm = f["client_metrics"]["values"]
assert "loss" in cm and "accuracy" in cm, f"no client metrics in /status: {f['client_metrics']}"
assert not s["evaluation"]["enabled"], "the built-in digits evaluator must be off for a model that is not the digits one"
print(f"/status: {ev[0]['evaluator']} on {ev[0]['dataset']}: accuracy {ev[0]['metrics']['accuracy']:.4f} at version {ev[0]['version']}; "
      f"client metrics over {f['client_metrics']['updates']} updates: loss {cm['loss']:.4f} accuracy {cm['accuracy']:.4f}")
PYEOF

for pid in "${pids[@]}"; do [[ "${pid}" == "${agg}" ]] || kill -TERM "${pid}" 2>/dev/null || true; done
kill -TERM "${agg}"
wait "${agg}" || { echo "run.sh: the aggregator did not stop cleanly" >&2; exit 1; }
grep -q "training.extra\|hidden_activation" "${work}/client-0.log"

"${APIARY_BIN}" model export --state "${work}/state" --out "${work}/trained.safetensors"
"${APIARY_BIN}" model inspect "${work}/trained.safetensors"
"${PY}" "${here}/check_export.py" "${work}/mlp.safetensors" "${work}/trained.safetensors" "${work}/state"

# With the model file the run started from, left-out tensors (an int64 counter, like BatchNorm's
# num_batches_tracked) are copied back unchanged: the export is the whole state_dict again.
"${PY}" "${here}/make_mlp.py" "${work}/mlp-counter.safetensors" --counter >/dev/null
"${APIARY_BIN}" model export --state "${work}/state" --model "${work}/mlp-counter.safetensors" --exclude step_counter \
  --out "${work}/trained-full.safetensors"
"${PY}" - "${work}/trained.safetensors" "${work}/trained-full.safetensors" <<'PYEOF'
import sys
import numpy as np
from safetensors.numpy import load_file
trained, full = load_file(sys.argv[1]), load_file(sys.argv[2])
assert set(full) == set(trained) | {"step_counter"}, sorted(full)
assert full["step_counter"].dtype == np.int64 and full["step_counter"].shape == () and int(full["step_counter"]) == 5
for name, t in trained.items():
    assert full[name].dtype == np.float32 and full[name].shape == t.shape and np.array_equal(full[name], t), name
print(f"export with --model: {len(full)} tensors, step_counter={int(full['step_counter'])} ({full['step_counter'].dtype}) copied back")
PYEOF

# Resuming the state with another model is refused, naming both layouts.
"${PY}" "${here}/make_mlp.py" "${work}/small.safetensors" --hidden 32 >/dev/null
set +e
"${APIARY_BIN}" aggregator --config "${work}/aggregator.yaml" --model "${work}/small.safetensors" --insecure >"${work}/resume.out" 2>"${work}/resume.err"
status=$?
set -e
if [[ ${status} -ne 1 ]] || ! grep -q "115210 parameters" "${work}/resume.err" || ! grep -q "2410 parameters" "${work}/resume.err"; then
  echo "run.sh: resuming with another model: exit ${status}" >&2; cat "${work}/resume.err" >&2; exit 1
fi
echo "refused resume with another model: $(tail -c 300 "${work}/resume.err")"

# The ledger keeps each update's metrics and each report.
"${PY}" - "${work}/ledger.sqlite" <<'PYEOF'
import json, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
rec = db.execute("SELECT COUNT(*) FROM updates WHERE decision = 'recorded' AND client_id = 'py-eval' AND metrics LIKE '%accuracy%'").fetchone()[0]
upd = db.execute("SELECT metrics FROM updates WHERE decision = 'merged' AND metrics != '' LIMIT 1").fetchone()
assert rec >= 1, "no recorded evaluation report in the ledger"
assert upd and "loss" in json.loads(upd[0]), "no merged update with metrics in the ledger"
print(f"ledger: {rec} evaluation reports, updates with metrics {json.loads(upd[0])}")
PYEOF
echo "run.sh: your own model trained end to end"
