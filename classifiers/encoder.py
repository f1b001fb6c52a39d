"""The classifier's text encoder: a sentence-transformers model run with our own batching.

sentence-transformers loads any encoder (its own folders, or a plain HF encoder with mean pooling)
and knows its pooling; what it does not do is what a corpus-scale scorer needs: batches capped by
*padded tokens* rather than a fixed count (long and short documents both fill the device), several
windows per document (averaged), bf16 autocast (on a GPU or a CPU with native bf16), and gradients
for fine-tuning. So the modules are called directly here on batches we build.
"""

from __future__ import annotations

import numpy as np

from pipeline.embed import resolve_encoder
from pipeline.errors import UserError


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class TextEncoder:
    def __init__(self, model: str, device: str = "auto", max_length: int | None = None, windows: int = 1,
                 batch_tokens: int | None = None, max_batch: int = 512, dtype: str = "auto"):
        import torch
        from sentence_transformers import SentenceTransformer

        from pipeline.devices import auto_dtype
        from pipeline.logs import quiet_hf

        quiet_hf()
        self.device = pick_device(device)
        try:
            self.st = SentenceTransformer(resolve_encoder(model), device=self.device)
        except OSError as e:
            raise UserError(f"classifier encoder {model!r}: cannot load it ({str(e).splitlines()[0]})") from None
        self.tokenizer = self.st.tokenizer
        limit = self.st.max_seq_length or self.tokenizer.model_max_length
        self.max_length = min(max_length or limit, self.tokenizer.model_max_length)
        # None: by device. On CPU small batches are fastest (bench/bench_classify.py: 4,096 padded tokens scored
        # 1.28x the docs/s of 32,768 with MiniLM on 2 cores); a GPU wants them large (not measured)
        batch_tokens = batch_tokens or (4096 if self.device == "cpu" else 32768)
        self.windows, self.batch_tokens, self.max_batch = windows, batch_tokens, max_batch
        self.dim = self.st.get_embedding_dimension()
        # the special tokens the tokenizer puts around a text ([CLS] ... [SEP], <s> ... </s>, ...)
        body = self.tokenizer("a", add_special_tokens=False)["input_ids"]
        full = self.tokenizer("a")["input_ids"]
        at = next(i for i in range(len(full)) if full[i : i + len(body)] == body)
        self.prefix, self.suffix = full[:at], full[at + len(body) :]
        self.special = len(self.prefix) + len(self.suffix)
        # bf16 autocast (matmuls in bf16, norms and softmax in fp32) on a GPU and on a CPU with native bf16:
        # MiniLM ~2x faster there (bench/RESULTS.md); the weights and the embeddings stay float32
        if dtype == "auto":
            dtype = auto_dtype(self.device)
            if self.device.startswith("cuda") and not torch.cuda.is_bf16_supported():
                dtype = "float32"
        if dtype not in ("float32", "bfloat16"):
            raise UserError(f"classifier dtype {dtype!r}: auto, float32 or bfloat16")
        self.dtype, self.autocast = dtype, dtype == "bfloat16"

    # ------------------------------------------------------------ tokenisation and batching

    def windows_of(self, texts: list[str]) -> tuple[list[list[int]], np.ndarray]:
        """Token windows (special tokens included) and, per window, the index of its document."""
        body = self.max_length - self.special
        # a bound on the characters worth tokenising: nobody reads beyond the last window
        cut = [t[: self.windows * body * 12] for t in texts]
        enc = self.tokenizer(cut, add_special_tokens=False, truncation=True, max_length=self.windows * body)["input_ids"]
        wins, owner = [], []
        for i, ids in enumerate(enc):
            pieces = [ids[k : k + body] for k in range(0, len(ids), body)] or [[]]
            for p in pieces[: self.windows]:
                wins.append(self.prefix + p + self.suffix)
                owner.append(i)
        return wins, np.asarray(owner)

    def batches(self, wins: list[list[int]]) -> list[list[int]]:
        """Indices of windows grouped longest first, each batch within ``batch_tokens`` padded tokens."""
        order = sorted(range(len(wins)), key=lambda i: -len(wins[i]))
        out, cur, width = [], [], 0
        for i in order:
            w = max(width, len(wins[i]))
            if cur and (w * (len(cur) + 1) > self.batch_tokens or len(cur) >= self.max_batch):
                out.append(cur)
                cur, w = [], len(wins[i])
            cur.append(i)
            width = w
        if cur:
            out.append(cur)
        return out

    def _features(self, seqs: list[list[int]]) -> dict:
        padded = self.tokenizer.pad({"input_ids": seqs}, return_tensors="pt")
        return {k: v.to(self.device) for k, v in padded.items() if k in ("input_ids", "attention_mask", "token_type_ids")}

    def forward(self, seqs: list[list[int]]):
        """Sentence embeddings of a batch of windows (a tensor; gradients flow when enabled)."""
        import torch

        with torch.autocast(self.device.split(":")[0], dtype=torch.bfloat16, enabled=self.autocast):
            return self.st(self._features(seqs))["sentence_embedding"].float()

    def embed_windows(self, wins: list[list[int]], owner: np.ndarray, n_docs: int):
        """Document embeddings as a tensor with gradients (fine-tuning): windows averaged."""
        import torch

        emb = self.forward(wins)
        idx = torch.as_tensor(owner, device=emb.device)
        out = torch.zeros(n_docs, emb.shape[1], device=emb.device).index_add_(0, idx, emb)
        counts = torch.bincount(idx, minlength=n_docs).clamp(min=1).unsqueeze(1)
        return out / counts

    def encode(self, texts: list[str]) -> np.ndarray:
        """Document embeddings (float32, n x dim), windows averaged, no gradients."""
        import torch

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        wins, owner = self.windows_of(texts)
        emb = np.zeros((len(wins), self.dim), dtype=np.float32)
        self.st.eval()
        with torch.inference_mode():
            for batch in self.batches(wins):
                emb[batch] = self.forward([wins[i] for i in batch]).cpu().numpy()
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        np.add.at(out, owner, emb)
        out /= np.maximum(np.bincount(owner, minlength=len(texts)), 1)[:, None]
        return out
