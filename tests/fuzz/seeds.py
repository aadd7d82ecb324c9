#!/usr/bin/env python3
"""seeds.py — writes the hand-made seeds of tests/fuzz/corpus/ (valid and
near-valid inputs of each format); the rest of the corpus is copied from
tests/fixtures/ and config/, and inputs that once crashed a target are kept
there under crash-* names. Run it with the PyTorch venv's python (NumPy
writes the .npy seeds itself):

    ~/.cache/slyced/venv/bin/python tests/fuzz/seeds.py

It only adds or overwrites its own seed-* files.
"""
import io
import json
import os
import shutil
import struct

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def copy(target, src, name):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    shutil.copyfile(os.path.join(ROOT, src), os.path.join(d, "seed-" + name))


def frame(body):
    body = body.encode() if isinstance(body, str) else body
    return struct.pack("<I", len(body)) + body


# ---- request: frames as PROTOCOL.md shows them -------------------------
REQUESTS = {
    "hello": '{"id": 1, "op": "hello", "version": 1, "client": "slyctl"}',
    "map_region": '{"id": 2, "op": "map_region"}',
    "unmap_region": '{"id": 3, "op": "unmap_region", "region": 1}',
    "forward": '{"id": 4, "op": "forward", "slice": "encoder", "release": [1],'
    ' "inputs": [{"dtype": "float32", "shape": [2, 8, 256], "region": 1,'
    ' "offset": 0}]}',
    "forward_out": '{"id": 4, "op": "forward", "pipeline": "model", "inputs":'
    ' [{"dtype": "bfloat16", "shape": [], "region": 2, "offset": 6},'
    ' {"dtype": "int64", "shape": [0, 3], "region": 1, "offset": 8}],'
    ' "out": {"region": 3, "offset": 0, "bytes": 4096}}',
    "release": '{"id": 5, "op": "release", "leases": [2]}',
    "set_active": '{"id": 6, "op": "set_active_slice", "slice": "decoder",'
    ' "wait": true}',
    "list": '{"id": 7, "op": "list", "release": [3, 4]}',
    "stats": '{"id": 8, "op": "stats"}',
    "load": '{"id": 9, "op": "load", "slice": "decoder", "tier": "cpu"}',
    "evict": '{"id": 10, "op": "evict", "slice": "encoder", "tier": "disk"}',
    "pin": '{"id": 11, "op": "pin", "slice": "encoder", "tier": "gpu"}',
    "unpin": '{"id": 12, "op": "unpin", "slice": "encoder"}',
    "add_slice": '{"id": 13, "op": "add_slice", "name": "head", "constructor":'
    ' "linear", "config": {"in_features": 256, "out_features": 10,'
    ' "dtype": "float32"}}',
    "remove_slice": '{"id": 14, "op": "remove_slice", "name": "head"}',
    "reload": '{"id": 15, "op": "reload"}',
    "shutdown": '{"id": 16, "op": "shutdown"}',
    # Near-valid: each one error the daemon must answer.
    "dup_key": '{"id": 1, "op": "stats", "op": "list"}',
    "unknown_op": '{"id": 9007199254740991, "op": "frobnicate"}',
    "bad_id": '{"id": -1.5, "op": "stats"}',
    "nine_dims": '{"id": 4, "op": "forward", "slice": "s", "inputs": [{"dtype":'
    ' "float32", "shape": [1,1,1,1,1,1,1,1,1], "region": 1, "offset": 0}]}',
    "overflow": '{"id": 4, "op": "forward", "slice": "s", "inputs": [{"dtype":'
    ' "float64", "shape": [4294967296, 4294967296], "region": 1,'
    ' "offset": 0}]}',
    "escaped_nul": '{"id": 1, "op": "hello", "client": "a\\u0000b"}',
    "nested_dup": '{"id": 1, "op": "add_slice", "name": "x", "constructor":'
    ' "mlp", "config": {"a": {"b": [{"c": 1, "c": 2}]}}}',
    # More than 16 keys: duplicates are then found by sorting.
    "many_keys": '{"id": 1, "op": "add_slice", "name": "x", "constructor":'
    ' "mlp", "config": {%s}}' % ", ".join('"k%d": %d' % (i, i)
                                          for i in range(20)),
    "many_keys_dup": '{"id": 1, "op": "add_slice", "name": "x", "constructor":'
    ' "mlp", "config": {%s, "k7": 0}}' % ", ".join('"k%d": %d' % (i, i)
                                                   for i in range(20)),
    # A duplicate whose path is longer than a message holds.
    "deep_dup": '{"id": 1, "op": "add_slice", "name": "x", "constructor":'
    ' "mlp", "config": %s{"\u00e9": 1, "\u00e9": 2}%s}' % (
        "".join('{"%s\u00e9": [' % ("k" * 40) for _ in range(6)),
        "]}" * 6),
}
for name, body in REQUESTS.items():
    put("request", name, frame(body))
