"""What ``dtype: auto`` means on a device for the encoders (``encoder.dtype``; ``classifier.dtype`` and
``classify.dtype``, as autocast)."""

from __future__ import annotations


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AMX tiles or AVX512-BF16). Elsewhere torch emulates bf16
    on a CPU, slower than fp32."""
    import torch

    try:
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except AttributeError:  # a torch without these probes: stay on fp32
        return False


def auto_dtype(device: str) -> str:
    """bfloat16 on a GPU and on a CPU with native bf16, else float32. On such a CPU MiniLM encodes ~2x
    faster than in fp32 and its pairwise cosines move by at most 0.003 (bench/RESULTS.md)."""
    if device.startswith("cuda"):
        return "bfloat16"
    return "bfloat16" if device == "cpu" and cpu_has_bf16() else "float32"
