"""Llama-style model presets (transformers' LlamaForCausalLM), FLOPs per token, device peaks for MFU."""

from __future__ import annotations

from typing import Any

# Shapes of the SmolLM2 family (135M, 360M, 1.7B) and two smaller ones for CPU tests and quick ablations.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
    "60m": dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=10, num_attention_heads=8, num_key_value_heads=4),
    "135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3),
    "360m": dict(hidden_size=960, intermediate_size=2560, num_hidden_layers=32, num_attention_heads=15, num_key_value_heads=5),
    "1.7b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32, num_key_value_heads=32),
}

# Dense BF16 tensor-core peak per device in TFLOPS (vendor datasheets, no sparsity). Matched by
# substring of torch.cuda.get_device_name(), most specific first; train.peak_tflops overrides.
PEAK_TFLOPS: list[tuple[str, float]] = [
    ("GB200", 2500.0), ("B200", 2250.0), ("H200", 989.0), ("GH200", 989.0), ("H100 NVL", 835.0),
    ("H100 PCIe", 756.0), ("H100", 989.0), ("H800", 989.0), ("H20", 148.0), ("A100", 312.0), ("A800", 312.0),
    ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0), ("A6000", 155.0),
    ("RTX 6000 Ada", 365.0), ("RTX 4090", 165.0), ("RTX 3090", 71.0), ("V100", 125.0), ("T4", 65.0),
    ("MI355X", 2500.0), ("MI325X", 1307.0), ("MI300X", 1307.0), ("MI250X", 383.0),
]


def device_peak_tflops(device_name: str) -> float | None:
    for key, tflops in PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops
    return None


def llama_config(preset: str, vocab_size: int, seq_len: int, overrides: dict, tie: bool, attn: str, bos: int, eos: int):
    from transformers import LlamaConfig

    shape = dict(PRESETS[preset])
    shape.update(overrides)
    try:
        return LlamaConfig(vocab_size=vocab_size, max_position_embeddings=max(seq_len, 2048), rope_theta=10000.0,
                           rms_norm_eps=1e-5, tie_word_embeddings=tie, bos_token_id=bos, eos_token_id=eos,
                           pad_token_id=eos, use_cache=False, attn_implementation=attn, **shape)
    except (TypeError, ValueError) as e:
        from pipeline.errors import UserError

        raise UserError(f"train.model: {e}") from None


def build_model(config):
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM(config)


def count_params(config) -> dict[str, int]:
    """Parameters by kind: the matmuls of the layers, embeddings, and the head (shared when tied)."""
    d, inter, L = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    hd = d // config.num_attention_heads
    kv = config.num_key_value_heads * hd
    per_layer = d * d + 2 * d * kv + d * d + 3 * d * inter + 2 * d
    emb = config.vocab_size * d
    head = 0 if config.tie_word_embeddings else emb
    return {"layers": L * per_layer, "embedding": emb, "head": head, "total": L * per_layer + emb + head + d}


def flops_per_token(config, seq_len: int) -> float:
    """Training FLOPs per token: 6 x (layer matmul weights + the vocabulary projection) plus
    attention scores, 12 x layers x width x sequence (the PaLM appendix count)."""
    d, inter, L = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    hd = d // config.num_attention_heads
    kv = config.num_key_value_heads * hd
    matmul = L * (2 * d * d + 2 * d * kv + 3 * d * inter) + d * config.vocab_size
    return 6.0 * matmul + 12.0 * L * d * seq_len
