#!/usr/bin/env python3
"""Writes the seed corpus of Fuzz/Harness.swift to Fuzz/corpus/ (valid messages, from
docs/PROTOCOL.md, plus a few near misses), each in the harness's input format:

    input   := message{1,8}
    message := control:u8 frame{n}        n = (control & 7) + 1
    frame   := length:u16le bytes[length]
    control bits 3-5: engine setting (rule / norm bound), bit 6: misalign frames by 1 byte,
    bit 7: resend

The harness's engine: layout W[4,3], b[3] (15 float32), run id 0xA91A000000000001, version 2.

    python3 Fuzz/make_seeds.py [OUTDIR]
"""
import json
import math
import os
import struct
import sys

RUN_ID = 0xA91A_0000_0000_0001
VERSION = 2
N_PARAMS = 15
INITIAL = [i * 0.25 - 1.5 for i in range(N_PARAMS)]


def common(msg_type):
    return b"APRY" + bytes([1, msg_type]) + b"\0\0"


def layout_frame(tensors):
    out = struct.pack("<I", len(tensors))
    for name, shape in tensors:
        n = name.encode()
        out += struct.pack("<B", len(n)) + n + struct.pack("<BB", 1, len(shape))
        out += b"".join(struct.pack("<Q", d) for d in shape)
    return out


def fingerprint(tensors):
    h = 0xCBF29CE484222325
    def mix(b):
        nonlocal h
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    for name, shape in tensors:
        for b in name.encode():
            mix(b)
        mix(0)
        mix(1)
        mix(len(shape))
        for d in shape:
            for b in struct.pack("<Q", d):
                mix(b)
    return h


MODEL = [("W", [4, 3]), ("b", [3])]
LAYOUT = layout_frame(MODEL)
FP = fingerprint(MODEL)
DIGITS = [("W", [64, 10]), ("b", [10])]
assert layout_frame(DIGITS).hex() == (
    "020000000157010240000000000000000a00000000000000"
    "016201010a00000000000000"), "layout encoding disagrees with docs/PROTOCOL.md"
assert fingerprint(DIGITS) == 0xADD267FBE249FE49, "fingerprint disagrees with docs/PROTOCOL.md"


def floats(values):
    return b"".join(struct.pack("<f", v) for v in values)


def update_header(client=b"c1", seq=1, base=VERSION, run=RUN_ID, samples=10, codec=0, reserved=0, version=1, epoch=0):
    """``epoch``: a client epoch (flag bit 2 and a u64 after the client id; 0: none)."""
    h = b"APRY" + bytes([version, 4]) + b"\0\0"
    flags = reserved | (4 if epoch else 0)
    return h + struct.pack("<QQQQBBH", run, base, seq, samples, codec, len(client), flags) + client + (struct.pack("<Q", epoch) if epoch else b"")


def client_update(payload_frames=None, layout=LAYOUT, **kw):
    if payload_frames is None:
        payload_frames = [floats([x + 0.5 for x in INITIAL])]
    return [update_header(**kw), layout] + payload_frames


def update_with_metrics(metrics=b'{"accuracy":0.5,"loss":1.25}', **kw):
    f = client_update(reserved=1, **kw)
    return f[:2] + [metrics] + f[2:]


def evaluation_report(client=b"ev", seq=1, version=VERSION, run=RUN_ID, examples=30,
                      body=b'{"dataset":"digits test split","metrics":{"accuracy":0.9}}'):
    h = b"APRY" + bytes([1, 6]) + b"\0\0" + struct.pack("<QQQQBBH", run, version, seq, examples, 0, len(client), 0) + client
    return [h, body]


def snapshot_request(request_id=7, client=b"c1"):
    return [common(2) + struct.pack("<QB", request_id, len(client)) + client]


