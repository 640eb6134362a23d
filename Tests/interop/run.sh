#!/usr/bin/env bash
# Interoperability test, two runs against real `apiary aggregator` processes on free loopback
# ports, each driven by a Python client written from docs/PROTOCOL.md alone:
#
#   1. one aggregator, python_client.py: checks a to i;
#   2. three aggregators as parameter shards of one model (PROTOCOL.md 4.4), configured by
#      environment variables only; sharded_client.py is given shard 0's endpoints: checks j to o.
#
# Exits non-zero if any check fails (both runs always run).
#
#   APIARY_BIN=/path/to/apiary bash Tests/interop/run.sh
#
# Build first: swift build --product apiary
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "${script_dir}/../.." && pwd)"
APIARY_BIN="${APIARY_BIN:-${repo_root}/.build/debug/apiary}"
case "${APIARY_BIN}" in
  /*) ;;
  *) APIARY_BIN="${repo_root}/${APIARY_BIN}" ;;
esac

if [[ ! -x "${APIARY_BIN}" ]]; then
  echo "run.sh: no executable at ${APIARY_BIN} (build with: swift build --product apiary)" >&2
  exit 2
fi

if ! python3 -c 'import zmq' 2>/dev/null; then
  python3 -m pip install --quiet pyzmq
fi

SHARDS=3

# 3 + 3 x SHARDS distinct free loopback ports (all bound at once so they differ).
read -r -a ports < <(python3 - "$((3 + 3 * SHARDS))" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()
PY
)

work_dir="$(mktemp -d "${TMPDIR:-/tmp}/apiary-interop.XXXXXX")"
agg_pids=()      # every aggregator started, in order
agg_logs=()      # its log, same index
client_pid=""

# Stop one process we started: TERM, then KILL after 5 s.
stop_pid() {
  local pid=$1
  [[ -n "${pid}" ]] || return 0
  if kill -0 "${pid}" 2>/dev/null; then
    kill -TERM "${pid}" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "${pid}" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "${pid}" 2>/dev/null; then
      echo "run.sh: process ${pid} ignored TERM for 5 s, sending KILL" >&2
      kill -KILL "${pid}" 2>/dev/null || true
    fi
  fi
  wait "${pid}" 2>/dev/null || true
}

# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  local status=$?
  trap - EXIT INT TERM HUP
  if [[ -n "${client_pid}" ]] && kill -0 "${client_pid}" 2>/dev/null; then
    kill -TERM "${client_pid}" 2>/dev/null || true
    wait "${client_pid}" 2>/dev/null || true
  fi
  local i
  for i in "${!agg_pids[@]}"; do
    stop_pid "${agg_pids[$i]}"
  done
  if [[ ${status} -ne 0 ]]; then
    for i in "${!agg_logs[@]}"; do
      if [[ -s "${agg_logs[$i]}" ]]; then
        echo "--- $(basename "${agg_logs[$i]}") (tail) ---" >&2
        tail -n 40 "${agg_logs[$i]}" >&2 || true
      fi
    done
  fi
  rm -rf "${work_dir}"
  exit "${status}"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# start_aggregator LOG [VAR=value ...] [-- FLAG ...]: runs `apiary aggregator [FLAG ...]` in
# the background with the given environment additions; appends its pid to agg_pids.
start_aggregator() {
  local log=$1
  shift
  local vars=()
  while [[ $# -gt 0 && "$1" != "--" ]]; do
    vars+=("$1")
    shift
  done
  [[ $# -gt 0 ]] && shift
  env PROGRESS_INTERVAL_S=0 LOG_LEVEL=warning "${vars[@]}" \
    "${APIARY_BIN}" aggregator "$@" >"${log}" 2>&1 &
  agg_pids+=("$!")
  agg_logs+=("${log}")
}

# wait_listening PORT PID: at most 10 s until PORT accepts TCP connections.
wait_listening() {
  python3 - "$1" "$2" <<'PY'
import os, socket, sys, time
port, pid = int(sys.argv[1]), int(sys.argv[2])
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit(f"run.sh: aggregator {pid} exited before listening")
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit(f"run.sh: port {port} not accepting connections after 10 s")
PY
}

# run_client SCRIPT ARGS...: the client runs in the background and we `wait` for it, so that a
# signal to this script is handled at once (bash defers traps while a foreground child runs).
run_client() {
  local status=0
  python3 "$@" &
  client_pid=$!
  wait "${client_pid}" || status=$?
  client_pid=""
  return "${status}"
}

overall=0

# ---- run 1: one aggregator -------------------------------------------------------------
echo "# run 1: one aggregator"
model="tcp://127.0.0.1:${ports[0]}"
snapshot="tcp://127.0.0.1:${ports[1]}"
update="tcp://127.0.0.1:${ports[2]}"
start_aggregator "${work_dir}/aggregator.log" \
  ENDPOINTS_MODEL="${model}" ENDPOINTS_SNAPSHOT="${snapshot}" ENDPOINTS_UPDATE="${update}" \
  -- --insecure
single_pid="${agg_pids[0]}"
if wait_listening "${ports[1]}" "${single_pid}"; then
  run_client "${script_dir}/python_client.py" \
    --model "${model}" --snapshot "${snapshot}" --update "${update}" || overall=1
else
  overall=1
fi
stop_pid "${single_pid}"

# ---- run 2: three shards of one model --------------------------------------------------
echo "# run 2: ${SHARDS} aggregators as parameter shards of one model"
shard_model=() shard_snapshot=() shard_update=()
for ((i = 0; i < SHARDS; i++)); do
  shard_model+=("tcp://127.0.0.1:${ports[$((3 + 3 * i))]}")
  shard_snapshot+=("tcp://127.0.0.1:${ports[$((4 + 3 * i))]}")
  shard_update+=("tcp://127.0.0.1:${ports[$((5 + 3 * i))]}")
done
join() { local IFS=,; echo "$*"; }
all_model="$(join "${shard_model[@]}")"
all_snapshot="$(join "${shard_snapshot[@]}")"
all_update="$(join "${shard_update[@]}")"

first_shard=${#agg_pids[@]}
for ((i = 0; i < SHARDS; i++)); do
  mkdir -p "${work_dir}/shard-${i}"
  start_aggregator "${work_dir}/shard-${i}.log" \
    SHARDS_INDEX="${i}" \
    SHARDS_MODEL="${all_model}" SHARDS_SNAPSHOT="${all_snapshot}" SHARDS_UPDATE="${all_update}" \
    ENDPOINTS_MODEL="${shard_model[$i]}" ENDPOINTS_SNAPSHOT="${shard_snapshot[$i]}" \
    ENDPOINTS_UPDATE="${shard_update[$i]}" \
    SECURITY_INSECURE=true \
    CHECKPOINT_DIRECTORY="${work_dir}/shard-${i}" \
    LEDGER_PATH= \
    HTTP_PORT=0 \
    PUBLISH_INTERVAL_S=0.02 \
    PUBLISH_CHUNK_PARAMETERS=100
done
listening=1
for ((i = 0; i < SHARDS; i++)); do
  for p in "${ports[$((3 + 3 * i))]}" "${ports[$((4 + 3 * i))]}" "${ports[$((5 + 3 * i))]}"; do
    wait_listening "${p}" "${agg_pids[$((first_shard + i))]}" || listening=0
  done
done
if [[ ${listening} -eq 1 ]]; then
  run_client "${script_dir}/sharded_client.py" --expect-shards "${SHARDS}" \
    --model "${shard_model[0]}" --snapshot "${shard_snapshot[0]}" \
    --update "${shard_update[0]}" || overall=1
else
  overall=1
fi
for ((i = 0; i < SHARDS; i++)); do
  stop_pid "${agg_pids[$((first_shard + i))]}"
done

if [[ ${overall} -eq 0 ]]; then
  echo "run.sh: all checks passed"
else
  echo "run.sh: FAILED" >&2
fi
exit "${overall}"