put("request", "stream", b"".join(frame(REQUESTS[k]) for k in
                                  ("hello", "map_region", "forward", "release")))
put("request", "zero_len", b"\0\0\0\0" + frame(REQUESTS["stats"]))
put("request", "not_json", frame("{\"id\": 1, \"op\": \"stats\"} trailing"))
put("request", "bad_utf8", frame(b'{"id": 1, "op": "hello", "client": "\xc0\xaf"}'))

# ---- tensor: 8-byte region size, then the value of "inputs" -------------
def tensor(region, text):
    return struct.pack("<Q", region) + text.encode()


put("tensor", "fits", tensor(16 << 20, '[{"dtype": "float32", "shape": [2, 8, '
                             '256], "region": 1, "offset": 0}]'))
put("tensor", "edge", tensor(24, '[{"dtype": "float64", "shape": [2], '
                             '"region": 1, "offset": 8}]'))
put("tensor", "past_end", tensor(23, '[{"dtype": "float64", "shape": [2], '
                                 '"region": 1, "offset": 8}]'))
put("tensor", "unaligned", tensor(64, '[{"dtype": "int32", "shape": [1], '
                                  '"region": 1, "offset": 2}]'))
put("tensor", "empty_dims", tensor(0, '[{"dtype": "bool", "shape": [0, '
                                   '9007199254740991], "region": 1, '
                                   '"offset": 0}]'))
put("tensor", "out", tensor(1 << 40, '[{"dtype": "uint8", "shape": [], '
                            '"region": 1, "offset": 9007199254740991}], '
                            '"out": {"region": 2, "offset": 0, "bytes": 64}'))
put("tensor", "many", tensor((1 << 64) - 1, "[" + ", ".join(
    '{"dtype": "%s", "shape": [%d, 3], "region": %d, "offset": %d}'
    % (d, i, i, 8 * i) for i, d in enumerate(
        ["float32", "float64", "float16", "bfloat16", "int64", "int32",
         "int16", "int8", "uint8", "bool"])) + "]"))

# ---- config -------------------------------------------------------------
copy("config", "config/slyced.json", "slyced.json")
copy("config", "config/production.json", "production.json")
put("config", "sim.json", json.dumps({
    "socket": "./run/../slyced.sock", "socket_mode": "0600",
    "admin_group": "root",
    "log": {"file": "log/slyced.log", "level": "debug", "console": False},
    "device": "sim", "gpu_strategy": "active_only", "max_gpu_mem_mb": 64,
    "gpu_reserve_mb": 0, "sim_copy_gbps": 12.5, "prefetch_depth": 16,
    "max_frame_bytes": 4096, "frame_timeout_ms": 10, "max_conns_per_uid": 1,
    "max_regions_per_conn": 1024, "max_region_mb": 1, "max_registered_mb": 0,
    "max_inflight_per_conn": 65536, "queue_depth": 1, "max_output_mb": 1,
    "drain_timeout_ms": 0,
    "slices": [{"name": "a", "constructor": "torchscript",
                "config": {"path": "../models/a.pt"}},
               {"name": "b.c-d_e", "constructor": "mlp"}],
    "pipelines": {"ab": ["a", "b.c-d_e", "a"]}}, indent=1))
put("config", "limit_gpu.json", '{"device": "cuda:63", "gpu_strategy": '
    '"limit_gpu", "max_gpu_mem_mb": 1025, "gpu_reserve_mb": 1024}')
