#!/usr/bin/env python3
"""Reads an Apiary checkpoint with plain numpy + json + struct, as any other tool would.

    python3 Tests/interop/read_checkpoint.py FILE

Prints the tensors (name, dtype, shape, data offsets), the metadata version and run id, and
verifies the file: the safetensors structure, the layout fingerprint and the checksum, as
documented in Sources/ApiaryCore/Checkpoint.swift and docs/PROTOCOL.md. If the `safetensors`
package is importable, it also loads the file with `safetensors.numpy.load_file` and checks
that it gives the same arrays. Exits 0 when everything checks out, 1 otherwise.
"""

import json
import struct
import sys
import zlib

import numpy as np


def fail(message):
    print(f"read_checkpoint: {message}", file=sys.stderr)
    sys.exit(1)


def fingerprint(tensors):
    """ParameterLayout.fingerprint: FNV-1a 64 over name, 0x00, dtype byte (1 = float32), rank
    byte, then each dimension as 8 little-endian bytes, for each tensor in order."""
    h = 0xCBF29CE484222325
    def mix(data):
        nonlocal h
        for b in data:
            h ^= b
            h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    for name, shape in tensors:
        mix(name.encode("utf-8") + b"\x00" + bytes([1, len(shape)]))
        for d in shape:
            mix(struct.pack("<Q", d))
    return h


def checksum(data, meta):
    """CRC-32 of the data section, then for every metadata entry but "checksum", in sorted key
    order: key, 0x00, value, 0x00 (UTF-8)."""
    crc = zlib.crc32(data)
    for k in sorted(k for k in meta if k != "checksum"):
        crc = zlib.crc32(k.encode("utf-8") + b"\x00" + meta[k].encode("utf-8") + b"\x00", crc)
    return crc


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    path = argv[1]
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        fail("file shorter than 8 bytes")
    (n,) = struct.unpack_from("<Q", blob, 0)
    if 8 + n > len(blob):
        fail(f"header length {n} runs past the end of the {len(blob)}-byte file")
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    data = blob[8 + n:]
    meta = header.pop("__metadata__", {})
    if not all(isinstance(v, str) for v in meta.values()):
        fail("__metadata__ values must be strings")

    entries = sorted(header.items(), key=lambda kv: tuple(kv[1]["data_offsets"]))
    arrays = {}
    expected = 0
    for name, info in entries:
        if info["dtype"] != "F32":
            fail(f"tensor {name}: dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        shape = info["shape"]
        if begin != expected or end - begin != 4 * int(np.prod(shape, dtype=np.int64)):
            fail(f"tensor {name}: data_offsets {begin, end} do not tile the data section")
        expected = end
        arrays[name] = np.frombuffer(data, dtype="<f4", count=(end - begin) // 4, offset=begin).reshape(shape)
        print(f"tensor {name} F32 shape {list(shape)} data_offsets [{begin}, {end}]")
    if expected != len(data):
        fail(f"data section is {len(data)} bytes, the tensors cover {expected}")

    if meta.get("format") != "apiary-checkpoint-1":
        fail(f"not an apiary checkpoint (format {meta.get('format')!r})")
    stored = int(meta["checksum"], 16)
    computed = checksum(data, meta)
    if stored != computed:
        fail(f"checksum mismatch: stored {stored:08x}, computed {computed:08x}")
    fp = fingerprint([(name, info["shape"]) for name, info in entries])
    if int(meta["layout_fingerprint"], 16) != fp:
        fail(f"layout fingerprint mismatch: stored {meta['layout_fingerprint']}, computed {fp:016x}")

    rule = json.loads(meta["rule"])
    dedup = json.loads(meta["dedup"])
    for client, entry in dedup.items():
        for outcome in entry["outcomes"]:
            if len(outcome) != 7:
                fail(f"dedup outcome of {client!r} has {len(outcome)} fields")
    print(f"version {int(meta['version'])}")
    print(f"run_id {meta['run_id']}")
    print(f"rule alpha={rule['alpha']} staleness={rule['staleness_function']} max_staleness={rule['max_staleness']}")
    print(f"dedup {len(dedup)} clients, window {int(meta['dedup_window'])}")
    print(f"parameters {sum(a.size for a in arrays.values())}")
    print(f"checksum ok {stored:08x}")

    try:
        from safetensors.numpy import load_file
    except ImportError:
        print("safetensors package not installed: skipped the comparison with load_file")
    else:
        loaded = load_file(path)
        if set(loaded) != set(arrays):
            fail(f"safetensors.numpy.load_file gives tensors {sorted(loaded)}, expected {sorted(arrays)}")
        for name, a in arrays.items():
            b = loaded[name]
            if b.dtype != np.float32 or b.shape != a.shape or a.tobytes() != b.tobytes():
                fail(f"safetensors.numpy.load_file differs on tensor {name}")
        print("safetensors.numpy.load_file agrees")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
