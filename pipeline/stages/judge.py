"""The judge of multi-teacher generation: given one prompt's answers from several teachers, which is best.

Three kinds. ``measures`` (default): the quality gate has already measured every answer's meaning
(faithfulness to the seed, coherence, a quality score when a classifier is configured); the best sum
wins, for free. ``llm``: the answers go into one judge prompt (prompts/judge/), labelled A, B, ... in a
seeded random order (small judges favour positions; the order is fixed per prompt, so a rerun judges
the same way), and the reply is constrained to one of the labels. ``classifier``: a filter classifier
(synthweb train-classifier) scores every answer and the highest score wins; cheap, and it ties the
teacher choice to the same quality notion the filter uses.
"""

from __future__ import annotations

import random
import string
from typing import Any, Literal

from datatrove.data import Document
from pydantic import Field, model_validator

from pipeline.config import Config, Strict
from pipeline.errors import UserError
from pipeline.llm.config import LLMConfig, merge_llm
from pipeline.llm.engine import sampling_for
from pipeline.llm.types import Request
from pipeline.prompts import template
from pipeline.stages.annotate import cut_text


class JudgeConfig(Strict):
    """Multi-teacher generation: who picks the best of the teachers' answers to one prompt."""

    # measures: the answer with the best faithfulness + coherence (+ quality score / 5) wins (the quality gate's
    # meaning measurements; bench/bench_gate.py measures how often the 135M LLM judge agrees with it);
    # llm: a judge prompt picks one; classifier: the highest score of a train-classifier folder
    kind: Literal["measures", "llm", "classifier"] = "measures"
    classifier: str | None = None  # kind classifier: a train-classifier folder (synthweb run fills in its own)
    llm: dict[str, Any] = {}  # kind llm: overrides of the llm section for the judge model
    template: str = "pick"  # prompts/judge/<template>.j2
    max_chars: int = Field(default=2500, ge=200)  # each candidate shown to the LLM judge, cut at a word boundary
    shuffle: bool = True  # candidates in a seeded random order per prompt (LLM judges favour positions)

    @model_validator(mode="after")
    def _check(self) -> "JudgeConfig":
        if self.kind == "llm":
            merge_llm(LLMConfig(), self.llm)
        return self


def check_judge(cfg: Config) -> None:
    """Before any model loads: a classifier judge without a usable classifier folder is named."""
    from pathlib import Path

    j = cfg.generate.judge
    if not cfg.generate.teachers:
        return
    if j.kind == "classifier":
        if not j.classifier:
            raise UserError("generate.judge.kind is classifier but generate.judge.classifier is not set "
                            "(a synthweb train-classifier folder)")
        if not (Path(j.classifier) / "config.json").exists():
            raise UserError(f"generate.judge.classifier: {j.classifier} is not a classifier folder (no config.json)")
    else:
        template("judge", j.template, cfg.generate.prompts_dir)


class Judge:
    def __init__(self, cfg: Config, engine_for, run_seed: int):
        self.j, self.run_seed = cfg.generate.judge, run_seed
        if self.j.kind == "measures":
            self.name = "measures"
            self.cfg = cfg
        elif self.j.kind == "classifier":
            from classifiers.model import Classifier

            self.clf = Classifier.load(self.j.classifier)
            self.name = f"classifier:{self.clf.name}"
        else:
            self.llm: LLMConfig = merge_llm(cfg.llm, self.j.llm)
            self.engine = engine_for(self.llm)
            self.tpl = template("judge", self.j.template, cfg.generate.prompts_dir)
            self.name = f"llm:{self.llm.model}"

    def pick(self, items: list[tuple[str, list[Document]]]) -> list[tuple[int, list[float | None]]]:
        """Per (prompt, candidates): the index of the best candidate (-1: the judge failed; the first
        is kept) and a score per candidate (measures: faithfulness + coherence (+ quality / 5); classifier:
        its score; llm: 1 for the pick, 0 otherwise)."""
        if self.j.kind == "measures":
            import json

            from pipeline.meaning import rank_score

            # answers the gate did not measure (the gate or its meaning checks off) are measured here
            todo = [c for _, cands in items for c in cands if not c.metadata.get("semantic")]
            if todo:
                from pipeline.meaning import Meaning

                if getattr(self, "_meaning", None) is None:  # once per task: the encoder and any scorer load once
                    self._meaning = Meaning(self.cfg.quality_gate.meaning, self.cfg.encoder)
                m = self._meaning
                for c, x in zip(todo, m.measure([c.text for c in todo], [c.metadata.get("seed_extract") for c in todo])):
                    c.metadata["semantic"] = json.dumps(x)
            out = []
            for _, cands in items:
                s = [round(rank_score(json.loads(c.metadata.get("semantic") or "null")), 4) for c in cands]
                s = [x if x != float("-inf") else None for x in s]
                ranked = [x if x is not None else float("-inf") for x in s]
                out.append((max(range(len(s)), key=ranked.__getitem__) if any(x is not None for x in s) else -1, s))
            return out
        if self.j.kind == "classifier":
            texts = [c.text for _, cands in items for c in cands]
            scores, _ = self.clf.score(texts)
            out, i = [], 0
            for _, cands in items:
                s = [round(float(x), 4) for x in scores[i:i + len(cands)]]
                i += len(cands)
                out.append((max(range(len(s)), key=s.__getitem__), s))
            return out
        return self._llm_pick(items)

    def _llm_pick(self, items):
        out: list = [None] * len(items)
        todo, requests, orders = [], [], []
        for k, (prompt, cands) in enumerate(items):
            if len(cands) == 1:
                out[k] = (0, [None])
                continue
            order = list(range(len(cands)))
            if self.j.shuffle:
                random.Random(f"{self.run_seed}:{cands[0].id}").shuffle(order)
            labels = list(string.ascii_uppercase[: len(cands)])
            shown = [{"label": lab, "text": cut_text(cands[o].text, self.j.max_chars)[0]} for lab, o in zip(labels, order)]
            rid = f"{cands[0].id}/judge"
            requests.append(Request(rid, [{"role": "user", "content": self.tpl.render(task=prompt, candidates=shown)}],
                                    sampling_for(self.llm, rid, self.run_seed, max_tokens=4, min_tokens=0),
                                    {"type": "choice", "choices": labels}))
            todo.append(k)
            orders.append((labels, order))
        for k, res, (labels, order) in zip(todo, self.engine.generate(requests) if requests else [], orders):
            n = len(order)
            reply = (res.outputs[0].parsed if res.outputs and res.outputs[0].parsed is not None
                     else (res.outputs[0].text.strip()[:1] if res.outputs else ""))
            if res.error or reply not in labels:
                out[k] = (-1, [None] * n)
                continue
            best = order[labels.index(reply)]
            out[k] = (best, [1.0 if i == best else 0.0 for i in range(n)])
        return out