put("config", "dup_nested.json", '{"slices": [{"name": "a", "constructor": '
    '"linear", "config": {"k": 1, "k": 2}}]}')
put("config", "bad_name.json", '{"slices": [{"name": "a b", "constructor": '
    '"linear"}], "pipelines": {"a": ["a"]}}')
put("config", "syntax.json", '{"device": "cpu",\n "log": {"level": "warn"}\n')

# ---- npy: written by NumPy --------------------------------------------
def npy(arr, version=None):
    b = io.BytesIO()
    if version is None:
        np.save(b, arr)
    else:
        np.lib.format.write_array(b, arr, version=version)
    return b.getvalue()


for src in ("ts_embed.in0.npy", "ts_tuple.out1.npy", "linear_w.out0.npy"):
    copy("npy", "tests/fixtures/" + src, src)
put("npy", "f8_be.npy", npy(np.arange(6, dtype=">f8").reshape(2, 3)))
put("npy", "f2.npy", npy(np.ones((3, 1, 2), dtype="<f2")))
put("npy", "i4_be.npy", npy(np.arange(5, dtype=">i4")))
put("npy", "i2.npy", npy(np.arange(4, dtype="<i2").reshape(2, 2)))
put("npy", "i1.npy", npy(np.array([-1, 2], dtype="i1")))
put("npy", "u1.npy", npy(np.zeros((0, 7), dtype="u1")))
put("npy", "bool.npy", npy(np.array([True, False, True])))
put("npy", "scalar.npy", npy(np.array(3.5, dtype="<f4")))
put("npy", "v2.npy", npy(np.arange(3, dtype="<i8"), version=(2, 0)))
put("npy", "v3.npy", npy(np.arange(2, dtype="<f4"), version=(3, 0)))
put("npy", "fortran.npy", npy(np.asfortranarray(np.ones((2, 2), dtype="<f4"))))
put("npy", "bad_bool.npy", npy(np.array([True, False]))[:-1] + b"\x02")
put("npy", "short.npy", npy(np.arange(8, dtype="<f4"))[:-4])

# ---- safetensors: the format, written out by hand ------------------------
def safetensors(tensors, meta=None, pad=0):
    """tensors: (name, dtype, shape, nbytes) in data order."""
    header, off = {}, 0
    if meta is not None:
        header["__metadata__"] = meta
    for name, dtype, shape, nbytes in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [off, off + nbytes]}
        off += nbytes
    h = json.dumps(header, separators=(",", ":")).encode() + b" " * pad
    return struct.pack("<Q", len(h)) + h + bytes(range(256)) * (off // 256) + \
        bytes(off % 256)


copy("safetensors", "tests/fixtures/linear_w.safetensors", "linear_w.safetensors")
put("safetensors", "dtypes.safetensors", safetensors(
    [("f64", "F64", [2], 16), ("i64", "I64", [1, 1], 8), ("f32", "F32", [], 4),
     ("i32", "I32", [1], 4), ("f16", "F16", [1], 2), ("bf16", "BF16", [1], 2),
     ("i16", "I16", [1], 2), ("u8", "U8", [1], 1), ("i8", "I8", [1], 1),
     ("b", "BOOL", [0, 5], 0)], meta={"format": "pt"}, pad=5))
put("safetensors", "diskcache.safetensors", safetensors(
    [("__pad_0", "U8", [16], 16), ("layers.0.weight", "F32", [4, 4], 64),
     ("__pad_1", "U8", [48], 48)],
    meta={"slyced.magic": "slyced-cache", "slyced.version": "1",
          "slyced.key": "0123456789abcdef0123456789abcdef",
          "slyced.bytes": "128", "slyced.checksum": "00000000000000ff"}))
put("safetensors", "empty.safetensors", safetensors([]))
def raw_safetensors(header, data_bytes):
    return struct.pack("<Q", len(header)) + header + bytes(data_bytes)


put("safetensors", "overlap.safetensors", raw_safetensors(
    b'{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},'
    b'"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}', 3))
put("safetensors", "gap.safetensors", raw_safetensors(
    b'{"a":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}', 3))
put("safetensors", "escape.safetensors", safetensors(
    [("caf\u00e9\\\"x", "U8", [1], 1)], meta={"k\u00e9y": "v\\u00e9"}))
