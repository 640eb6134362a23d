#!/usr/bin/env bash
# Minimises a crashing input and keeps it as a regression input.
#
#   bash Fuzz/minimize.sh .build-fuzz/artifacts/crash-<sha1> short-descriptive-name [SECONDS]
#
# Writes Tests/FuzzRegressions/<name>.bin (the smallest input that still crashes, found with
# libFuzzer's -minimize_crash=1 within SECONDS, default 60) and prints its hex. Fuzz/run.sh
# replays every file there before fuzzing, so the input fails the run until the bug is fixed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
[ $# -ge 2 ] || { echo "usage: $0 ARTIFACT NAME [SECONDS]"; exit 2; }
ART="$1"; NAME="$2"; SECS="${3:-60}"
BIN="${FUZZ_BIN:-.build-fuzz/fuzz-apiary}"
export SWIFT_BACKTRACE=enable=no ASAN_OPTIONS="detect_leaks=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
[ -s Fuzz/lsan.supp ] && export LSAN_OPTIONS="suppressions=$ROOT/Fuzz/lsan.supp:print_suppressions=0"
mkdir -p .build-fuzz/minimized
rm -f .build-fuzz/minimized/*
"$BIN" -minimize_crash=1 -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 \
  -exact_artifact_path=.build-fuzz/minimized/min "$ART" > .build-fuzz/minimize.log 2>&1 || true
SRC=.build-fuzz/minimized/min
[ -s "$SRC" ] || SRC="$ART"
OUT="Tests/FuzzRegressions/$NAME.bin"
cp "$SRC" "$OUT"
echo "minimize: $(wc -c < "$ART") -> $(wc -c < "$OUT") bytes: $OUT"
xxd -p "$OUT" | tr -d '\n'; echo
