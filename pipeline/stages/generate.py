"""``synthweb generate``: seeds -> topics + personas -> prompt matrix -> LLM -> synthetic texts.

Before the tasks start, a sample of seeds is embedded and clustered into LLM-named topics, and a
persona pool is built (file, text-to-persona, persona-to-persona, near-duplicates removed); both are
saved in the output folder and reused on a rerun. Then every task, for each seed: takes an extract
(``seed_extract_chars``, cut at a word boundary), assigns the nearest topic, draws audience x format
by the configured weights and maybe a persona and the topic (each with its probability) from a
random generator seeded by (run seed, seed id) — so the prompt set does not depend on task
sharding — renders the format's Jinja2 template, and generates through the engine layer. Outputs
are cleaned of stock openers, checked for length and written with full provenance; everything
dropped goes to ``removed/`` with its reason.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import random
import re
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from datatrove.data import Document
from pydantic import Field, ValidationError, field_validator

from pipeline.config import Config, Strict
from pipeline.errors import UserError
from pipeline.llm.config import LLMConfig, merge_llm
from pipeline.llm.engine import make_engine, sampling_for
from pipeline.llm.step import LLMStep, cpu_threads, default_cache_path
from pipeline.llm.types import Request, Result
from pipeline.prompts import load_yaml, template
from pipeline.stages import Call, Stage
from pipeline.stages.base import RunOnce, StageContext
from pipeline.stages.judge import JudgeConfig, check_judge
from pipeline.stages.personas import PersonasConfig
from pipeline.stages.topics import TopicsConfig

AUDIENCES = ("young_children", "middle_school", "high_school", "college", "researchers", "general_public")


FORMATS = ("summary_explained", "rewrite", "explanation", "textbook_narrative", "textbook_academic", "lecture_notes", "blog_post", "wikihow", "story", "qa")


class GenerateConfig(Strict):
    """``synthweb generate``: seeds -> topics + personas -> prompt matrix -> LLM -> synthetic texts."""

    num_prompts: int | None = Field(default=24, ge=1)  # seeds used (one prompt each); null: every seed
    prompts_per_seed: int = Field(default=1, ge=1, le=16)
    seed_extract_chars: int = Field(default=1000, ge=50)
    audiences: dict[str, float] = {"young_children": 1, "middle_school": 1, "high_school": 2, "college": 3,
                                   "researchers": 1, "general_public": 2}
    formats: dict[str, float] = {"textbook_narrative": 3, "textbook_academic": 2, "lecture_notes": 1,
                                 "blog_post": 1, "wikihow": 1, "story": 1, "qa": 1}
    min_tokens: int = Field(default=50, ge=0)  # shorter generations go to removed/ (too_short)
    # multi-teacher: a prompt none of whose answers passed the quality gate is asked again (new seeds) this
    # many times before it goes to removed/ (rejection sampling; the retries cost only failing prompts)
    retries: int = Field(default=1, ge=0, le=5)
    on_length: Literal["keep", "drop"] = "keep"  # finish_reason == length: keep (flagged) or drop
    strip_openers: bool = True
    max_tokens: int = Field(default=1024, ge=16)  # overrides llm.sampling.max_tokens for generation
    prompts_dir: str | None = None  # default: the repository's prompts/
    topics: TopicsConfig = TopicsConfig()
    personas: PersonasConfig = PersonasConfig()
    # multi-teacher: each prompt goes to every teacher (llm overrides + a name), the judge keeps the best
    teachers: list[dict[str, Any]] = []
    judge: JudgeConfig = JudgeConfig()

    @field_validator("teachers")
    @classmethod
    def _teachers(cls, v: list[dict]) -> list[dict]:
        names = []
        for i, t in enumerate(v):
            if not isinstance(t, dict) or not str(t.get("name") or "").strip():
                raise ValueError(f"teachers[{i}] needs a name, e.g. {{name: smol-1.7b, model: HuggingFaceTB/SmolLM2-1.7B-Instruct}}")
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", t["name"]):
                raise ValueError(f"teachers[{i}].name {t['name']!r}: use letters, digits, '.', '_' or '-'")
            try:
                merge_llm(LLMConfig(), {k: x for k, x in t.items() if k != "name"})
            except ValidationError as e:
                err = e.errors()[0]
                raise ValueError(f"teachers[{i}].{'.'.join(str(x) for x in err['loc'])}: {err['msg']}") from None
            names.append(t["name"])
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"two teachers are named {dup[0]!r}")
        if len(v) == 1:
            raise ValueError("one teacher is the llm section itself; name two or more, or none")
        return v

    @field_validator("audiences", "formats")
    @classmethod
    def _weights(cls, v: dict[str, float], info) -> dict[str, float]:
        allowed = AUDIENCES if info.field_name == "audiences" else FORMATS
        for name, w in v.items():
            if name not in allowed:
                close = difflib.get_close_matches(name, allowed, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"unknown {info.field_name[:-1]} {name!r} (known: {', '.join(allowed)}){hint}")
            if not isinstance(w, (int, float)) or w < 0:
                raise ValueError(f"weight of {name!r} must be a number >= 0")
        if not v or sum(v.values()) <= 0:
            raise ValueError(f"at least one {info.field_name[:-1]} needs a weight > 0")
        return v


GEN_FIELDS = [
    pa.field("prompt", pa.string()),
    pa.field("prompt_hash", pa.string()),
    pa.field("template", pa.string()),
    pa.field("seed_id", pa.string()),
    pa.field("seed_url", pa.string()),
    pa.field("seed_extract", pa.string()),
    pa.field("topic", pa.string()),
    pa.field("topic_distance", pa.float32()),
    pa.field("topic_in_prompt", pa.bool_()),
    pa.field("audience", pa.string()),
    pa.field("format", pa.string()),
    pa.field("persona", pa.string()),
    pa.field("model", pa.string()),
    pa.field("engine", pa.string()),
    pa.field("sampling", pa.string()),
    pa.field("prompt_tokens", pa.int32()),
    pa.field("completion_tokens", pa.int32()),
    pa.field("truncated_prompt", pa.bool_()),
    pa.field("teacher", pa.string()),  # multi-teacher: the teacher whose answer was kept (null with one model)
    pa.field("teacher_scores", pa.string()),  # JSON {teacher: the judge's score of its answer}
    pa.field("judge", pa.string()),
    pa.field("rejected_answers", pa.string()),  # JSON {teacher: reason}: answers that never reached the judge
    pa.field("attempt", pa.int16()),  # 0, or the retry whose answers were judged (generate.retries)
    pa.field("gate", pa.string()),  # JSON: the quality gate's measurements of the reply (pipeline/gate.py)
    pa.field("semantic", pa.string()),  # JSON: faithfulness to the seed extract, coherence, quality (pipeline/meaning.py)
    pa.field("trimmed_at_max_tokens", pa.bool_()),  # cut at max_tokens, trimmed back to its last full sentence
]
STAGE_FIELDS = GEN_FIELDS + [pa.field("text_token_length", pa.int32()), pa.field("finish_reason", pa.string())]
REMOVED_FIELDS = GEN_FIELDS + [
    pa.field("text_token_length", pa.int32()),
    pa.field("finish_reason", pa.string()),
    pa.field("filter_reason", pa.string()),
    pa.field("error_detail", pa.string()),
    pa.field("raw_reply", pa.string()),
]


def extract_of(text: str, n: int) -> str:
    """The first ~n characters, cut at the last sentence end (or space) before n."""
    text = text.strip()
    if len(text) <= n:
        return text
    cut = text[:n]
    end = max(cut.rfind(". "), cut.rfind(".\n"), cut.rfind("? "), cut.rfind("! "))
    if end > n * 0.6:
        return cut[: end + 1]
    space = cut.rfind(" ")
    return cut[: space if space > n * 0.6 else n].rstrip() + " ..."


def _weighted(rng: random.Random, weights: dict[str, float]) -> str:
    names = [k for k, w in weights.items() if w > 0]
    return rng.choices(names, weights=[weights[k] for k in names], k=1)[0]


class PromptBuilder:
    """Renders the prompt matrix; deterministic per (run seed, seed id, k)."""

    def __init__(self, cfg: Config, personas: list[str]):
        g = cfg.generate
        self.g, self.run_seed, self.personas = g, cfg.run.seed, personas
        matrix = load_yaml("generate", "matrix.yaml", g.prompts_dir)
        self.audiences, self.formats = matrix.get("audiences", {}), matrix.get("formats", {})
        for name in g.audiences:
            if name not in self.audiences:
                raise UserError(f"generate.audiences: {name!r} has no description in prompts/generate/matrix.yaml")
        for name in g.formats:
            if name not in self.formats:
                raise UserError(f"generate.formats: {name!r} has no entry in prompts/generate/matrix.yaml")
        self.templates = {f: template("generate", self.formats[f]["template"], g.prompts_dir)
                          for f, w in g.formats.items() if w > 0}
        self.openers = [re.compile(p, re.IGNORECASE) for p in matrix.get("openers", [])]

    def build(self, seed_id: str, extract: str, topic: str | None, k: int = 0) -> dict:
        rng = random.Random(f"{self.run_seed}:{seed_id}:{k}")
        audience = _weighted(rng, self.g.audiences)
        fmt = _weighted(rng, self.g.formats)
        with_topic = bool(topic) and rng.random() < self.g.topics.include_probability
        t = self.templates[fmt]
        with_topic = with_topic and "topic" in t.required + t.optional  # a rewrite keeps its text's own subject
        persona = None
        if self.personas and rng.random() < self.g.personas.include_probability:
            persona = self.personas[rng.randrange(len(self.personas))]
        a, f = self.audiences[audience], self.formats[fmt]
        prompt = t.render(seed_extract=extract, audience_description=a["description"], audience_style=a["style"],
                          format_instruction=f["instruction"], topic=topic if with_topic else None, persona=persona)
        return {"prompt": prompt, "prompt_hash": hashlib.sha256(prompt.encode()).hexdigest()[:16],
                "template": f"generate/{t.path.name}", "audience": audience, "format": fmt,
                "persona": persona, "topic_in_prompt": with_topic}

    def strip_openers(self, text: str) -> str:
        text = text.strip()
        for _ in range(3):  # "Sure! Here is ...: Title: ..." takes more than one pass
            before = text
            for p in self.openers:
                text = p.sub("", text, count=1).lstrip()
            if text == before:
                break
        return text


def teachers_of(cfg: Config) -> list[tuple[str, LLMConfig]]:
    """The named teachers of multi-teacher generation (empty: the llm section alone generates)."""
    return [(t["name"], merge_llm(cfg.llm, {k: v for k, v in t.items() if k != "name"})) for t in cfg.generate.teachers]


def _engine_key(c: LLMConfig) -> str:
    """What makes two configs the same loaded model (sampling travels with each request)."""
    d = c.model_dump()
    d.pop("sampling", None)
    return json.dumps(d, sort_keys=True)


class GenerateStep(LLMStep):
    name = "🤖 generate"

    def __init__(self, cfg: Config, output: str, failures=None, threads=None):
        self.teachers = teachers_of(cfg)
        super().__init__(self.teachers[0][1] if self.teachers else cfg.llm, cfg.run.seed, output, failures, threads)
        self.cfg = cfg
        self.output = output

    def _prepare_task(self) -> None:
        from pipeline.gate import QualityGate
        from pipeline.stages.personas import load_personas
        from pipeline.stages.topics import TopicModel

        out = Path(self.output)
        self.gate = QualityGate(self.cfg.quality_gate, self.cfg.encoder)
        self.builder = PromptBuilder(self.cfg, [p["persona"] for p in load_personas(out / "personas" / "personas.jsonl")])
        self.topics = TopicModel.load(out / "topics") if (out / "topics" / "topics.json").exists() else None
        self.encoder = None
        if self.topics is not None:
            from pipeline.embed import encoder_from

            e = self.cfg.encoder
            self.encoder = encoder_from(e)

    def run(self, data, rank: int = 0, world_size: int = 1):
        self._prepare_task()
        if not self.teachers:
            yield from super().run(data, rank, world_size)
            return
        # every teacher's engine (one per distinct model) and the judge live for the whole task
        self._engines: dict[str, object] = {}
        try:
            yield from super().run(data, rank, world_size)
        finally:
            for e in self._engines.values():
                e.close()

    def _engine_for(self, main, c: LLMConfig, tag: str):
        key = _engine_key(c)
        if key == _engine_key(self.llm):
            return main
        if key not in self._engines:
            self._engines[key] = make_engine(c, self.cache_path, Path(self.metrics_dir) / f"{self._rank:05d}-{tag}.json")
        return self._engines[key]

    def _flush(self, engine, chunk: list[Document]):
        prepared = list(self._prepared(engine, chunk))
        if self.teachers:
            yield from self._flush_teachers(engine, prepared)
        else:
            yield from super()._flush(engine, prepared)

    def _prepared(self, engine, chunk: list[Document]):
        g = self.cfg.generate
        self._engine = engine
        extracts = [extract_of(d.text, g.seed_extract_chars) for d in chunk]
        assigned = self.topics.assign(self.encoder.encode(extracts)) if self.topics else [(None, None)] * len(chunk)
        for doc, extract, (topic, dist) in zip(chunk, extracts, assigned):
            meta = doc.metadata
            seed_id, seed_url = str(doc.id), meta.get("url")
            if topic is not None and not topic.kept:
                self.stat_update("dropped")
                self.stat_update(f"dropped_topic_{topic.reason}")
                if self.failures is not None:
                    meta.update(seed_id=seed_id, seed_url=seed_url, seed_extract=extract, topic=topic.label,
                                topic_distance=dist, filter_reason=f"topic_{topic.reason}")
                    self.failures.write(Document(text=doc.text, id=seed_id, metadata=meta), rank=self._rank)
                continue
            for k in range(g.prompts_per_seed):
                p = self.builder.build(seed_id, extract, topic.label if topic else None, k)
                m = {"seed_id": seed_id, "seed_url": seed_url, "seed_extract": extract,
                     "topic": topic.label if topic else None, "topic_distance": dist, **p,
                     "history": meta.get("history"), "source": "synthweb/generate"}
                yield Document(text=p["prompt"], id=f"{seed_id}/g{k}", metadata=m)

    def request_for(self, doc: Document, teacher: tuple[str, LLMConfig] | None = None, attempt: int = 0) -> Request:
        return Request(self._rid(doc, teacher, attempt), [{"role": "user", "content": doc.metadata["prompt"]}],
                       self._sampling(doc, teacher, attempt))

    @staticmethod
    def _rid(doc: Document, teacher, attempt: int = 0) -> str:
        rid = str(doc.id) if teacher is None else f"{doc.id}/teacher/{teacher[0]}"
        return rid + (f"/retry{attempt}" if attempt else "")  # another id: another seed, another sample

    def _sampling(self, doc: Document, teacher: tuple[str, LLMConfig] | None = None, attempt: int = 0):
        llm = self.llm if teacher is None else teacher[1]
        return sampling_for(llm, self._rid(doc, teacher, attempt), self.run_seed, max_tokens=self.cfg.generate.max_tokens)

    def _common(self, doc: Document, res: Result, teacher: tuple[str, LLMConfig] | None = None, attempt: int = 0) -> None:
        doc.metadata.update(model=res.model, engine=res.engine, prompt_tokens=res.prompt_tokens,
                            truncated_prompt=res.truncated, attempt=attempt,
                            sampling=json.dumps(self._sampling(doc, teacher, attempt).as_dict()),
                            completion_tokens=res.completion_tokens)

    # ------------------------------------------------------------------ multi-teacher

    def _flush_teachers(self, engine, docs: list[Document]):
        """Every prompt to every teacher; the answers that pass the length checks are judged, the best
        is kept with its teacher named, and a prompt no teacher answered usably goes to removed/."""
        from pipeline.stages.judge import Judge

        if not docs:
            return
        if not hasattr(self, "_judge"):
            self._judge = Judge(self.cfg, lambda c: self._engine_for(engine, c, "judge"), self.run_seed)
        pending = []  # (doc, [(teacher, candidate Document)])
        failed: dict[str, tuple] = {}  # doc id -> (first failure, rejected answers), kept across attempts
        todo = docs
        for attempt in range(self.cfg.generate.retries + 1):
            if not todo:
                break
            if attempt:  # rejection sampling: a prompt with no passing answer is asked again, with new seeds
                self.stat_update("retried", value=len(todo))
            per_teacher = [self._engine_for(engine, t[1], f"teacher-{t[0]}").generate(
                [self.request_for(d, t, attempt) for d in todo]) for t in self.teachers]
            answered = []  # every usable answer of this attempt, gated in one batch
            for i, doc in enumerate(todo):
                for t, results in zip(self.teachers, per_teacher):
                    res = results[i]
                    if not res.error:
                        d = Document(text=doc.text, id=doc.id, metadata=dict(doc.metadata))
                        self._common(d, res, t, attempt)
                        answered.append(((i, t[0]), (d, res, t[0])))
            gated = dict(zip([key for key, _ in answered], self._candidates_batch([item for _, item in answered])))
            again = []
            for i, doc in enumerate(todo):
                if not attempt:
                    self.stat_update("requests")
                first_fail, rejected = failed.get(str(doc.id), (None, {}))
                cands = []
                for t, results in zip(self.teachers, per_teacher):
                    res = results[i]
                    self.stat_update(f"requests_{t[0]}")
                    if res.cached:
                        self.stat_update("cache_hits")
                    if res.error:
                        self.stat_update(f"teacher_failed_{res.error}")
                        first_fail = first_fail or (t, res, None, None)
                        rejected[t[0]] = f"llm_{res.error}"
                        continue
                    for new, reason, raw in gated[(i, t[0])]:
                        if reason:  # failed the gate or the length checks: the judge never sees it
                            self.stat_update(f"teacher_rejected_{reason}")
                            first_fail = first_fail or (t, res, new, reason)
                            rejected[t[0] + (f"/retry{attempt}" if attempt else "")] = reason
                        else:
                            new.metadata["teacher"] = t[0]
                            cands.append((t[0], new))
                if cands:
                    if attempt:
                        self.stat_update("rescued_by_retry")
                    for _, c in cands:
                        c.metadata["rejected_answers"] = json.dumps(rejected) if rejected else None
                    pending.append((doc, cands))
                    continue
                failed[str(doc.id)] = (first_fail, rejected)
                again.append(doc)
            todo = again
        for doc in todo:  # no passing answer after every attempt
            first_fail, rejected = failed[str(doc.id)]
            self.stat_update("dropped")
            t, res, new, reason = first_fail
            reason = reason or f"llm_{res.error}"
            self.stat_update(f"dropped_{reason}")
            if self.failures is not None:
                out = new if new is not None else self.failed(doc, res)
                out.metadata.update(filter_reason=reason, teacher=t[0], rejected_answers=json.dumps(rejected))
                if new is not None and new.metadata.get("gate_detail"):
                    out.metadata["error_detail"] = new.metadata.pop("gate_detail")
                if new is not None:
                    out.metadata["raw_reply"] = res.outputs[0].text if res.outputs else None
                self.failures.write(out, rank=self._rank)
        if not pending:
            return
        verdicts = self._judge.pick([(doc.metadata["prompt"], [c for _, c in cands]) for doc, cands in pending])
        for (doc, cands), (best, scores) in zip(pending, verdicts):
            if best < 0:
                self.stat_update("judge_failed")  # the first teacher's answer is kept, its scores left empty
                best = 0
            name, kept = cands[best]
            kept.metadata.update(teacher_scores=json.dumps({n: s for (n, _), s in zip(cands, scores)}),
                                 judge=self._judge.name)
            self.stat_update(f"won_{name}")
            if len(cands) > 1:
                self.stat_update("judged")
            if kept.metadata["finish_reason"] == "length":
                self.stat_update("kept_hit_max_tokens")
            self.update_doc_stats(kept)
            yield kept

    def _candidates(self, doc: Document, res: Result, teacher: str | None = None):
        return self._candidates_batch([(doc, res, teacher)])[0]

    def _candidates_batch(self, items: list[tuple[Document, Result, str | None]]) -> list[list[tuple]]:
        """Per (document, result, teacher): a (Document, reason or None, raw reply) per output, cleaned,
        through the quality gate in one batch (form one by one, meaning against the seed extract in one
        encoder call; a reply cut at max_tokens is trimmed to its last sentence), then the length checks."""
        g = self.cfg.generate
        flat = []  # (item, output index, output, cleaned text)
        for j, (doc, res, _) in enumerate(items):
            for k, out in enumerate(res.outputs):
                flat.append((j, k, out, self.builder.strip_openers(out.text) if g.strip_openers else out.text.strip()))
        verdicts = [None] * len(flat)
        if self.gate.enabled and flat:
            verdicts = self.gate.check_many(
                [f[3] for f in flat], sources=[items[f[0]][0].metadata.get("seed_extract") for f in flat],
                echo_sources=[items[f[0]][0].metadata["prompt"] for f in flat], finish_reasons=[f[2].finish_reason for f in flat])
        results: list[list[tuple]] = [[] for _ in items]
        for (j, k, out, text), v in zip(flat, verdicts):
            doc, res, teacher = items[j]
            meta = dict(doc.metadata, finish_reason=out.finish_reason, completion_tokens=out.completion_tokens)
            reason = None
            if v is not None:
                self._gate_stats(v, teacher)
                text = v.text
                meta.update(gate=v.record(), trimmed_at_max_tokens=v.trimmed,
                            semantic=json.dumps(v.semantic) if v.semantic else None)
                if not v.passed:
                    reason = v.reason
                    meta["gate_detail"] = v.detail()
            meta["text_token_length"] = self._tokens(text)
            new = Document(text=text, id=doc.id if len(res.outputs) == 1 else f"{doc.id}.{k}", metadata=meta)
            if reason:
                pass
            elif meta["text_token_length"] < g.min_tokens:
                reason = "too_short"
            elif out.finish_reason == "length" and g.on_length == "drop":
                reason = "hit_max_tokens"
            results[j].append((new, reason, out.text))
        return results

    def _gate_stats(self, v, teacher: str | None) -> None:
        from pipeline.gate import stat_keys

        for key, n in stat_keys(v, teacher):
            self.stat_update(key, value=n)

    def _tokens(self, text: str) -> int:
        tok = getattr(self._engine, "tokenizer", None)
        return len(tok(text, add_special_tokens=False)["input_ids"]) if tok is not None else len(text.split())

    def apply(self, doc: Document, res: Result) -> list[Document]:
        self._common(doc, res)
        kept = []
        for new, reason, raw in self._candidates(doc, res):
            if reason:
                self.stat_update("dropped")
                self.stat_update(f"dropped_{reason}")
                if self.failures is not None:
                    new.metadata.update(filter_reason=reason, raw_reply=raw,
                                        error_detail=new.metadata.pop("gate_detail", None))
                    self.failures.write(new, rank=self._rank)
                continue
            if new.metadata["finish_reason"] == "length":
                self.stat_update("kept_hit_max_tokens")
            kept.append(new)
        return kept

    def failed(self, doc: Document, res: Result) -> Document:
        self._common(doc, res)
        return super().failed(doc, res)


def win_rates(data_dir: Path) -> dict:
    """Multi-teacher: per teacher, prompts won (``won``), of which judged against another teacher's
    answer (``won_judged``; the rest had no rival: the others' answers were too short or failed), the
    win rate over the judged prompts, and the mean judge score of its answers."""
    import pyarrow.parquet as pq

    rows = [r for f in sorted(data_dir.glob("*.parquet"))
            for r in pq.read_table(f, columns=["teacher", "teacher_scores", "judge"]).to_pylist()]
    won: dict[str, int] = {}
    judged_won: dict[str, int] = {}
    scores: dict[str, list[float]] = {}
    judged = 0
    for r in rows:
        ts = json.loads(r["teacher_scores"] or "{}")
        for t, s in ts.items():
            won.setdefault(t, 0)
            if s is not None:
                scores.setdefault(t, []).append(s)
        if r["teacher"]:
            won[r["teacher"]] = won.get(r["teacher"], 0) + 1
            if len(ts) > 1 and any(v is not None for v in ts.values()):  # not a judge failure
                judged += 1
                judged_won[r["teacher"]] = judged_won.get(r["teacher"], 0) + 1
    return {"prompts": sum(won.values()), "judged": judged, "judge": next((r["judge"] for r in rows if r["judge"]), None),
            "by_teacher": {t: {"won": w, "won_judged": judged_won.get(t, 0),
                               "win_rate": round(judged_won.get(t, 0) / judged, 4) if judged else None,
                               "mean_judge_score": round(sum(scores[t]) / len(scores[t]), 4) if scores.get(t) else None}
                           for t, w in sorted(won.items(), key=lambda kv: -kv[1])}}


# ------------------------------------------------------------------ before the tasks: topics + personas


def _sample(ctx: StageContext, n: int) -> tuple[list[str], list[str]]:
    from pipeline.io.readers import make_reader

    reader = make_reader(ctx.plan, ctx.cfg.input.model_copy(update={"limit": n}))
    texts, ids = [], []
    for doc in reader.run(None, rank=0, world_size=1):
        if doc.text.strip():
            texts.append(doc.text)
            ids.append(str(doc.id))
    return texts, ids


def _stage_stats(cfg: Config) -> Path:
    """stats.json of the stage that wrote the input, when the input is a synthweb output."""
    src = Path(cfg.input.source)
    return (src.parent if src.name in ("data", "removed") else src) / "stats.json"


def check_seeds(cfg: Config) -> None:
    """Before anything loads: an input written by a seeds run that kept nothing is named as such."""
    stats = _stage_stats(cfg)
    if stats.exists():
        s = json.loads(stats.read_text())
        if s.get("complete") and s.get("records_out", 1) == 0:
            raise _no_seeds(cfg)


def _no_seeds(cfg: Config) -> UserError:
    stats = _stage_stats(cfg)
    why = ""
    if stats.exists():
        s = json.loads(stats.read_text())
        drops = ", ".join(f"{k} {v}" for k, v in s.get("dropped_by_reason", {}).items())
        why = f" (the {s.get('stage', 'previous')} stage kept {s.get('records_out', 0)} of {s.get('records_in', 0)}" \
              f" pages{'; dropped: ' + drops if drops else ''})"
    return UserError(f"no seeds to generate from in {cfg.input.source}{why}")


def check_prepare(ctx: StageContext) -> None:
    """What preparation needs, checked in the launching process before any job or model: templates and
    the prompt matrix, the judge, the persona file."""
    from pipeline.stages.personas import personas_from_file

    PromptBuilder(ctx.cfg, [])
    check_judge(ctx.cfg)
    personas_from_file(ctx.cfg)


def prepare(ctx: StageContext, printer=print) -> dict:
    """Topics and personas, built once per output folder (kept for the rerun and for the tasks). It
    loads the LLM and the encoder, so it runs as a job of its own (on Slurm, on a compute node)."""
    from pipeline.embed import encoder_from
    from pipeline.stages.personas import (
        build_personas,
        personas_from_file,
        save_personas,
    )
    from pipeline.stages.topics import build_topics

    cfg, out = ctx.cfg, ctx.output
    g = cfg.generate
    PromptBuilder(cfg, [])  # templates and matrix checked before any model is loaded
    check_judge(cfg)
    done = out / "_logs" / "prepare.json"
    if done.exists():
        return json.loads(done.read_text())
    from_file = personas_from_file(cfg)  # a bad persona file fails here, before any model is loaded
    need = max(g.topics.sample_size if g.topics.enabled else 0, g.personas.from_seeds if g.personas.enabled else 0, 1)
    texts, ids = _sample(ctx, need)
    if not texts:
        raise _no_seeds(cfg)
    info: dict = {"seeds_sampled": len(texts)}
    if not (g.topics.enabled or g.personas.enabled):
        return info
    e = cfg.encoder
    encoder = encoder_from(e)
    engine = make_engine(cfg.llm, default_cache_path(cfg.llm, str(out)), out / "_logs" / "llm" / "prepare.json")
    try:
        if g.topics.enabled:
            model = build_topics(cfg, texts, ids, engine, encoder, printer)
            model.save(out / "topics")
            kept = [t.label for t in model.topics if t.kept]
            info["topics"] = {"k": model.info["k"], "kept": len(kept), "dropped": len(model.topics) - len(kept),
                              "labels": kept, "warnings": model.info["warnings"]}
            printer(f"generate: {model.info['k']} topics from {len(texts)} seeds, {len(kept)} kept: {', '.join(kept[:12])}"
                    + (" ..." if len(kept) > 12 else ""))
        if g.personas.enabled:
            personas, pstats = build_personas(cfg, texts, ids, engine, encoder, from_file)
            save_personas(personas, out / "personas" / "personas.jsonl")
            info["personas"] = pstats
            printer(f"generate: {len(personas)} personas ({pstats['from_file']} from file, {pstats['from_seeds']} from "
                    f"seeds, {pstats['expanded']} expanded, {pstats['near_duplicates_removed']} near-duplicates removed)")
    finally:
        engine.close()
    from pipeline.io.writer import atomic_write_text

    atomic_write_text(done, json.dumps(info))
    return info


def build(ctx: StageContext) -> list:
    from pipeline.meaning import check_meaning

    if ctx.cfg.quality_gate.enabled or ctx.stage == "gate":
        check_meaning(ctx.cfg.quality_gate.meaning)
    from pipeline.io.readers import make_reader

    cfg = ctx.cfg
    g = cfg.generate
    check_prepare(ctx)
    if not (ctx.output / "_logs" / "prepare.json").exists():
        ctx.run_first([RunOnce(prepare, ctx.for_job())], ctx.output / "_logs" / "prepare", tasks=1, name="prepare")
    limit = g.num_prompts if cfg.input.limit is None else min(g.num_prompts or cfg.input.limit, cfg.input.limit)
    reader = make_reader(ctx.plan, cfg.input.model_copy(update={"limit": limit}))
    if limit and ctx.plan.total_hint:  # the progress bar's total
        ctx.plan.total_hint = min(ctx.plan.total_hint, limit)
    failures = ctx.writer("removed", "failures", REMOVED_FIELDS)
    return [
        ctx.task_start(), reader, ctx.progress(),
        GenerateStep(cfg, str(ctx.output), failures, cpu_threads(cfg)),
        ctx.writer("data", "main", STAGE_FIELDS),
    ]


def finish(cfg, stats: dict) -> dict:
    """What generate adds to stats.json once complete: diversity (the encoder), preparation, teachers'
    win rates, the audit. Run where the stage's work runs (run_stage's ``finish``)."""
    import json

    from pipeline.embed import encoder_from
    from pipeline.io.writer import atomic_write_text
    from pipeline.stages.audit import add_audit
    from pipeline.stages.diversity import report

    out = Path(cfg.run.output)
    changed = False
    if stats.get("complete") and "diversity" not in stats:
        stats["diversity"] = report(out / "data", encoder_from(cfg.encoder), seed=cfg.run.seed)
        prep = out / "_logs" / "prepare.json"
        if prep.exists():
            stats["prepare"] = json.loads(prep.read_text())
        changed = True
    if stats.get("complete") and cfg.generate.teachers and "teachers" not in stats:
        stats["teachers"] = win_rates(out / "data")
        changed = True
    if changed:
        atomic_write_text(out / "stats.json", json.dumps(stats, indent=2))
    return add_audit(cfg, stats)


def main(cfg, force: bool = False, progress: bool = True) -> dict:
    from pipeline.stages.base import run_stage

    check_seeds(cfg)
    check_judge(cfg)
    stats = run_stage("generate", cfg, build, force=force, progress=progress, finish=finish)
    if stats.get("complete") and stats.get("records_out", 0) == 0:
        raise UserError(f"generation produced no texts (see {cfg.run.output}/removed and stats.json for the reasons)")
    return stats


def summary(cfg, stats: dict) -> list[str]:
    from pipeline.stages.audit import audit_lines
    from pipeline.stages.summary import gate_lines

    lines = []
    if stats.get("teachers"):
        t = stats["teachers"]
        lines.append(f"teachers ({t['judge']}): judged {t['judged']} of {t['prompts']} prompts (the rest had one usable "
                     "answer); " + ", ".join(f"{n} won {v['won_judged']} ({v['win_rate']:.0%})" if v["win_rate"] is not None
                                             else f"{n} won 0 judged" for n, v in t["by_teacher"].items()))
    lines += gate_lines(stats) + audit_lines(stats)
    d = stats.get("diversity", {})
    if d.get("generations"):
        lines.append(f"diversity: {d['generations']} generations; audiences {d['by_audience']}; formats {d['by_format']}; "
                     + (f"top-20 openings share {d['top20_openings_share']:.0%}; " if d.get("top20_openings_share") is not None
                        else "openings not rated (< 300 texts); ") + f"near-duplicate rate {d['near_duplicate_rate']:.1%}"
                     + (f"; mean pairwise similarity {d['mean_pairwise_similarity']:.3f}" if "mean_pairwise_similarity" in d else ""))
    return lines + [f"wrote {cfg.run.output}"]


def _plan(run) -> list:
    extra = run.quality_scorer()
    j = run.cfg.generate.judge
    if run.cfg.generate.teachers and j.kind == "classifier" and not j.classifier:
        extra.append(f"generate.judge.classifier={run.out / 'classifier'}")
    return [Call(run.out / "seeds" / "data", run.out / "generate", extra)]


def card_lines(cfg: dict, st: dict, facts: dict) -> list[str]:
    """What the dataset card says of a generate run: its prompts and its teachers."""
    g = cfg.get("generate", {})
    lines = [f"- prompts: `prompts/generate/` templates; audiences {sorted(g.get('audiences', {}))}; "
             f"formats {sorted(g.get('formats', {}))}"]
    t = st.get("teachers")
    if t:
        wins = ", ".join(f"`{n}` {v['win_rate']:.0%}" for n, v in t["by_teacher"].items() if v.get("win_rate") is not None)
        names = ", ".join("`" + str(x.get("name")) + "`" for x in g.get("teachers", []))
        lines.append(f"- multi-teacher: each prompt went to {len(t['by_teacher'])} teachers "
                     f"({names}), the judge `{t['judge']}` kept "
                     f"the best; win rates over the {t.get('judged', t['prompts']):,} prompts with two or more usable "
                     "answers: " + wins + "; each row names its `teacher`")
    return lines


STAGE = Stage(
    settings={"generate": GenerateConfig},
    sections=("run", "input", "executor", "writer", "llm", "encoder", "generate", "quality_gate"), funnel="textbooks",
    subset="textbooks", llm=True, card=card_lines,
    name="generate", help="seeds -> topics + personas -> prompt matrix -> LLM -> synthetic textbooks",
    description="Cluster a sample of the seeds (--input: seeds shards, e.g. the data/ folder of a seeds run, or "
    "any readable input) into LLM-named topics, build a persona pool, then for each seed render a prompt from "
    "the audience x format matrix (prompts/generate/) and generate through the engine in the llm section. "
    "Writes OUTPUT/data (text with full provenance), OUTPUT/removed (with reasons), OUTPUT/topics, "
    "OUTPUT/personas and OUTPUT/stats.json with the diversity report.",
    main=main, summary=summary, input_help="seed documents (sets input.source)", plan=_plan,
)
