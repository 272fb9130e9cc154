#!/usr/bin/env python3
"""Writes convert/testdata/fp8ckpt: a tiny DeepSeek-V3-shaped Hugging Face checkpoint
with float8_e4m3fn weights and 128x128 weight_scale_inv blocks (dimensions that are not
multiples of 128, so edge blocks are partial), and the bf16 weights the reference
dequantization gives (expected_bf16.safetensors). Never run by CI.

Install: pip install numpy ml_dtypes safetensors
(torch from PyPI would not import on this machine without its CUDA libraries, so the
reference arithmetic is numpy's float32 multiply and ml_dtypes' float8_e4m3fn/bfloat16
casts, which are bit-identical to torch's: weight_dequant computes
bf16(f32(fp8) * f32(scale)) with round-to-nearest-even.)
Run from convert/testdata: python3 gen_fp8.py
"""
import json
import os

import ml_dtypes
import numpy as np
import safetensors

rng = np.random.default_rng(7)
OUT = "fp8ckpt"
_keep = []
_NAMES = {"F32": "float32", "BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn", "U16": "uint16"}

H, QL, KVL, NOPE, ROPE, VD, NH, INTER, MOE, NE, VOCAB = 200, 136, 72, 24, 16, 24, 4, 272, 48, 4, 256
LAYERS = 2  # layer 0 dense, layer 1 MoE; layer 2 is the MTP module (dropped by the reference converters)


def spec(arr, dt):
    arr = np.ascontiguousarray(arr)
    _keep.append(arr)
    return safetensors.TensorSpec(dtype=_NAMES[dt], shape=list(arr.shape), data_ptr=arr.ctypes.data, data_len=arr.nbytes)


def fp8_weight(rows, cols):
    """Returns (fp8 codes as float8 array, scale_inv f32 blocks)."""
    w = rng.standard_normal((rows, cols)).astype(np.float32) * 60
    w[0, :5] = [0.0, -0.0, 448.0, -448.0, 2.0 ** -9]  # zero, max, smallest subnormal
    w = np.clip(w, -448, 448)
    w8 = w.astype(ml_dtypes.float8_e4m3fn)
    s = rng.uniform(1e-4, 3e-3, ((rows + 127) // 128, (cols + 127) // 128)).astype(np.float32)
    return w8, s


def dequant(w8, s):
    rows, cols = w8.shape
    full = np.repeat(np.repeat(s, 128, axis=0), 128, axis=1)[:rows, :cols]
    return (w8.astype(np.float32) * full).astype(ml_dtypes.bfloat16)  # f32 multiply, RNE to bf16


def bf16(*shape, scale=1.0):
    return (rng.standard_normal(shape).astype(np.float32) * scale).astype(ml_dtypes.bfloat16)


def main():
    os.makedirs(OUT, exist_ok=True)
    shards = [{}, {}]
    expected = {}

    def add(shard, name, arr, dt):
        shards[shard][name] = (arr, dt)

    def linear(shard, name, rows, cols, scale_shard=None):
        w8, s = fp8_weight(rows, cols)
        add(shard, name + ".weight", w8.view(np.uint8), "F8_E4M3")
        add(shard if scale_shard is None else scale_shard, name + ".weight_scale_inv", s, "F32")
        expected[name + ".weight"] = dequant(w8, s)

    add(0, "model.embed_tokens.weight", bf16(VOCAB, H, scale=0.02).view(np.uint16), "BF16")
    for L in range(LAYERS + 1):
        p = f"model.layers.{L}."
        sh = 0 if L == 0 else 1
        add(sh, p + "input_layernorm.weight", bf16(H).view(np.uint16), "BF16")
        add(sh, p + "post_attention_layernorm.weight", bf16(H).view(np.uint16), "BF16")
        linear(sh, p + "self_attn.q_a_proj", QL, H)
        add(sh, p + "self_attn.q_a_layernorm.weight", bf16(QL).view(np.uint16), "BF16")
        linear(sh, p + "self_attn.q_b_proj", NH * (NOPE + ROPE), QL)
        linear(sh, p + "self_attn.kv_a_proj_with_mqa", KVL + ROPE, H, scale_shard=1 - sh)  # scale in the other shard
        add(sh, p + "self_attn.kv_a_layernorm.weight", bf16(KVL).view(np.uint16), "BF16")
        linear(sh, p + "self_attn.kv_b_proj", NH * (NOPE + VD), KVL)
        linear(sh, p + "self_attn.o_proj", H, NH * VD)
        if L == 0:
            linear(sh, p + "mlp.gate_proj", INTER, H)
            linear(sh, p + "mlp.up_proj", INTER, H)
            linear(sh, p + "mlp.down_proj", H, INTER)
        else:
            add(sh, p + "mlp.gate.weight", bf16(NE, H).view(np.uint16), "BF16")
            add(sh, p + "mlp.gate.e_score_correction_bias", rng.standard_normal(NE).astype(np.float32), "F32")
            for e in range(NE):
                linear(sh, p + f"mlp.experts.{e}.gate_proj", MOE, H)
                linear(sh, p + f"mlp.experts.{e}.up_proj", MOE, H)
                linear(sh, p + f"mlp.experts.{e}.down_proj", H, MOE)
            linear(sh, p + "mlp.shared_experts.gate_proj", MOE, H)
            linear(sh, p + "mlp.shared_experts.up_proj", MOE, H)
            linear(sh, p + "mlp.shared_experts.down_proj", H, MOE)
    add(1, "model.norm.weight", bf16(H).view(np.uint16), "BF16")
    add(1, "lm_head.weight", bf16(VOCAB, H, scale=0.02).view(np.uint16), "BF16")

    weight_map = {}
    for i, shard in enumerate(shards):
        fn = f"model-{i + 1:05d}-of-00002.safetensors"
        safetensors.serialize_file({k: spec(a, dt) for k, (a, dt) in shard.items()}, os.path.join(OUT, fn), {"format": "pt"})
        for k in shard:
            weight_map[k] = fn
    with open(os.path.join(OUT, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f, indent=2)
    config = {
        "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
        "vocab_size": VOCAB, "hidden_size": H, "intermediate_size": INTER, "moe_intermediate_size": MOE,
        "num_hidden_layers": LAYERS, "num_nextn_predict_layers": 1, "first_k_dense_replace": 1,
        "num_attention_heads": NH, "num_key_value_heads": NH, "n_routed_experts": NE, "n_shared_experts": 1,
        "num_experts_per_tok": 2, "n_group": 2, "topk_group": 1, "topk_method": "noaux_tc",
        "scoring_func": "sigmoid", "norm_topk_prob": True, "routed_scaling_factor": 2.5,
        "q_lora_rank": QL, "kv_lora_rank": KVL, "qk_nope_head_dim": NOPE, "qk_rope_head_dim": ROPE,
        "v_head_dim": VD, "rope_theta": 10000, "max_position_embeddings": 4096,
        "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 1024,
                         "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
        "bos_token_id": 0, "eos_token_id": 1, "torch_dtype": "bfloat16",
        "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                "weight_block_size": [128, 128]},
    }
    with open(os.path.join(OUT, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(OUT, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<｜begin▁of▁sentence｜>", "note": "stand-in: only copied by convert"}, f)
    safetensors.serialize_file({k: spec(v.view(np.uint16), "BF16") for k, v in expected.items()}, "expected_bf16.safetensors")


if __name__ == "__main__":
    main()
