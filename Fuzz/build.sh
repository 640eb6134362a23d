#!/usr/bin/env bash
# Builds the libFuzzer binary over Apiary's wire decoders and the merge path (module ApiaryMerge).
#
#   bash Fuzz/build.sh [OUTPUT]          (default: .build-fuzz/fuzz-apiary)
#
# SwiftPM cannot link a -sanitize=fuzzer executable (it renames the entry point), so this
# compiles the package's targets ApiaryCore, ApiaryProtocol and ApiaryMerge with swiftc, each as
# the module it is in the package (same names, same imports, `-package-name Apiary` so the
# harness sees the engine's `package` API), instrumented for coverage and AddressSanitizer, and
# links Fuzz/Harness.swift against them. Nothing is picked by grep: what the merge path needs
# lives in those three targets (Package.swift says ApiaryMerge depends on Core and Protocol only).
#
# Environment:
#   SWIFTC         compiler (default: swiftc)
#   FUZZ_OPT       optimisation flag (default: -O)
#   FUZZ_REV       build the sources of a git revision (e.g. HEAD) instead of the working tree
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${1:-.build-fuzz/fuzz-apiary}"
SWIFTC="${SWIFTC:-swiftc}"
OPT="${FUZZ_OPT:--O}"
REV="${FUZZ_REV:-}"

list() {   # list DIR: the .swift files of a source folder
  if [ -n "$REV" ]; then git ls-tree -r --name-only "$REV" "$1/" | grep '\.swift$' || true
  else find "$1" -name '*.swift' | sort; fi
}
content() {   # content FILE
  if [ -n "$REV" ]; then git show "$REV:$1"; else cat "$1"; fi
}

mkdir -p "$(dirname "$OUT")"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/apiary-fuzz-src.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/mod"

SWIFTFLAGS=(-swift-version 6 -enable-upcoming-feature ExistentialAny -parse-as-library -package-name Apiary)
SAN=(-sanitize=fuzzer,address)
start=$(date +%s)
LINK=()
for mod in ApiaryCore ApiaryProtocol ApiaryMerge; do
  mkdir -p "$TMP/$mod"
  for f in $(list "Sources/$mod"); do content "$f" > "$TMP/$mod/$(basename "$f")"; done
  "$SWIFTC" $OPT -g "${SAN[@]}" "${SWIFTFLAGS[@]}" -module-name "$mod" -I "$TMP/mod" \
    -emit-library -static -emit-module -emit-module-path "$TMP/mod/$mod.swiftmodule" \
    "$TMP/$mod"/*.swift -o "$TMP/lib$mod.a"
  LINK=(-l"$mod" "${LINK[@]}")
done

echo "fuzz: compiled ApiaryCore, ApiaryProtocol, ApiaryMerge${REV:+ at $REV}; linking Fuzz/Harness.swift"
"$SWIFTC" $OPT -g "${SAN[@]}" "${SWIFTFLAGS[@]}" \
  -module-name ApiaryFuzz -use-ld=lld \
  -I "$TMP/mod" -L "$TMP" "${LINK[@]}" \
  Fuzz/Harness.swift \
  -o "$OUT"
echo "fuzz: built $OUT in $(( $(date +%s) - start )) s"
