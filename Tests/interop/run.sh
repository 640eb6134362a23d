#!/usr/bin/env bash
# Interoperability test: start an aggregator on free loopback ports and run the Python
# client (written from docs/PROTOCOL.md alone) against it. Exits with the client's status.
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

# Three distinct free loopback ports (all bound at once so they differ).
read -r p_model p_snapshot p_update < <(python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()
EOF
)

model="tcp://127.0.0.1:${p_model}"
snapshot="tcp://127.0.0.1:${p_snapshot}"
update="tcp://127.0.0.1:${p_update}"

agg_pid=""
client_pid=""
agg_log="$(mktemp "${TMPDIR:-/tmp}/apiary-interop.XXXXXX")"

cleanup() {
  local status=$?
  trap - EXIT INT TERM HUP
  if [[ -n "${client_pid}" ]] && kill -0 "${client_pid}" 2>/dev/null; then
    kill -TERM "${client_pid}" 2>/dev/null || true
    wait "${client_pid}" 2>/dev/null || true
  fi
  if [[ -n "${agg_pid}" ]] && kill -0 "${agg_pid}" 2>/dev/null; then
    kill -TERM "${agg_pid}" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "${agg_pid}" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "${agg_pid}" 2>/dev/null; then
      echo "run.sh: aggregator ${agg_pid} ignored TERM for 5 s, sending KILL" >&2
      kill -KILL "${agg_pid}" 2>/dev/null || true
    fi
    wait "${agg_pid}" 2>/dev/null || true
  fi
  if [[ ${status} -ne 0 && -s "${agg_log}" ]]; then
    echo "--- aggregator log (tail) ---" >&2
    tail -n 40 "${agg_log}" >&2 || true
  fi
  rm -f "${agg_log}"
  exit "${status}"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

ENDPOINTS_MODEL="${model}" \
ENDPOINTS_SNAPSHOT="${snapshot}" \
ENDPOINTS_UPDATE="${update}" \
PROGRESS_INTERVAL_S=0 \
LOG_LEVEL=warning \
  "${APIARY_BIN}" aggregator --insecure >"${agg_log}" 2>&1 &
agg_pid=$!

# Wait (at most 10 s) until the snapshot port accepts TCP connections.
if ! python3 - "${p_snapshot}" "${agg_pid}" <<'EOF'
import os, socket, sys, time
port, pid = int(sys.argv[1]), int(sys.argv[2])
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit("run.sh: aggregator exited before listening")
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit(f"run.sh: snapshot port {port} not accepting connections after 10 s")
EOF
then
  exit 1
fi

# The client runs in the background and we `wait` for it, so that a signal to this script
# is handled at once (bash defers traps while a foreground child runs).
python3 "${script_dir}/python_client.py" \
  --model "${model}" --snapshot "${snapshot}" --update "${update}" &
client_pid=$!
status=0
wait "${client_pid}" || status=$?
client_pid=""
exit "${status}"
