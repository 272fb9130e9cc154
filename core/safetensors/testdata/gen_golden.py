#!/usr/bin/env python3
"""Writes the golden files core/safetensors tests read (never run by CI).

Install: pip install numpy ml_dtypes safetensors   (versions used: numpy 2.4, ml_dtypes 0.6, safetensors 0.8)
Run from this folder: python3 gen_golden.py

Files are written by the reference Rust serializer (safetensors.serialize_file); the
expected float32 values and the float32->bf16/f16/e4m3 roundings come from numpy and
ml_dtypes, whose bfloat16 and float8_e4m3fn match torch's (round to nearest even).
"""
import json
import os

import ml_dtypes
import numpy as np
import safetensors

rng = np.random.default_rng(1234)


_keep = []  # buffers must outlive serialize_file
_NAMES = {"F8_E5M2": "float8_e5m2", "F8_E8M0": "float8_e8m0fnu", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn", "I8": "int8",
          "U8": "uint8", "I32": "int32", "I64": "int64", "U16": "uint16"}


def ent(arr, dt, shape=None):
    arr = np.ascontiguousarray(arr)
    _keep.append(arr)
    return safetensors.TensorSpec(dtype=_NAMES[dt], shape=list(arr.shape if shape is None else shape),
                                  data_ptr=arr.ctypes.data, data_len=arr.nbytes)


def main():
    f32 = rng.standard_normal((3, 5)).astype(np.float32)
    bf = (rng.standard_normal((4, 7)) * 3).astype(ml_dtypes.bfloat16)
    f16 = np.array([[0.0, -0.0, 1.5], [6e-8, 65504.0, -np.inf], [np.inf, 1e-5, -2.25]], dtype=np.float16)
    f8 = np.arange(256, dtype=np.uint8).reshape(16, 16)
    i8 = np.array([-128, -1, 0, 1, 127], dtype=np.int8)
    u8 = np.array([0, 1, 200, 255], dtype=np.uint8)
    i32 = np.array([[-(2**31), 7], [2**31 - 1, -5]], dtype=np.int32)
    i64 = np.array([-(2**63), 2**40, 3], dtype=np.int64)
    scalar = np.array(2.5, dtype=np.float32)
    empty = np.zeros((0, 4), dtype=np.float32)
    tensors = {
        "a.f32": ent(f32, "F32"),
        "b.bf16": ent(bf.view(np.uint16), "BF16"),
        "c.f16": ent(f16, "F16"),
        "d.f8": ent(f8, "F8_E4M3"),
        "e.i8": ent(i8, "I8"),
        "f.u8": ent(u8, "U8"),
        "g.i32": ent(i32, "I32"),
        "h.i64": ent(i64, "I64"),
        "scalar": ent(scalar, "F32", shape=[]),
        "empty": ent(empty, "F32"),
        "i.e5m2": ent(f8, "F8_E5M2"),
        "j.e8m0": ent(f8, "F8_E8M0"),
    }
    safetensors.serialize_file(tensors, "golden.safetensors", {"format": "pt", "note": "dsgate golden"})

    # Expected float32 values and reference roundings.
    src = np.concatenate([
        rng.standard_normal(2000).astype(np.float32) * 10,
        rng.standard_normal(500).astype(np.float32) * 1e-30,   # bf16 subnormal range
        rng.standard_normal(500).astype(np.float32) * 1e-6,    # f16 subnormal range
        np.array([0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, 3.4e38, -3.4e38, 65504.0, 65520.0, 1e-8, 5.96e-8], dtype=np.float32),
        # exact bf16 ties: low 16 bits 0x8000 with even and odd kept mantissa
        np.array([0x3F808000, 0x3F818000, 0xBF808000, 0x7F7F8000, 0x00018000], dtype=np.uint32).view(np.float32),
        # exact f16 ties
        np.array([1.0 + 2.0**-11, 1.0 + 3 * 2.0**-11, 2.0**-25, 3 * 2.0**-25], dtype=np.float32),
    ])
    f8src = np.concatenate([
        rng.standard_normal(3000).astype(np.float32) * 50,
        rng.standard_normal(500).astype(np.float32) * 0.01,
        np.array([0.0, -0.0, 448.0, -448.0, 464.0, 2.0**-9, 2.0**-10, 3 * 2.0**-10, 1.0625, 1.1875], dtype=np.float32),
    ])
    f8src = f8src[np.abs(f8src) <= 464]
    expect = {
        "a.f32": ent(f32, "F32"),
        "b.bf16": ent(bf.astype(np.float32), "F32"),
        "c.f16": ent(f16.astype(np.float32), "F32"),
        "d.f8": ent(f8.view(ml_dtypes.float8_e4m3fn).astype(np.float32), "F32"),
        "i.e5m2": ent(f8.view(ml_dtypes.float8_e5m2).astype(np.float32), "F32"),
        "j.e8m0": ent(f8.view(ml_dtypes.float8_e8m0fnu).astype(np.float32), "F32"),
        "rne.src": ent(src, "F32"),
        "rne.bf16": ent(src.astype(ml_dtypes.bfloat16).view(np.uint16), "U16"),
        "rne.f16": ent(src.astype(np.float16).view(np.uint16), "U16"),
        "e4m3.src": ent(f8src, "F32"),
        "e4m3.enc": ent(f8src.astype(ml_dtypes.float8_e4m3fn).view(np.uint8), "U8"),
    }
    safetensors.serialize_file(expect, "golden_expect.safetensors")

    # A Hugging Face sharded set: two shards and an index.
    os.makedirs("hfset", exist_ok=True)
    w1 = rng.standard_normal((4, 8)).astype(np.float32)
    w2 = rng.standard_normal((8,)).astype(np.float32)
    w3 = rng.integers(-100, 100, (2, 2, 2)).astype(np.int32)
    safetensors.serialize_file({"model.w1": ent(w1, "F32"), "model.w2": ent(w2, "F32")}, "hfset/model-00001-of-00002.safetensors", {"format": "pt"})
    safetensors.serialize_file({"model.w3": ent(w3, "I32")}, "hfset/model-00002-of-00002.safetensors", {"format": "pt"})
    index = {"metadata": {"total_size": w1.nbytes + w2.nbytes + w3.nbytes},
             "weight_map": {"model.w1": "model-00001-of-00002.safetensors",
                            "model.w2": "model-00001-of-00002.safetensors",
                            "model.w3": "model-00002-of-00002.safetensors"}}
    with open("hfset/model.safetensors.index.json", "w") as f:
        json.dump(index, f, indent=2)


if __name__ == "__main__":
    main()
