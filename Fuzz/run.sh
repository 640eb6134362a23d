#!/usr/bin/env bash
# Bounded fuzzing run of Apiary's decoders and merge validator (Fuzz/Harness.swift).
#
#   bash Fuzz/run.sh [SECONDS]        (default 60)
#
# 1. builds .build-fuzz/fuzz-apiary when it is missing or older than the harness or the sources;
# 2. replays every input in Tests/FuzzRegressions/ once (fails if any still crashes);
# 3. fuzzes for SECONDS on a writable corpus .build-fuzz/corpus (seeded from Fuzz/corpus and
#    Tests/FuzzRegressions), crash inputs going to .build-fuzz/artifacts/;
# 4. prints "fuzz: N runs, C crashes" and exits non-zero when the fuzzer found anything
#    (crash, ASan or LeakSanitizer report, violated invariant, timeout, out of memory).
#
# Environment: FUZZ_ARGS (extra libFuzzer flags), FUZZ_BIN (binary to use, no build).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SECONDS_TO_RUN="${1:-60}"
OUTDIR=.build-fuzz
BIN="${FUZZ_BIN:-$OUTDIR/fuzz-apiary}"
CORPUS="$OUTDIR/corpus"
ARTIFACTS="$OUTDIR/artifacts"
REGRESSIONS=Tests/FuzzRegressions
LOG="$OUTDIR/fuzz.log"

# The Swift runtime's backtracer can hang for minutes after a crash: off. Leaks count as bugs.
export SWIFT_BACKTRACE=enable=no
export ASAN_OPTIONS="detect_leaks=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
if [ -s Fuzz/lsan.supp ]; then
  export LSAN_OPTIONS="suppressions=$ROOT/Fuzz/lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
fi
export ASAN_SYMBOLIZER_PATH="${ASAN_SYMBOLIZER_PATH:-$(command -v llvm-symbolizer || true)}"

mkdir -p "$OUTDIR" "$CORPUS" "$ARTIFACTS"

# 1. Build if needed.
if [ -z "${FUZZ_BIN:-}" ]; then
  if [ ! -x "$BIN" ] || [ -n "$(find Fuzz/Harness.swift Fuzz/build.sh Sources/ApiaryCore Sources/ApiaryProtocol \
        Sources/ApiaryAggregator -name '*.swift' -newer "$BIN" -o -name build.sh -newer "$BIN" 2>/dev/null | head -1)" ]; then
    bash Fuzz/build.sh "$BIN" 2>&1 | grep -v 'Cannot export local symbol' || { echo "fuzz: build failed"; exit 2; }
    [ -x "$BIN" ] || { echo "fuzz: build failed"; exit 2; }
  fi
fi

COMMON=(-timeout=10 -rss_limit_mb=2048 -dict=Fuzz/apiary.dict)

# 2. Replay the regression inputs.
mapfile -t REG < <(find "$REGRESSIONS" -maxdepth 1 -type f ! -name 'README*' ! -name '.*' 2>/dev/null | sort)
if [ "${#REG[@]}" -gt 0 ]; then
  echo "fuzz: replaying ${#REG[@]} regression input(s) from $REGRESSIONS"
  if ! "$BIN" "${COMMON[@]}" "${REG[@]}" > "$OUTDIR/regressions.log" 2>&1; then
    grep -E 'Running:|ERROR|violated|Fatal error|SUMMARY' "$OUTDIR/regressions.log" | tail -20
    echo "fuzz: a regression input still fails (full output: $OUTDIR/regressions.log)"
    echo "fuzz: 0 runs, 1 crashes"
    exit 1
  fi
fi

# 3. Fuzz.
cp -n Fuzz/corpus/* "$CORPUS"/ 2>/dev/null || true
[ "${#REG[@]}" -gt 0 ] && cp -n "${REG[@]}" "$CORPUS"/
MARK="$OUTDIR/.run-start"; : > "$MARK"
echo "fuzz: fuzzing for ${SECONDS_TO_RUN} s (log: $LOG)"
"$BIN" "${COMMON[@]}" -max_total_time="$SECONDS_TO_RUN" -max_len=4096 -print_final_stats=1 \
  -artifact_prefix="$ARTIFACTS/" ${FUZZ_ARGS:-} "$CORPUS" > "$LOG" 2>&1
rc=$?

# 4. Summary.
runs=$(sed -nE 's/^Done ([0-9]+) runs in ([0-9]+) second.*/\1/p' "$LOG" | tail -1)
secs=$(sed -nE 's/^Done ([0-9]+) runs in ([0-9]+) second.*/\2/p' "$LOG" | tail -1)
[ -n "$runs" ] || runs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+)/\1/p' "$LOG" | tail -1)
last=$(grep -E '^#[0-9]+' "$LOG" | tail -1)
if [ -z "$runs" ]; then   # -fork=N mode: "#RUNS: cov: ... time: Ss"
  runs=$(sed -nE 's/^#([0-9]+): cov:.*/\1/p' <<<"$last")
  secs=$(sed -nE 's/^INFO: exiting: [0-9]+ time: ([0-9]+)s.*/\1/p' "$LOG" | tail -1)
fi
cov=$(sed -nE 's/.* cov: ([0-9]+) ft: ([0-9]+) corp: ([0-9]+)[\/ ].*/cov \1, features \2, corpus \3/p' <<<"$last")
mapfile -t FOUND < <(find "$ARTIFACTS" -type f -newer "$MARK" \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'slow-unit-*' \) | sort)
crashes=0
for a in "${FOUND[@]}"; do case "$(basename "$a")" in slow-unit-*) ;; *) crashes=$((crashes + 1));; esac; done
if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then crashes=1; fi
rate=""
[ -n "$runs" ] && [ -n "$secs" ] && [ "$secs" -gt 0 ] && rate=", $((runs / secs)) runs/s"

if [ "$crashes" -gt 0 ]; then
  grep -E 'ERROR: |violated|Fatal error|SUMMARY|Test unit written' "$LOG" | head -20
  for a in "${FOUND[@]}"; do echo "fuzz: artifact $a"; done
  echo "fuzz: minimise with: bash Fuzz/minimize.sh <artifact> <descriptive-name>   (full output: $LOG)"
fi
echo "fuzz: ${runs:-0} runs in ${secs:-?} s${rate}${cov:+, $cov}, ${crashes} crashes"
[ "$crashes" -eq 0 ]