CONFIG = json.dumps({
    "algorithm": "fedasync", "alpha": 0.6, "chunk_parameters": 262144, "heartbeat_s": 5,
    "max_frame_bytes": 16777216, "max_staleness": 4, "publish_interval_s": 0.2,
    "receipt_timeout_s": 5, "staleness_a": 0.5, "staleness_b": 0,
    "staleness_function": "polynomial",
    "training": {"batch_size": 16, "learning_rate": 0.1, "local_epochs": 1, "proximal_mu": 0},
}, sort_keys=True, separators=(",", ":")).encode()


def snapshot_reply(payload_frames=None, request_id=7, version=VERSION, config=CONFIG):
    if payload_frames is None:
        payload_frames = [floats(INITIAL)]
    header = common(3) + struct.pack("<QQQQQqII", request_id, RUN_ID, version, FP, N_PARAMS,
                                     1_764_000_000_000, len(payload_frames), 0)
    return [header, LAYOUT, config] + payload_frames


def model_chunk(offset, values, index, count, version=VERSION):
    header = common(1) + struct.pack("<QQQQQII", RUN_ID, version, FP, N_PARAMS, offset, index, count)
    return [b"model", header, floats(values)]


def receipt(client=b"c1", seq=1, base=2, model_version=3, staleness=0, weight=0.6, decision=1, reason=0, message=b""):
    header = common(5) + struct.pack("<QQQQQdBBH", RUN_ID, seq, base, model_version, staleness, weight,
                                     decision, reason, 0)
    return [b"receipt/" + client + b"/", header, message]


def message(frames, setting=0, misalign=0, resend=False):
    assert 1 <= len(frames) <= 8 and 0 <= setting <= 7 and misalign in (0, 1)
    control = (len(frames) - 1) | setting << 3 | misalign << 6 | (0x80 if resend else 0)
    out = bytes([control])
    for f in frames:
        assert len(f) <= 0xFFFF
        out += struct.pack("<H", len(f)) + f
    return out


