#!/usr/bin/env bash
# The edge binary, self-contained: `apiary-edge` (built with the Swift runtime linked in) must
# need no Swift library at all, and must train against a real aggregator with the toolchain out
# of reach.
#
#   1. ldd lists no libswift*, libFoundation*, libdispatch or libBlocksRuntime, and nothing
#      "not found";
#   2. as root: a chroot holding only the binary, its resource directory and the libraries ldd
#      lists (no Swift toolchain, no /opt, no /usr/lib/swift) in a private mount namespace
#      (a bind-mounted /proc, gone with the namespace). Not root: the binary is run with an
#      empty environment and an empty LD_LIBRARY_PATH (a weaker check: say so);
#   3. the strict config check: an unknown key of the file, a wrong-typed environment variable
#      stop it with status 1 and one line naming the key;
#   4. a debug `apiary aggregator` (insecure, free loopback ports, a status port) must merge
#      at least MIN_MERGED updates from the edge client (its row in GET /status), then the
#      client must stop with status 0 on SIGTERM.
#
#   EDGE_BIN=.build-edge/debug/apiary-edge APIARY_BIN=.build/debug/apiary bash Tests/edge/run.sh
#
# Build first (`make edge-test` does): swift build --product apiary && swift build --product apiary-edge --static-swift-stdlib --scratch-path .build-edge
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "${script_dir}/../.." && pwd)"
abs() { case "$1" in /*) echo "$1" ;; *) echo "${repo_root}/$1" ;; esac; }
EDGE_BIN="$(abs "${EDGE_BIN:-.build-edge/debug/apiary-edge}")"
APIARY_BIN="$(abs "${APIARY_BIN:-.build/debug/apiary}")"
MIN_MERGED="${MIN_MERGED:-5}"
for b in "${EDGE_BIN}" "${APIARY_BIN}"; do
  [[ -x "$b" ]] || { echo "edge/run.sh: no executable at $b" >&2; exit 2; }
done

fail() { echo "edge/run.sh: FAIL: $*" >&2; exit 1; }

# 1. What the loader needs.
libs="$(ldd "${EDGE_BIN}")" || fail "ldd ${EDGE_BIN} failed"
echo "${libs}" | sed 's/^/  ldd: /'
if grep -Eq 'libswift|libFoundation|lib_Foundation|libdispatch|libBlocksRuntime' <<<"${libs}"; then
  fail "the edge binary needs Swift runtime libraries (build it with --static-swift-stdlib)"
fi
grep -q 'not found' <<<"${libs}" && fail "a library of the edge binary is missing"

read -r -a ports < <(python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()
PY
)
endpoints=(ENDPOINTS_MODEL="tcp://127.0.0.1:${ports[0]}" ENDPOINTS_SNAPSHOT="tcp://127.0.0.1:${ports[1]}"
           ENDPOINTS_UPDATE="tcp://127.0.0.1:${ports[2]}")

work="$(mktemp -d "${TMPDIR:-/tmp}/apiary-edge.XXXXXX")"
agg_pid=""
edge_pid=""
stop_pid() {
  local pid=$1
  [[ -n "${pid}" ]] && kill -0 "${pid}" 2>/dev/null || return 0
  kill -TERM "${pid}" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "${pid}" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "${pid}" 2>/dev/null || true
}
cleanup() {
  stop_pid "${edge_pid}"
  stop_pid "${agg_pid}"
  rm -rf "${work}"
}
trap cleanup EXIT

env "${endpoints[@]}" HTTP_PORT="${ports[3]}" SECURITY_INSECURE=true LOG_LEVEL=warning \
  "${APIARY_BIN}" aggregator >"${work}/aggregator.log" 2>&1 &
agg_pid=$!

# 2. The edge client, with the toolchain out of reach.
bin_dir="$(dirname "${EDGE_BIN}")"
edge_env=(env -i "${endpoints[@]}" SECURITY_INSECURE=true CLIENT_ID=edge-0 DATA_PARTITION=3 LOG_LEVEL=info LD_LIBRARY_PATH=)
if [[ "$(id -u)" = 0 ]] && command -v unshare >/dev/null && command -v chroot >/dev/null; then
  root="${work}/root"
  mkdir -p "${root}/opt/apiary/bin" "${root}/proc" "${root}/tmp"
  cp "${EDGE_BIN}" "${root}/opt/apiary/bin/apiary-edge"
  # The bundled digits data (SwiftPM's resource directory, found next to the executable).
  for r in "${bin_dir}"/*.resources; do [[ -e "$r" ]] && cp -r "$r" "${root}/opt/apiary/bin/"; done
  # Every library ldd names, at its own path (and the dynamic loader).
  for lib in $(grep -oE '/[^ ]+' <<<"${libs}"); do
    mkdir -p "${root}$(dirname "${lib}")"
    cp -L "${lib}" "${root}${lib}"
  done
  echo "  chroot: $(cd "${root}" && find . -type f | grep -v '\.resources/' | sort | tr '\n' ' ')"
  [[ -z "$(find "${root}" -name 'libswift*' -o -name 'libFoundation*')" ]] || fail "Swift libraries in the chroot"
  mode="chroot with only ldd's libraries"
  # env, unshare, sh and chroot each exec the next: the pid is the client's.
  "${edge_env[@]}" PATH=/usr/sbin:/usr/bin:/sbin:/bin unshare --mount --propagation private sh -c \
    'mount --bind /proc "$1/proc" && exec chroot "$1" /opt/apiary/bin/apiary-edge' sh "${root}" \
    >"${work}/edge.log" 2>&1 &
else
  mode="empty environment and LD_LIBRARY_PATH (not root: no chroot)"
  "${edge_env[@]}" "${EDGE_BIN}" >"${work}/edge.log" 2>&1 &
fi
edge_pid=$!
echo "  edge client: ${mode}"

# The strict config check holds for the edge binary too: one line naming the key, status 1
# (run outside the chroot: the same binary).
printf 'client:\n  idd: x\n' >"${work}/bad.yaml"
out="$(env -i LD_LIBRARY_PATH= "${EDGE_BIN}" --config "${work}/bad.yaml" 2>&1)" && fail "an unknown key was accepted"
[[ "$(wc -l <<<"${out}")" = 1 && "${out}" == *"unknown key 'client.idd'"* ]] || fail "unknown key: ${out}"
out="$(env -i LD_LIBRARY_PATH= CLIENT_MAX_PENDING_UPDATES=abc "${EDGE_BIN}" --insecure 2>&1)" && fail "a bad variable was accepted"
[[ "$(wc -l <<<"${out}")" = 1 && "${out}" == *"CLIENT_MAX_PENDING_UPDATES"* ]] || fail "bad variable: ${out}"
echo "  strict config check: an unknown key and a wrong-typed variable stop it with one line"

# 4. Merged updates from the edge client, as the aggregator's /status lists them.
merged=0
for _ in $(seq 1 300); do
  merged="$(python3 - "${ports[3]}" <<'PY' 2>/dev/null || echo 0
import json, sys, urllib.request
s = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/status", timeout=2))
print(next((c["merged"] for c in s["clients"]["list"] if c["id"] == "edge-0"), 0))
PY
)"
  (( merged >= MIN_MERGED )) && break
  kill -0 "${edge_pid}" 2>/dev/null || { cat "${work}/edge.log" >&2; fail "the edge client exited"; }
  sleep 0.1
done
if (( merged < MIN_MERGED )); then
  echo "--- edge log" >&2; cat "${work}/edge.log" >&2; echo "--- aggregator log" >&2; cat "${work}/aggregator.log" >&2
  fail "the aggregator merged ${merged} updates from the edge client (want >= ${MIN_MERGED})"
fi
echo "  aggregator merged ${merged} updates from edge-0"

kill -TERM "${edge_pid}"
status=0
for _ in $(seq 1 100); do kill -0 "${edge_pid}" 2>/dev/null || break; sleep 0.1; done
kill -0 "${edge_pid}" 2>/dev/null && fail "the edge client did not stop within 10 s of SIGTERM"
wait "${edge_pid}" || status=$?
edge_pid=""
(( status == 0 )) || { cat "${work}/edge.log" >&2; fail "the edge client exited with ${status} on SIGTERM"; }
grep -q "joined" "${work}/edge.log" || fail "the edge client's log has no 'joined' line"
echo "edge/run.sh: OK (${mode}; ${merged} merged updates; stopped with 0 on SIGTERM)"
