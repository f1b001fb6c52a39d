"""Trainer throughput: our loop vs a plain PyTorch loop on the same model, batch and tokens.

Both train the same preset from the same initialisation for the same number of steps on windows of
the same token files (the LLM-scored FineWeb sample, tokenized with SmolLM2's tokenizer). Ours is
``Trainer`` as ``synthweb train`` runs it (mixture sampler, schedule, clipping, logging, a
checkpoint at the end - its time excluded as in the run's own figure); the reference is forward,
cross-entropy, backward, AdamW step and nothing else. Prints tokens/s for both and the ratio, and
MFU where the device's peak is known (a GPU).

Usage: python bench/bench_train.py [--preset tiny] [--seq-len 256] [--micro 16] [--steps 30] [--device auto]
  On an H100: --preset 135m --seq-len 2048 --micro 8 --steps 40 (then --preset 360m --micro 4)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
LEGAL = REPO.parent / "shared" / "data" / "web" / "fineweb-sample-legal-scored"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--micro", type=int, default=16)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--tokens-dir", default=str(REPO / "bench" / "out" / "train-tokens"))
    args = ap.parse_args()
    if not LEGAL.exists():
        sys.exit(f"skipped: {LEGAL} not found (../shared/data is absent)")

    import numpy as np
    import torch
    import torch.nn.functional as F

    from pipeline.stages import load_config
    from pipeline.train.data import TokenFiles
    from pipeline.train.loop import Trainer
    from pipeline.train.model import (
        build_model,
        device_peak_tflops,
        flops_per_token,
        llama_config,
    )
    from pipeline.train.tokenize import TrainDataset, tokenize

    cfg = load_config(None, [f"train.preset={args.preset}", f"train.seq_len={args.seq_len}",
                             f"train.micro_batch_size={args.micro}", f"train.tokens={args.seq_len * args.micro * args.steps}",
                             "train.warmup_steps=5", "train.log_every=1000", f"train.checkpoint_every={args.steps}",
                             "train.tensorboard=false", f"train.device={args.device}", f"train.compile={str(args.compile).lower()}",
                             "eval.val_batches=1", "executor.tasks=2"])
    tok_dir = Path(args.tokens_dir)
    m = tokenize(cfg, TrainDataset(path=str(LEGAL), name="legal"), tok_dir)
    cfg.train.datasets = [TrainDataset(path=str(tok_dir), name="legal")]
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    mcfg = llama_config(args.preset, m["vocab_size"], args.seq_len, {}, True, "sdpa", m["eos_id"], m["eos_id"])
    fpt = flops_per_token(mcfg, args.seq_len)
    peak = device_peak_tflops(dev_name) if device.type == "cuda" else None
    amp = torch.bfloat16 if device.type == "cuda" else None

    # --- the plain reference loop
    torch.manual_seed(0)
    model = build_model(mcfg).to(device)
    if args.compile:
        model = torch.compile(model)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1, fused=device.type == "cuda")
    files = TokenFiles(tok_dir, "train")
    rng = np.random.default_rng(0)
    n_win = (len(files) - 1) // args.seq_len
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.steps):  # reading the batch is timed, as it is in ours
        b = np.stack([files.slice(w * args.seq_len, w * args.seq_len + args.seq_len + 1)
                      for w in rng.integers(0, n_win, args.micro)])
        x = torch.from_numpy(b).to(device)
        with torch.autocast(device.type, dtype=amp) if amp else torch.autocast("cpu", enabled=False):
            logits = model(input_ids=x[:, :-1]).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    loss.item()
    if device.type == "cuda":
        torch.cuda.synchronize()
    plain_s = time.perf_counter() - t0
    tokens = args.steps * args.micro * args.seq_len
    plain = tokens / plain_s
    del model, opt

    # --- ours
    with tempfile.TemporaryDirectory() as tmp:
        Trainer(cfg, tmp, log=lambda *_: None).run()
        lines = [json.loads(x) for x in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
        last = [x for x in lines if x["type"] == "train"][-1]
        ours = last["tokens"] / last["compute_s"]

    print(f"trainer on {dev_name}: {args.preset}, seq {args.seq_len}, micro-batch {args.micro}, {args.steps} steps, "
          f"{'bf16 autocast' if amp else 'fp32'}{', compiled' if args.compile else ''}")
    print(f"  plain loop: {plain:,.0f} tokens/s")
    print(f"  ours:       {ours:,.0f} tokens/s   ratio ours/plain {ours / plain:.2f}")
    if peak:
        print(f"  MFU (peak {peak:g} TFLOPS bf16, {fpt / 1e6:.1f} MFLOP/token): plain {fpt * plain / (peak * 1e12):.1%}, "
              f"ours {fpt * ours / (peak * 1e12):.1%}")
    else:
        print(f"  MFU: n/a (no peak for {dev_name}; {fpt / 1e6:.1f} MFLOP/token -> ours {fpt * ours / 1e9:.1f} GFLOP/s)")


if __name__ == "__main__":
    main()