def seeds():
    s = {}
    u = client_update
    # CLIENT_UPDATE, one message each.
    s["update_valid_base2"] = [message(u())]
    s["update_valid_base1_stale1"] = [message(u(base=1, seq=2))]
    s["update_valid_base0_stale2"] = [message(u(base=0, seq=3, client=b"node-07.a_b"))]
    s["update_unknown_base3"] = [message(u(base=3))]
    s["update_too_stale_max0"] = [message(u(base=0), setting=3)]
    s["update_wrong_run"] = [message(u(run=0x1234))]
    s["update_nan_payload"] = [message(u([floats(INITIAL[:7] + [math.nan] + INITIAL[8:])]))]
    s["update_inf_payload"] = [message(u([floats([math.inf] + INITIAL[1:])]))]
    s["update_delta_overflow"] = [message(u([floats([3.4e38] * 8 + [-3.4e38] * 7)]))]
    s["update_large_finite"] = [message(u([floats([1e30] * N_PARAMS)]), setting=1)]
    s["update_wrong_layout_W34"] = [message(u(layout=layout_frame([("W", [3, 4]), ("b", [3])])))]
    s["update_wrong_layout_digits"] = [message(u(layout=layout_frame(DIGITS)))]
    s["update_short_payload"] = [message(u([floats(INITIAL[:14])]))]
    s["update_misaligned_frame"] = [message(u([floats(INITIAL) + b"\0\0"]))]
    s["update_split_payload"] = [message(u([floats(INITIAL[:4]), b"", floats(INITIAL[4:12]), floats(INITIAL[12:])]))]
    s["update_split_misaligned_ptr"] = [message(u([floats(INITIAL[:5]), floats(INITIAL[5:])]), misalign=1)]
    s["update_misalign3_copy"] = [message(u(), setting=1, misalign=1)]
    s["update_bad_codec"] = [message(u(codec=9))]
    # Deltas (header flag bit 1) in each codec (PROTOCOL.md 3.4.1), two per seed so that the
    # harness's FedBuff engine (a buffer of 2) flushes; the FedAsync engine rejects them.
    def delta(codec, frames, client=b"c1", seq=1):
        return message(u(frames, codec=codec, reserved=2, client=client, seq=seq))
    d = [0.01 * (i - 7) for i in range(N_PARAMS)]
    half = lambda v: struct.pack("<e", v)
    bf16 = lambda v: struct.pack("<f", v)[2:]
    peak = max(abs(x) for x in d)
    int8 = struct.pack("<f", peak / 127) + bytes((round(x / (peak / 127)) & 0xFF) for x in d)
    topk = b"".join(struct.pack("<I", i) + bf16(d[i]) for i in (0, 7, 14))
    s["fedbuff_float32_flush"] = [delta(0, [floats(d)]), delta(0, [floats(d)], client=b"c2")]
    s["fedbuff_float16_flush"] = [delta(1, [b"".join(half(x) for x in d)]), delta(1, [b"".join(half(x) for x in d)], client=b"c2")]
    s["fedbuff_bfloat16_flush"] = [delta(2, [b"".join(bf16(x) for x in d)]), delta(0, [floats(d)], client=b"c2")]
    s["fedbuff_int8_flush"] = [delta(3, [int8[:9], int8[:4] + int8[9:]]), delta(3, [int8], client=b"c2")]
    s["fedbuff_topk_flush"] = [delta(4, [topk]), delta(4, [topk[:6], topk[6:]], client=b"c2")]
    s["fedbuff_topk_bad_index"] = [delta(4, [topk + struct.pack("<I", 15) + bf16(1.0)]), delta(4, [topk[6:] + topk[:6]], client=b"c2")]
    s["update_reserved_set"] = [message(u(reserved=1))]
    s["update_bad_version"] = [message(u(version=2))]
    s["update_bad_client_id"] = [message(u(client=b"bad id!"))]
    s["update_long_client_id"] = [message(u(client=b"x" * 64))]
    s["update_two_frames"] = [message(u()[:2])]
    s["update_norm_reject"] = [message(u([floats([x + 3 for x in INITIAL])]), setting=1)]
    s["update_norm_clip"] = [message(u([floats([x + 3 for x in INITIAL])]), setting=2)]
    s["update_weight0"] = [message(u(), setting=3)]
    s["update_weight_near1"] = [message(u(base=1), setting=4)]
    s["update_clip_near1"] = [message(u([floats([1e20] * N_PARAMS)]), setting=5)]
    s["update_tiny_weight"] = [message(u(base=0), setting=7)]
    s["update_unbounded_staleness"] = [message(u(base=0), setting=6)]
    # Settings 4, 5 and 7 run on a connection authenticated as c1, c2 and an invalid id.
    s["update_identity_matches"] = [message(u(seq=5), setting=4, resend=True)]
    s["update_identity_mismatch"] = [message(u(seq=5), setting=5, resend=True)]
    s["update_identity_invalid"] = [message(u(seq=5), setting=7)]
    s["update_identity_bad_codec"] = [message(u(codec=3), setting=5)]
    # Several messages: state within one input (dedup, staleness, versions).
    s["multi_merge_then_resend"] = [message(u(seq=1), resend=True), message(u(seq=2, base=3), setting=2)]
    s["multi_two_clients_stale"] = [message(u(seq=1)), message(u(seq=1, client=b"c2")),
                                    message(u(seq=2, base=2), setting=2), message(u(seq=9, base=0))]
    s["multi_dedup_window"] = [message(u(seq=k, base=2)) for k in range(1, 7)] + [message(u(seq=1)), message(u(seq=5))]
    s["multi_reject_then_resend"] = [message(u([floats([math.nan] * N_PARAMS)], seq=4), resend=True),
                                     message(u(seq=4))]
    # Client epochs: a far-ahead seq is refused (seq_out_of_range) and locks nothing out; a new
    # epoch has its own window; the old epoch still answers its resends.
    e1, e2 = 0x0123456789ABCDEF, 0xFEDCBA9876543210
    s["multi_client_epochs"] = [message(u(seq=100, epoch=e1)), message(u(seq=2**64 - 1, epoch=e1)), message(u(seq=101, epoch=e1)),
                                message(u(seq=1, epoch=e2), setting=2), message(u(seq=100, epoch=e1), resend=True)]
    s["multi_base_catches_up"] = [message(u(seq=1)), message(u(seq=2, base=3)), message(u(seq=3, base=4), resend=True)]
    # SNAPSHOT_REQUEST.
    s["snapshot_request_named"] = [message(snapshot_request())]
    s["snapshot_request_anonymous"] = [message(snapshot_request(request_id=2**64 - 1, client=b""))]
    # SNAPSHOT_REPLY.
    s["snapshot_reply"] = [message(snapshot_reply())]
    s["snapshot_reply_split"] = [message(snapshot_reply([floats(INITIAL[:8]), floats(INITIAL[8:])]), misalign=1)]
    s["snapshot_reply_empty_frame"] = [message(snapshot_reply([floats(INITIAL), b""]))]
    s["snapshot_reply_hinge_config"] = [message(snapshot_reply(config=json.dumps({
        "algorithm": "fedasync", "alpha": 0.3, "chunk_parameters": 4, "max_frame_bytes": 1024,
        "max_staleness": 1000, "receipt_timeout_s": 0.5, "staleness_a": 10, "staleness_b": 1,
        "staleness_function": "hinge", "unknown_key": [1, {"x": None}],
        "training": {"batch_size": 1, "learning_rate": 1e-3, "local_epochs": 3, "proximal_mu": 0.01},
    }).encode()))]
    s["config_only"] = [message([CONFIG])]
    s["layout_only"] = [message([LAYOUT])]
    s["layout_scalar_and_empty_dims"] = [message([layout_frame([("s", []), ("e", [0, 5]), ("w", [2, 2, 2])])])]
    # MODEL_CHUNK.
    s["model_chunk_whole"] = [message(model_chunk(0, INITIAL, 0, 1))]
    s["model_chunks_two"] = [message(model_chunk(0, INITIAL[:8], 0, 2)), message(model_chunk(8, INITIAL[8:], 1, 2), misalign=1)]
    # CLIENT_UPDATE with a metrics frame (flag bit 0), EVALUATION_REPORT.
    s["update_metrics"] = [message(u(seq=4)), message(update_with_metrics(seq=5))]
    s["evaluation_report"] = [message(evaluation_report()), message(evaluation_report(seq=2, version=1), resend=True)]
    # RECEIPT.
    s["receipt_merged"] = [message(receipt())]
    s["receipt_rejected_text"] = [message(receipt(decision=2, reason=5, staleness=2**64 - 1, weight=0.0,
                                                  message="payload has NaN or infinite values".encode()))]
    s["receipt_duplicate_utf8"] = [message(receipt(client=b"c-9", decision=3, reason=8, message="d\u00e9j\u00e0 vu \u2713".encode()))]
    # A mix: what one socket pair sees in order.
    s["mixed_session"] = [message(snapshot_request()), message(snapshot_reply()), message(u(seq=11)),
                          message(receipt(seq=11)), message(model_chunk(0, INITIAL, 0, 1, version=3))]
    return {name: b"".join(parts) for name, parts in s.items()}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
    os.makedirs(out, exist_ok=True)
    for name in os.listdir(out):
        if name.endswith(".bin"):
            os.remove(os.path.join(out, name))
    total = 0
    for name, data in sorted(seeds().items()):
        with open(os.path.join(out, name + ".bin"), "wb") as f:
            f.write(data)
        total += len(data)
    print(f"wrote {len(seeds())} seeds ({total} bytes) to {out}")


if __name__ == "__main__":
    main()
