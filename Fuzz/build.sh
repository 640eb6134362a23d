#!/usr/bin/env bash
# Builds the libFuzzer binary over Apiary's wire decoders and the aggregator's validator/merge path.
#
#   bash Fuzz/build.sh [OUTPUT]          (default: .build-fuzz/fuzz-apiary)
#
# SwiftPM cannot link a -sanitize=fuzzer executable (it renames the entry point), so this
# compiles the harness and the sources it needs with swiftc into ONE module. The sources import
# ApiaryCore / ApiaryProtocol; those import lines are removed in a temporary copy (the originals
# are never touched). MergeEngine is internal, which is fine inside one module.
#
# Sources: Sources/ApiaryCore/*.swift, Sources/ApiaryProtocol/*.swift, and from
# Sources/ApiaryAggregator MergeEngine.swift, AggregatorStats.swift, PublishedModel.swift plus
# every other file there that imports nothing beyond ApiaryCore, ApiaryProtocol, ZeroMQ and the
# platform (Foundation, Synchronization, Glibc...): MergeEngine grows dependencies (e.g.
# NormPolicy in AggregatorConfig.swift) and this picks them up without editing this script.
# Files importing Logging, GRDB, ServiceLifecycle... are left out. When an included file
# imports ZeroMQ, Sources/ZeroMQ is first compiled as its own static module (needs libzmq,
# `make deps`), without sanitizers: it is linked in, not fuzzed.
#
# Environment:
#   SWIFTC         compiler (default: swiftc)
#   FUZZ_OPT       optimisation flag (default: -O)
#   FUZZ_REV       build the sources of a git revision (e.g. HEAD) instead of the working tree
#   FUZZ_EXTRA     more source files (space separated) to compile in
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${1:-.build-fuzz/fuzz-apiary}"
SWIFTC="${SWIFTC:-swiftc}"
OPT="${FUZZ_OPT:--O}"
REV="${FUZZ_REV:-}"

list() {   # list DIR: the .swift files of a source folder
  if [ -n "$REV" ]; then git ls-tree --name-only "$REV" "$1/" | grep '\.swift$' || true
  else ls "$1"/*.swift; fi
}
content() {   # content FILE
  if [ -n "$REV" ]; then git show "$REV:$1"; else cat "$1"; fi
}
ALLOWED_IMPORTS='ApiaryCore|ApiaryProtocol|ZeroMQ|Foundation|FoundationEssentials|Synchronization|Dispatch|Glibc|Musl|Darwin'

SOURCES=( $(list Sources/ApiaryCore) $(list Sources/ApiaryProtocol) )
for f in $(list Sources/ApiaryAggregator); do
  case "$(basename "$f")" in
    MergeEngine.swift|AggregatorStats.swift|PublishedModel.swift) SOURCES+=("$f") ;;
    StateDirectoryLock.swift) ;;  # the aggregator's process plumbing (throws AggregatorError), not the merge path
    *)
      if ! content "$f" | grep -E '^[[:space:]]*(@[A-Za-z_]+[[:space:]]+)*import[[:space:]]' \
           | grep -qvE "import[[:space:]]+(${ALLOWED_IMPORTS})[[:space:]]*$"; then
        SOURCES+=("$f")
      fi ;;
  esac
done
SOURCES+=( ${FUZZ_EXTRA:-} )

mkdir -p "$(dirname "$OUT")"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/apiary-fuzz-src.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

# Copy each source under a unique name (Module_File.swift) without the intra-package imports.
for f in "${SOURCES[@]}"; do
  mod="$(basename "$(dirname "$f")")"
  content "$f" | sed -E '/^[[:space:]]*(@[A-Za-z_]+[[:space:]]+)*import[[:space:]]+(ApiaryCore|ApiaryProtocol)[[:space:]]*$/d' \
    > "$TMP/${mod}_$(basename "$f")"
done
cp Fuzz/Harness.swift "$TMP/Harness.swift"

SWIFTFLAGS=(-swift-version 6 -enable-upcoming-feature ExistentialAny -parse-as-library)
ZMQ_FLAGS=()
start=$(date +%s)
if grep -qE '^[[:space:]]*import[[:space:]]+ZeroMQ[[:space:]]*$' "$TMP"/*.swift; then
  mkdir -p "$TMP/zmq"
  for f in $(list Sources/ZeroMQ); do content "$f" > "$TMP/zmq/$(basename "$f")"; done
  "$SWIFTC" $OPT "${SWIFTFLAGS[@]}" -module-name ZeroMQ -I Sources/CZeroMQ \
    -emit-library -static -emit-module -emit-module-path "$TMP/mod/ZeroMQ.swiftmodule" \
    "$TMP"/zmq/*.swift -o "$TMP/libZeroMQ.a"
  ZMQ_FLAGS=(-I "$TMP/mod" -I Sources/CZeroMQ -L "$TMP" -lZeroMQ -lzmq)
fi

# Optional engine features the harness exercises when the sources have them.
DEFINES=()
if grep -q 'var normPolicy' "$TMP/ApiaryAggregator_MergeEngine.swift" && grep -q 'var maxUpdateNorm' "$TMP/ApiaryAggregator_MergeEngine.swift"; then
  DEFINES+=(-D APIARY_FUZZ_NORM_POLICY)
fi
if grep -q 'func ingest(_ frames: \[UnsafeRawBufferPointer\], authenticatedID: String?' "$TMP/ApiaryAggregator_MergeEngine.swift"; then
  DEFINES+=(-D APIARY_FUZZ_AUTH_ID)
fi

EXTRA_AGG=$(printf '%s\n' "${SOURCES[@]}" | grep '^Sources/ApiaryAggregator/' | xargs -n1 basename \
  | grep -vxE 'MergeEngine.swift|AggregatorStats.swift|PublishedModel.swift' | tr '\n' ' ')
[ -z "$EXTRA_AGG" ] || echo "fuzz: also compiling, for MergeEngine's dependencies: $EXTRA_AGG"
echo "fuzz: compiling ${#SOURCES[@]} sources${REV:+ at $REV} + Fuzz/Harness.swift ${DEFINES[*]:-}${ZMQ_FLAGS:+ (with module ZeroMQ)}"
"$SWIFTC" $OPT -g \
  -sanitize=fuzzer,address \
  "${SWIFTFLAGS[@]}" \
  -module-name ApiaryFuzz -use-ld=lld \
  "${DEFINES[@]}" "${ZMQ_FLAGS[@]}" \
  "$TMP"/*.swift \
  -o "$OUT"
echo "fuzz: built $OUT in $(( $(date +%s) - start )) s"
