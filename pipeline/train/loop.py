"""The training loop: one llama-style model, a fixed token budget, exact resume.

Single process on CPU or one GPU; several GPUs under ``torchrun`` with DDP, or FSDP (PyTorch's
``fully_shard``) from 1B parameters, where sharding the optimizer state pays for its communication.
A checkpoint holds the model, optimizer, scheduler, the data position and RNG states; a rerun
continues from the newest one and produces the same losses as a run that was never stopped.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from pipeline.config import Strict
from pipeline.errors import UserError
from pipeline.stages import Option, Stage
from pipeline.train import evaluate as ev
from pipeline.train.data import Mixture, PackedSource, TokenFiles, validation_batches
from pipeline.train.model import (
    build_model,
    count_params,
    device_peak_tflops,
    flops_per_token,
    llama_config,
)
from pipeline.train.tokenize import TrainDataset, dataset_name, is_tokenized, load_tokenizer, tokenize


class TrainConfig(Strict):
    """``synthweb train``: a llama-style model on packed token shards, with a fixed token budget."""

    NOT_IDENTITY: ClassVar[tuple[str, ...]] = ("cost_per_gpu_hour",)

    datasets: list[TrainDataset] = []
    preset: Literal["tiny", "60m", "135m", "360m", "1.7b"] = "tiny"
    model: dict[str, Any] = {}  # LlamaConfig fields over the preset's, e.g. {num_hidden_layers: 4}
    tie_embeddings: bool = True
    seq_len: int = Field(default=256, ge=8)
    micro_batch_size: int = Field(default=8, ge=1)  # sequences per device per forward pass
    grad_accum: int = Field(default=1, ge=1)
    tokens: int = Field(default=1_000_000, ge=1)  # the budget: steps = tokens / (micro x accum x devices x seq_len)
    lr: float = Field(default=3e-3, gt=0)
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1)
    schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    warmup_steps: int = Field(default=20, ge=0)
    decay_fraction: float = Field(default=0.2, gt=0, le=1)  # wsd: the last share of steps decays linearly
    weight_decay: float = Field(default=0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = Field(default=1.0, ge=0)  # 0: off
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    compile: bool = False  # torch.compile the model
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    distributed: Literal["auto", "ddp", "fsdp"] = "auto"  # under torchrun; auto: FSDP from 1B parameters
    device: str = "auto"
    seed: int = 0
    threads: int | None = Field(default=None, ge=1)  # CPU threads (default: torch's)
    log_every: int = Field(default=10, ge=1)
    eval_every: int | None = Field(default=None, ge=1)  # steps between evaluations (curves); always one at the end
    checkpoint_every: int = Field(default=200, ge=1)
    keep_checkpoints: int = Field(default=2, ge=1)
    stop_after_steps: int | None = Field(default=None, ge=1)  # end this job after N steps, checkpointed (time-limited jobs)
    cost_per_gpu_hour: float = Field(default=0.0, ge=0)  # for cost and loss per dollar
    peak_tflops: float | None = Field(default=None, gt=0)  # per device, for MFU; default: the device table
    tensorboard: bool = True

    @model_validator(mode="after")
    def _budget(self) -> "TrainConfig":
        per_step = self.micro_batch_size * self.grad_accum * self.seq_len
        if self.tokens < per_step:
            raise ValueError(f"train.tokens={self.tokens:,} is smaller than one optimizer step "
                             f"({self.micro_batch_size} x {self.grad_accum} x {self.seq_len} = {per_step:,} tokens per device)")
        return self


class EvalConfig(Strict):
    """Validation loss on held-out tokens and zero-shot cloze accuracy on benchmark files."""

    tasks: list[str] = []  # benchmark files or folders of them (llm-foundry JSONL layouts, HellaSwag .txt.bz2)
    max_samples: int | None = Field(default=1000, ge=1)  # per task (the first N items)
    batch_size: int = Field(default=32, ge=1)  # sequences per forward pass
    val_batches: int = Field(default=20, ge=1)  # validation loss over this many held-out batches


# train settings that change what is trained (the rest - cadence, logging, cost - may change on resume)
_NOT_FINGERPRINTED = {"stop_after_steps", "log_every", "checkpoint_every", "keep_checkpoints", "tensorboard",
                      "cost_per_gpu_hour", "peak_tflops", "threads", "device"}


def lr_lambda(tc, total_steps: int):
    """Multiplier of train.lr at a step: linear warmup, then cosine to min_lr_ratio, WSD or constant."""
    warm = min(tc.warmup_steps, max(total_steps - 1, 0))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if tc.schedule == "constant":
            return 1.0
        if tc.schedule == "cosine":
            t = (step - warm) / max(1, total_steps - warm)
            return tc.min_lr_ratio + (1 - tc.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
        decay_start = total_steps - max(1, int(round(tc.decay_fraction * total_steps)))
        if step < decay_start:
            return 1.0
        t = (step - decay_start + 1) / max(1, total_steps - decay_start)
        return 1.0 - (1 - tc.min_lr_ratio) * min(t, 1.0)

    return f


def prepare_datasets(cfg, output: Path, datasets=None) -> list[tuple[str, Path, dict, float]]:
    """Tokenize what is not tokenized yet (under OUTPUT/tokens/<name>); (name, folder, manifest, weight)."""
    datasets = datasets if datasets is not None else cfg.train.datasets
    if not datasets:
        raise UserError("train.datasets is empty: name at least one dataset (Parquet/JSONL shards or a tokenized "
                        "folder), e.g. --input output/filter/filtered/kept")
    out = []
    for d in datasets:
        name = dataset_name(d)
        if is_tokenized(d.path):
            folder = Path(d.path)
            manifest = json.loads((folder / "tokens.json").read_text())
        else:
            folder = output / "tokens" / name
            manifest = tokenize(cfg, d, folder)
        out.append((name, folder, manifest, d.weight))
    tokenizers = {m["tokenizer"] for _, _, m, _ in out}
    if len(tokenizers) > 1:
        raise UserError(f"train.datasets were tokenized with different tokenizers: {sorted(tokenizers)}")
    return out


class Trainer:
    def __init__(self, cfg, output: str | Path, force: bool = False, datasets=None, log=print,
                 extra_val: dict[str, Path] | None = None):
        """``extra_val``: more tokenized folders whose held-out tokens are evaluated (ablations)."""
        self.cfg, self.tc, self.out = cfg, cfg.train, Path(output)
        self.extra_val = extra_val or {}
        self.force, self._log = force, log
        self._datasets_override = datasets
        self._stop_signal = False

    def log(self, msg: str) -> None:
        if int(os.environ.get("RANK", "0")) == 0:  # one voice per job under torchrun
            self._log(msg)

    # ------------------------------------------------------------ setup

    def _dist(self):
        import torch
        import torch.distributed as dist

        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        want = self.tc.device
        if want == "auto":
            want = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
        elif want == "cuda" and self.world > 1:
            want = f"cuda:{local}"
        self.device = torch.device(want)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        if self.tc.threads:
            torch.set_num_threads(self.tc.threads)

    def _barrier(self):
        import torch.distributed as dist

        if self.world > 1:
            dist.barrier()

    def fingerprint(self, manifests) -> str:
        train = {k: v for k, v in self.tc.model_dump(mode="json").items() if k not in _NOT_FINGERPRINTED}
        data = {"train": train, "eval": self.cfg.eval.model_dump(mode="json"), "world": self.world,
                "data": [(n, m["fingerprint"], w) for n, _, m, w in manifests], "extra_val": sorted(self.extra_val)}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    # ------------------------------------------------------------ checkpoints

    def _ckpt_dir(self) -> Path:
        return self.out / "checkpoints"

    def _latest(self) -> Path | None:
        done = sorted(p for p in self._ckpt_dir().glob("step-*") if (p / "meta.json").is_file() and not p.name.endswith(".tmp"))
        return done[-1] if done else None

    def _save(self, step: int) -> None:
        import torch
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_sd, optim_sd = get_state_dict(self.model, self.optimizer, options=opts)
        if self.rank == 0:
            final = self._ckpt_dir() / f"step-{step:07d}"
            tmp = final.with_name(final.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            state = {
                "model": model_sd, "optimizer": optim_sd, "scheduler": self.scheduler.state_dict(),
                "rng": {"torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
            }
            torch.save(state, tmp / "state.pt")
            meta = {"step": step, "tokens": self.tokens_seen, "data": self.mixture.state(), "fingerprint": self.fp,
                    "compute_s": self.compute_s, "metrics_lines": self._metric_lines}
            (tmp / "meta.json").write_text(json.dumps(meta))
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            for old in sorted(p for p in self._ckpt_dir().glob("step-*") if not p.name.endswith(".tmp"))[:-self.tc.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        self._barrier()

    def _load(self, path: Path) -> int:
        import torch
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_state_dict,
        )

        meta = json.loads((path / "meta.json").read_text())
        if meta["fingerprint"] != self.fp:
            raise UserError(f"{self.out} holds a run of other settings or data (checkpoint {path.name}); "
                            f"use another --output, or --force to start over")
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
        set_state_dict(self.model, self.optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                       options=StateDictOptions(full_state_dict=True))
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.mixture.load(meta["data"])
        self.tokens_seen, self.compute_s = meta["tokens"], meta["compute_s"]
        self._metric_lines = meta["metrics_lines"]
        if self.rank == 0:  # lines logged after this checkpoint are logged again by the resumed run
            mpath = self.out / "metrics.jsonl"
            lines = mpath.read_text().splitlines(keepends=True) if mpath.exists() else []
            mpath.write_text("".join(lines[:self._metric_lines]))
        return meta["step"]

    # ------------------------------------------------------------ logging

    def _emit(self, rec: dict) -> None:
        self._metric_lines += 1
        if self.rank != 0:
            return
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        if self.tb is not None:
            prefix = "eval" if rec.get("type") == "eval" else "train"
            for k, v in rec.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step", "tokens"):
                    self.tb.add_scalar(f"{prefix}/{k}", v, rec["tokens"])
                elif isinstance(v, dict):
                    for kk, vv in v.items():
                        if isinstance(vv, dict):  # a task's scores: its length-normalised accuracy
                            vv = vv.get("acc_norm")
                        if isinstance(vv, (int, float)) and not isinstance(vv, bool):
                            self.tb.add_scalar(f"{prefix}/{k}/{kk}", vv, rec["tokens"])

    # ------------------------------------------------------------ evaluation

    def _autocast(self):
        import torch

        if self.amp_dtype is None:
            return None
        return lambda: torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _summed_loss(self, model, b, ac) -> float:
        """Summed next-token loss of a batch; the vocabulary projection a few rows at a time, so the
        logits never exist for the whole batch (32 x 2048 x 49152 floats would be 13 GB)."""
        import torch.nn.functional as F

        with ac() if ac else nullcontext():
            if self.fsdp:
                logits = model(input_ids=b[:, :-1]).logits
                return F.cross_entropy(logits.float().flatten(0, 1), b[:, 1:].flatten(), reduction="sum").item()
            hidden = model.model(input_ids=b[:, :-1]).last_hidden_state
        total = 0.0
        for r in range(0, b.size(0), 4):
            with ac() if ac else nullcontext():
                logits = model.lm_head(hidden[r:r + 4])
            total += F.cross_entropy(logits.float().flatten(0, 1), b[r:r + 4, 1:].flatten(), reduction="sum").item()
        return total

    def evaluate(self) -> dict:
        import torch

        model = self.eval_model
        model.eval()
        self._eval_t0 = time.perf_counter()
        val, total, n_tok = {}, 0.0, 0
        ac = self._autocast()
        with torch.no_grad():
            for name, files in self.val_files.items():
                loss_sum, count = 0.0, 0
                for batch in validation_batches(files, self.tc.seq_len, self.cfg.eval.batch_size, self.cfg.eval.val_batches):
                    b = torch.from_numpy(batch).to(self.device)
                    loss_sum += self._summed_loss(model, b, ac)
                    count += b[:, 1:].numel()
                if count:
                    val[name] = loss_sum / count
                    if name in self.own:
                        total, n_tok = total + loss_sum, n_tok + count
        t0 = time.perf_counter()
        val_s = t0 - self._eval_t0
        tasks = {name: ev.evaluate_task(model, self.tokenizer, items, self.device, self.tc.seq_len,
                                        self.cfg.eval.batch_size, ac, split_head=not self.fsdp)
                 for name, items in self.tasks.items()}
        model.train()
        return {"val_loss": (total / n_tok) if n_tok else None, "val_loss_by_dataset": val, "tasks": tasks,
                "eval_s": {"validation": round(val_s, 2), "tasks": round(time.perf_counter() - t0, 2)}}

    # ------------------------------------------------------------ the run

    def run(self) -> dict:
        import torch
        import torch.nn.functional as F

        self._dist()
        if self.force and self.rank == 0 and self.out.exists():
            for name in ("checkpoints", "metrics.jsonl", "eval.json", "model", "tensorboard", "run.json", "tokens"):
                p = self.out / name
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        self.out.mkdir(parents=True, exist_ok=True)
        if self.rank == 0:
            datasets = prepare_datasets(self.cfg, self.out, self._datasets_override)
        self._barrier()
        if self.rank != 0:
            datasets = prepare_datasets(self.cfg, self.out, self._datasets_override)
        tc = self.tc
        self.fp = self.fingerprint(datasets)
        done = self.out / "eval.json"
        if done.is_file():
            result = json.loads(done.read_text())
            if result.get("fingerprint") == self.fp:
                self.log(f"train: {self.out} is complete (eval.json); --force to train again")
                return result

        manifest = datasets[0][2]
        self.tokenizer = load_tokenizer(manifest["tokenizer"])
        self.tasks = {name: ev.load_task(path, self.cfg.eval.max_samples) for name, path in ev.task_files(self.cfg.eval.tasks).items()}
        sources = [PackedSource(TokenFiles(folder, "train"), tc.seq_len, seed=tc.seed * 1000 + i, name=name)
                   for i, (name, folder, _m, _w) in enumerate(datasets)]
        self.mixture = Mixture(sources, [w for *_, w in datasets])
        folders = {name: folder for name, folder, _m, _w in datasets} | dict(self.extra_val)
        self.val_files = {}
        for name, folder in folders.items():
            f = TokenFiles(folder, "val")
            if len(f) > 16:
                self.val_files[name] = f
            else:
                self.log(f"train: {name} has {len(f)} held-out tokens, too few for a validation loss; "
                         f"raise tokenize.validation_fraction")
        self.own = [name for name, *_ in datasets]

        per_step = tc.micro_batch_size * tc.grad_accum * self.world * tc.seq_len
        total_steps = tc.tokens // per_step
        if total_steps < 1:
            raise UserError(f"train.tokens={tc.tokens:,} is smaller than one step on {self.world} devices ({per_step:,} tokens)")

        mcfg = llama_config(tc.preset, manifest["vocab_size"], tc.seq_len, tc.model, tc.tie_embeddings,
                            tc.attn_implementation, manifest["eos_id"], manifest["eos_id"])
        torch.manual_seed(tc.seed)
        model = build_model(mcfg).to(self.device)
        params = count_params(mcfg)
        self.amp_dtype = None
        if tc.dtype == "bfloat16" or (tc.dtype == "auto" and self.device.type == "cuda"):
            self.amp_dtype = torch.bfloat16
        distributed = tc.distributed
        if distributed == "auto":
            distributed = "fsdp" if params["total"] >= 1e9 else "ddp"
        self.eval_model = model
        self.fsdp = self.world > 1 and distributed == "fsdp"
        if self.fsdp:
            from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

            mp = MixedPrecisionPolicy(param_dtype=self.amp_dtype or torch.float32, reduce_dtype=torch.float32)
            for layer in model.model.layers:
                fully_shard(layer, mp_policy=mp)
            fully_shard(model, mp_policy=mp)
        decay = [p for p in model.parameters() if p.ndim >= 2]
        no_decay = [p for p in model.parameters() if p.ndim < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": tc.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=tc.lr, betas=tuple(tc.betas), fused=self.device.type == "cuda")
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(tc, total_steps))
        self.model = model
        train_model = model
        if tc.compile:
            train_model = torch.compile(model)
        if self.world > 1 and distributed == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            train_model = DistributedDataParallel(train_model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

        self.tokens_seen, self.compute_s, self._metric_lines, start = 0, 0.0, 0, 0
        latest = self._latest()
        if latest is not None:
            start = self._load(latest)
            self.log(f"train: resuming from {latest.name} ({self.tokens_seen:,} tokens)")
        elif self.rank == 0:
            (self.out / "metrics.jsonl").write_text("")
        self.tb = None
        if tc.tensorboard and self.rank == 0:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.out / "tensorboard"), purge_step=self.tokens_seen or None)

        dev_name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        peak = tc.peak_tflops or (device_peak_tflops(dev_name) if self.device.type == "cuda" else None)
        fpt = flops_per_token(mcfg, tc.seq_len)
        run_info = {"preset": tc.preset, "params": params, "flops_per_token": fpt, "device": dev_name, "world_size": self.world,
                    "distributed": distributed if self.world > 1 else "none", "peak_tflops_per_device": peak,
                    "total_steps": total_steps, "tokens_per_step": per_step, "dtype": str(self.amp_dtype or "float32"),
                    "datasets": {n: {"folder": str(f), "tokens": m["tokens"], "weight": w} for n, f, m, w in datasets}}
        if self.rank == 0:
            (self.out / "run.json").write_text(json.dumps(run_info, indent=2))
        self.log(f"train: {tc.preset} ({params['total'] / 1e6:.1f}M parameters) on {dev_name} x{self.world}, "
                 f"{total_steps:,} steps of {per_step:,} tokens; output {self.out}")

        old_handler = None
        if self.rank == 0 or self.world == 1:
            def _on_term(signum, frame):
                self._stop_signal = True
            try:
                old_handler = signal.signal(signal.SIGTERM, _on_term)
            except ValueError:  # not the main thread
                old_handler = None
        eval_every = tc.eval_every
        train_model.train()
        window_tokens, window_t, stopped = 0, time.perf_counter(), False
        first_loss = None
        steps_this_run = 0
        mb = tc.micro_batch_size
        for step in range(start, total_steps):
            t0 = time.perf_counter()
            loss_acc = torch.zeros((), device=self.device)
            for micro in range(tc.grad_accum):
                batch = self.mixture.next_batch(mb * self.world)[self.rank * mb:(self.rank + 1) * mb]
                b = torch.from_numpy(batch).to(self.device, non_blocking=True)
                sync = nullcontext()
                if self.world > 1 and distributed == "ddp" and micro < tc.grad_accum - 1:
                    sync = train_model.no_sync()
                with sync:
                    with torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else nullcontext():
                        logits = train_model(input_ids=b[:, :-1]).logits
                    loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), b[:, 1:].reshape(-1))
                    (loss / tc.grad_accum).backward()
                loss_acc += loss.detach() / tc.grad_accum
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip if tc.grad_clip > 0 else float("inf"))
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.tokens_seen += per_step
            window_tokens += per_step
            steps_this_run += 1
            done_step = step + 1
            if self.world > 1:
                import torch.distributed as dist

                dist.all_reduce(loss_acc)  # a sum: gloo (CPU) has no AVG
                loss_acc /= self.world
            if done_step % tc.log_every == 0 or done_step in (1, total_steps):
                loss_v = loss_acc.item()  # syncs the device
                now = time.perf_counter()
                self.compute_s += now - window_t
                tok_s = window_tokens / max(now - window_t, 1e-9)
                first_loss = first_loss if first_loss is not None else loss_v
                gpu_h = self.compute_s / 3600 * self.world if self.device.type == "cuda" else 0.0
                cost = gpu_h * tc.cost_per_gpu_hour
                self._emit({"type": "train", "step": done_step, "tokens": self.tokens_seen, "loss": round(loss_v, 6),
                            "lr": self.scheduler.get_last_lr()[0], "grad_norm": round(float(grad_norm), 6),
                            "tokens_per_s": round(tok_s, 1), "step_s": round(now - t0, 4),
                            "mfu": round(fpt * tok_s / (peak * 1e12 * self.world), 4) if peak else None,
                            "compute_s": round(self.compute_s, 2), "gpu_hours": round(gpu_h, 6), "cost_usd": round(cost, 4),
                            "epochs": self.mixture.epochs()})
                window_tokens, window_t = 0, time.perf_counter()
            if eval_every and done_step % eval_every == 0 and done_step != total_steps:
                self.compute_s += time.perf_counter() - window_t
                r = self.evaluate()
                self._emit({"type": "eval", "step": done_step, "tokens": self.tokens_seen, **r})
                window_t = time.perf_counter()
            stop = tc.stop_after_steps is not None and steps_this_run >= tc.stop_after_steps and done_step < total_steps
            if self.world > 1:
                import torch.distributed as dist

                flag = torch.tensor(int(self._stop_signal), device=self.device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                self._stop_signal = bool(flag.item())
            if done_step % tc.checkpoint_every == 0 or done_step == total_steps or stop or self._stop_signal:
                self.compute_s += time.perf_counter() - window_t
                self._save(done_step)
                window_t = time.perf_counter()
            if stop or self._stop_signal:
                stopped = True
                break
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)
        if stopped:
            if self.tb:
                self.tb.close()
            why = "SIGTERM" if self._stop_signal else f"train.stop_after_steps={tc.stop_after_steps}"
            self.log(f"train: stopped after step {done_step:,} of {total_steps:,} ({why}); checkpoint saved, rerun to resume")
            return {"complete": False, "step": done_step, "total_steps": total_steps}

        r = self.evaluate()
        self._emit({"type": "eval", "step": total_steps, "tokens": self.tokens_seen, **r})
        if self.tb:
            self.tb.close()
        result = {"complete": True, "fingerprint": self.fp, "step": total_steps, "tokens": self.tokens_seen, **r,
                  "compute_s": round(self.compute_s, 2), "params": params, "device": dev_name, "world_size": self.world}
        gpu_h = self.compute_s / 3600 * self.world if self.device.type == "cuda" else 0.0
        cost = gpu_h * tc.cost_per_gpu_hour
        result["cost_usd"] = round(cost, 4)
        if cost > 0 and r["val_loss"] is not None and first_loss is not None:
            result["loss_drop_per_dollar"] = round((first_loss - r["val_loss"]) / cost, 4)
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
        )

        sd = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self.rank == 0:  # a plain transformers folder: AutoModelForCausalLM.from_pretrained loads it
            final = build_model(mcfg)
            final.load_state_dict(sd)
            final.save_pretrained(self.out / "model")
            tok_file = Path(manifest["tokenizer"])
            if tok_file.is_file():
                shutil.copy(tok_file, self.out / "model" / "tokenizer.json")
            from pipeline.io.writer import atomic_write_text

            atomic_write_text(done, json.dumps(result, indent=2))
        self._barrier()
        return result


def main(cfg, force: bool = False, progress: bool = True, input: str | None = None, output: str | None = None,
         text_column: str | None = None) -> dict:
    from pipeline.io.lock import output_lock
    from pipeline.train.tokenize import TrainDataset

    if input:  # one dataset instead of train.datasets
        cfg.train.datasets = [TrainDataset(path=input, text_column=text_column)]
    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 holds the folder for all of them
        return {**Trainer(cfg, output, force=force).run(), "output": str(output)}
    with output_lock(Path(output), "train"):
        return {**Trainer(cfg, output, force=force).run(), "output": str(output)}


def _lines(cfg, r: dict) -> list[str]:
    if not r.get("complete") or int(os.environ.get("RANK", "0")) != 0:
        return []
    val = f"{r['val_loss']:.4f}" if r.get("val_loss") is not None else "n/a (no held-out tokens)"
    return [f"train: {r['tokens']:,} tokens, validation loss {val}",
            *(f"  {name:<16} {t['metric']} {t['acc_norm']:.3f}  chance {t['chance']:.3f}  n={t['n']}"
              + ("  (at chance)" if t["at_chance"] else "") for name, t in r["tasks"].items()),
            f"wrote {r['output']}/metrics.jsonl, {r['output']}/eval.json, {r['output']}/model"]


STAGE = Stage(
    settings={"train": TrainConfig, "eval": EvalConfig},
    name="train", help="train a small llama-style model on token shards; checkpoints, metrics.jsonl, eval.json",
    description="Train the train.preset model on train.datasets (or --input) for train.tokens tokens, evaluate "
    "validation loss and zero-shot cloze accuracy on eval.tasks, and write OUTPUT/checkpoints, "
    "OUTPUT/metrics.jsonl, OUTPUT/tensorboard, OUTPUT/eval.json and OUTPUT/model. A rerun resumes from the "
    "newest checkpoint. Several GPUs: torchrun --nproc-per-node N -m pipeline.cli train ...",
    main=main, summary=_lines, io_in_config=False, progress=False,
    input_help="one dataset (shards or a tokenized folder) instead of train.datasets", output_help="the run folder",
    force_help="discard the run in --output and train from scratch",
    needs=("output",), required="train needs --output (the run folder: checkpoints, metrics.jsonl, eval.json, model/)",
    options=(Option(("--text-column",), "the text column of --input"),),
)
