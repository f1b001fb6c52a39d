"""``synthweb report``: one self-contained HTML page for a run folder (``synthweb run``'s output).

Everything comes from what the stages wrote: stats.json (counts, drops by reason, LLM engine figures,
audit, diversity), the shards (scores, lengths, topics, teachers), the classifier's metrics.json,
dedup's removed rows (cluster sizes), decontamination's report.json and the ablation's results.json.
Plots are matplotlib PNGs inlined as base64, so the page opens anywhere, offline, as one file. A
section whose stage did not run says so instead of showing an empty plot.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from pipeline.errors import UserError
from pipeline.io.writer import atomic_write_text
from pipeline.stages import all_stages, funnel, refiners, subsets


def llm_datasets() -> list[str]:
    """The stages whose final dataset an LLM wrote (their audit and meaning sections)."""
    return [s.run_folder for s in all_stages() if s.llm and s.subset]


def _stats(folder: Path) -> dict | None:
    p = folder / "stats.json"
    return json.loads(p.read_text()) if p.exists() else None


def _column(folder: Path, name: str) -> list:
    vals: list = []
    for f in sorted(folder.glob("*.parquet")):
        if name in pq.read_schema(f).names:
            vals += pq.read_table(f, columns=[name]).column(name).to_pylist()
    return vals


LENGTH_SAMPLE = 20_000  # documents per dataset in the length plot: the report stays quick on a big run


def _word_counts(folder: Path, cap: int = LENGTH_SAMPLE) -> list[int]:
    """Words per document of the first ``cap`` documents, read in batches (never a whole text column)."""
    counts: list[int] = []
    for f in sorted(folder.glob("*.parquet")):
        for batch in pq.ParquetFile(f).iter_batches(columns=["text"], batch_size=1024):
            counts += [len((t or "").split()) for t in batch.column(0).to_pylist()]
            if len(counts) >= cap:
                return counts[:cap]
    return counts


def _sample_rows(folder: Path, n: int) -> list[dict]:
    """The first n rows of a folder's first shard (deterministic, cheap on a big run)."""
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        return []
    t = next(pq.ParquetFile(files[0]).iter_batches(batch_size=n), None)
    return t.to_pylist()[:n] if t is not None else []


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _img(b64: str, alt: str) -> str:
    return f'<img class="plot" alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        if isinstance(v, float) and v != v:
            return "n/a"
        if isinstance(v, float):
            return f"{v:,.3f}" if abs(v) < 100 else f"{v:,.0f}"
        if isinstance(v, int):
            return f"{v:,}"
        return html.escape("" if v is None else str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


class Report:
    def __init__(self, run: Path):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.plt, self.run = plt, run
        self.sections: list[tuple[str, str]] = []
        m = run / "run.json"
        self.manifest = json.loads(m.read_text()) if m.exists() else {}
        self.stats = {s: _stats(run / s) for s, _, _ in funnel()}
        self.plots = 0

    def add(self, title: str, body: str) -> None:
        self.sections.append((title, body))

    def fig(self, w: float = 8, h: float = 3.4):
        return self.plt.subplots(figsize=(w, h))

    def image(self, fig, alt: str) -> str:
        self.plots += 1
        return _img(_png(fig), alt)

    # ------------------------------------------------------------------ sections

    def funnel(self) -> None:
        # (table name, bar label, stats) of every finished stage, dedup/decontaminate once per dataset
        entries = [(stage, label, self.stats[stage]) for stage, label, _ in funnel() if self.stats.get(stage)]
        for stage in refiners():
            for sub in sorted((self.run / stage).glob("*/stats.json")):
                entries.append((f"{stage} ({sub.parent.name})", f"{stage} {sub.parent.name}", json.loads(sub.read_text())))
        if not entries:
            self.add("Funnel", "<p>No stage of this run has finished yet.</p>")
            return
        labels = [label for _, label, _ in entries]
        counts = [st.get("records_out", 0) for _, _, st in entries]
        if self.stats.get("seeds"):
            labels.insert(0, "web pages read")
            counts.insert(0, self.stats["seeds"]["records_in"])
        drops: Counter = Counter()
        rows = []
        for name, _, st in entries:
            reasons = dict(st.get("dropped_by_reason", {}))
            unexplained = st.get("removed", 0) - sum(reasons.values())
            if unexplained > 0:  # e.g. dedup's duplicates: removed rows without a counted reason
                reasons["removed"] = unexplained
            for k, v in reasons.items():
                drops[f"{name}: {k}"] += v
            rows.append([name, st.get("records_in", 0), st.get("records_out", 0), st.get("removed", 0),
                         ", ".join(f"{k} {v:,}" for k, v in list(reasons.items())[:6]) or "-"])
        fig, ax = self.fig(9, 0.45 * len(labels) + 1.2)
        y = list(range(len(labels)))[::-1]
        ax.barh(y, counts, color="#1f77b4")
        ax.set_yticks(y, labels)
        for yi, c in zip(y, counts):
            ax.text(c, yi, f" {c:,}", va="center", fontsize=8)
        ax.set_xlabel("documents")
        ax.set_title("documents after each stage")
        body = self.image(fig, "funnel")
        if drops:
            top = drops.most_common(15)[::-1]
            fig, ax = self.fig(9, 0.35 * len(top) + 1.2)
            ax.barh([k for k, _ in top], [v for _, v in top], color="#d62728")
            ax.set_xlabel("documents dropped")
            ax.set_title("drops by reason (top 15)")
            ax.tick_params(axis="y", labelsize=8)
            body += self.image(fig, "drops by reason")
        self.add("Funnel", body + _table(["stage", "in", "out", "removed", "dropped by reason"], rows))

    def scores(self) -> None:
        body = ""
        a = self.stats.get("annotate")
        c = self.stats.get("classify")
        if a:
            hist = a.get("annotation", {}).get("int_score_histogram") or dict(Counter(
                str(x) for x in _column(self.run / "annotate" / "data", "int_score")))
            fig, ax = self.fig(5, 3)
            ks = [str(k) for k in range(6)]
            ax.bar(ks, [hist.get(k, 0) for k in ks], color="#2ca02c")
            ax.set_xlabel("int_score (LLM annotator)")
            ax.set_ylabel("documents")
            ax.set_title(f"LLM annotation, {sum(hist.values()):,} documents")
            body += self.image(fig, "annotation scores")
        if c:
            sc = [x for x in _column(self.run / "classify" / "data", "score") if x is not None]
            if sc:
                fig, ax = self.fig(5, 3)
                ax.hist(sc, bins=30, color="#9467bd")
                if self.stats.get("filter"):
                    from pipeline.stages import load_config

                    try:
                        f = load_config(self.run / "filter" / "config.yaml").filter
                        if not f.bucket:  # int_score >= t is score >= t - 0.5 (int_score rounds the score)
                            cut = f.threshold - 0.5 if f.column == "int_score" else f.threshold
                            ax.axvline(cut, color="k", ls="--", lw=1, label=f"filter: {f.column} >= {f.threshold:g}")
                            ax.legend(fontsize=8)
                    except UserError:
                        pass
                ax.set_xlabel("classifier score")
                ax.set_ylabel("documents")
                ax.set_title(f"filter classifier, {len(sc):,} documents")
                body += self.image(fig, "classifier scores")
        mp = self.run / "classifier" / "metrics.json"
        if mp.exists():
            m = json.loads(mp.read_text())
            body += _table(["classifier", "evaluated on", "n", f"binary F1@{m.get('threshold')}", "precision", "recall",
                            "macro-F1", "accuracy"],
                           [[m.get("name", "classifier"), m.get("evaluated_on"), m.get("n_evaluated"), m.get("binary_f1"),
                             m.get("precision"), m.get("recall"), m.get("macro_f1"), m.get("accuracy")]])
            for w in m.get("warnings", []):
                body += f"<p class='warn'>{html.escape(str(w))}</p>"
        self.add("Scores", body or "<p>No annotation or classification in this run.</p>")

    def distributions(self) -> None:
        g = self.stats.get("generate")
        if not g:
            self.add("Topics, audiences, formats", "<p>No generation in this run.</p>")
            return
        data = self.run / "generate" / "data"
        body = ""
        fig, axes = self.plt.subplots(1, 3, figsize=(13, 3.8))
        for ax, col, colour in zip(axes, ("topic", "audience", "format"), ("#1f77b4", "#ff7f0e", "#2ca02c")):
            cnt = Counter(x or "(none)" for x in _column(data, col)).most_common(12)[::-1]
            ax.barh([k[:28] for k, _ in cnt], [v for _, v in cnt], color=colour)
            ax.set_title(f"{col}s")
            ax.tick_params(axis="y", labelsize=8)
        body += self.image(fig, "topic audience format")
        d = g.get("diversity", {})
        if d:
            rows = [["generations", d.get("generations")], ["with a persona", d.get("with_persona")],
                    ["top-20 openings share", d.get("top20_openings_share")],
                    ["near-duplicate rate", d.get("near_duplicate_rate")],
                    ["mean pairwise similarity", d.get("mean_pairwise_similarity")]]
            body += _table(["diversity", "value"], rows)
        body += self.teachers(data, g)
        self.add("Topics, audiences, formats", body)

    def teachers(self, data: Path, g: dict) -> str:
        from pipeline.stages.generate import win_rates

        w = win_rates(data)
        if not w["prompts"] or not any(v["won"] for v in w["by_teacher"].values()):
            return "<h3>Teachers</h3><p>One generator (no generate.teachers): no win rates.</p>"
        names = list(w["by_teacher"])
        fig, ax = self.fig(6, 0.5 * len(names) + 1.3)
        ax.barh(names, [w["by_teacher"][n]["win_rate"] or 0 for n in names], color="#17becf")
        ax.set_xlim(0, 1)
        ax.set_xlabel("share of judged prompts whose kept answer is this teacher's")
        ax.set_title(f"teacher win rates ({w['judged']:,} judged prompts, judge {w['judge']})")
        failed = sum(int(v.get("judge_failed", 0)) for v in g.get("steps", {}).values())
        rows = [[n, v["won_judged"], v["win_rate"], v["won"] - v["won_judged"], v["mean_judge_score"]]
                for n, v in w["by_teacher"].items()]
        return ("<h3>Teachers</h3>" + self.image(fig, "teacher win rates")
                + _table(["teacher", "judged prompts won", "win rate", "kept without a rival", "mean judge score"], rows)
                + f"<p>{w['prompts'] - w['judged']:,} of {w['prompts']:,} prompts had one usable answer (the other "
                  "teachers' were too short or failed) and were kept without judging.</p>"
                + (f"<p>The judge gave no usable verdict on {failed} prompts (the first teacher's answer was kept).</p>"
                   if failed else ""))

    def lengths(self) -> None:
        series = {}
        seeds = self.run / "seeds" / "data"
        if seeds.is_dir():
            series["web (seeds)"] = seeds
        for name, (stage, tag) in subsets().items():
            rel = f"{stage}/{tag}"
            if (self.run / rel).is_dir():
                series[name] = self.run / rel
        series = {k: _word_counts(v) for k, v in series.items()}
        series = {k: v for k, v in series.items() if v}
        if not series:
            self.add("Lengths", "<p>No shards yet.</p>")
            return
        import numpy as np

        fig, ax = self.fig(8, 3.4)
        hi = max(max(v) for v in series.values())
        bins = np.logspace(0, np.log10(max(hi, 10)) + 0.05, 30)
        for k, v in series.items():
            ax.hist([max(1, x) for x in v], bins=bins, alpha=0.5, label=f"{k} (n={len(v):,})")
        ax.set_xscale("log")
        ax.set_xlabel("words per document")
        ax.set_ylabel("documents")
        ax.legend(fontsize=8)
        ax.set_title("length distributions")
        rows = [[k, len(v), float(np.median(v)), float(np.mean(v))] for k, v in series.items()]
        self.add("Lengths", self.image(fig, "lengths") + _table(["dataset", "documents measured", "median words",
                                                                  "mean words"], rows)
                 + f"<p>At most the first {LENGTH_SAMPLE:,} documents of each dataset are measured.</p>")

    def dedup(self) -> None:
        subs = sorted((self.run / "dedup").glob("*/stats.json"))
        if not subs:
            self.add("Deduplication", "<p>No dedup in this run.</p>")
            return
        rows, sizes = [], Counter()
        for p in subs:
            s = json.loads(p.read_text())
            rows.append([p.parent.name, s.get("records_in", 0), s.get("records_out", 0), s.get("removed", 0)])
            for x in _column(p.parent / "removed", "minhash_cluster_size"):
                if x:
                    sizes[int(x)] += 1
        body = ""
        if sizes:
            fig, ax = self.fig(6, 3)
            ks = sorted(sizes)
            ax.bar([str(k) for k in ks], [sizes[k] for k in ks], color="#8c564b")
            ax.set_xlabel("cluster size (documents)")
            ax.set_ylabel("removed duplicates")
            ax.set_title("near-duplicate clusters")
            body += self.image(fig, "dedup clusters")
        else:
            body += "<p>No near-duplicate cluster: every document is kept.</p>"
        self.add("Deduplication", body + _table(["dataset", "in", "kept", "removed as duplicates"], rows))

    def contamination(self) -> None:
        reps = sorted((self.run / "decontaminate").glob("*/report.json"))
        if not reps:
            self.add("Contamination", "<p>No decontamination in this run (decontaminate.benchmarks is empty).</p>")
            return
        rows, hits = [], Counter()
        for p in reps:
            r = json.loads(p.read_text())
            for b, v in r["benchmarks"].items():
                rows.append([p.parent.name, b, v["hits"], v["unique_items"]])
                hits[b] += v["hits"]
        fig, ax = self.fig(7, 0.35 * max(len(hits), 1) + 1.3)
        names = sorted(hits)
        ax.barh(names, [hits[n] for n in names], color="#e377c2")
        ax.set_xlabel("documents containing an item")
        ax.set_title(f"contamination hits ({sum(hits.values()):,} documents)")
        self.add("Contamination", self.image(fig, "contamination") + _table(["dataset", "benchmark", "documents hit",
                                                                               "distinct items"], rows))

    def audit(self) -> None:
        rows = []
        for stage in llm_datasets():
            st = self.stats.get(stage) or {}
            if (st.get("audit") or {}).get("documents") or st.get("quality_gate"):
                rows.append((stage, st.get("audit") or {}, st.get("quality_gate") or {}))
        if not rows:
            self.add("Synthetic-text audit", "<p>No LLM-written text in this run.</p>")
            return
        import numpy as np

        body = ""
        # the gate on the raw replies: the share failing each check, per stage
        checks = sorted({k for _, _, g in rows for k in g.get("fail_share_by_check", {})})
        if checks:
            fig, ax = self.fig(8, 0.35 * len(checks) + 1.5)
            y = np.arange(len(checks))
            for i, (stage, _, g) in enumerate(rows):
                ax.barh(y + i * 0.38, [g.get("fail_share_by_check", {}).get(k, 0) for k in checks], 0.38,
                        label=f"{stage}: {g.get('passed', 0):,} of {g.get('checked', 0):,} passed")
            ax.set_yticks(y + 0.19 * (len(rows) - 1), checks)
            ax.set_xlim(0, 1)
            ax.set_xlabel("share of raw LLM replies failing the check")
            ax.set_title("quality gate on the raw replies")
            ax.legend(fontsize=8)
            body += self.image(fig, "quality gate")
        keys = [("proxy_phrase_doc_rate", "proxy phrases"), ("refusal_rate", "refusals"), ("loop_share", "loops"),
                ("mixed_script_share", "mixed script"), ("prompt_echo_share", "prompt echo"),
                ("hit_max_tokens_share", "hit max_tokens"), ("cut_mid_sentence_share", "ends mid-sentence"),
                ("gopher_fail_share", "fails Gopher")]

        def val(a: dict, k: str):
            v = a.get(k, (a.get("degeneration") or {}).get(k))
            return v

        fig, ax = self.fig(9, 3.2)
        x = np.arange(len(keys))
        for i, (stage, a, _) in enumerate(rows):
            ax.bar(x + i * 0.38, [val(a, k) or 0 for k, _ in keys], 0.38, label=f"{stage} (kept rows)")
        ax.set_xticks(x + 0.19 * (len(rows) - 1), [lab for _, lab in keys], rotation=20, fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_ylabel("share of documents")
        ax.legend(fontsize=8)
        ax.set_title("audit of the kept rows: synthetic-text signs and degeneration")
        body += self.image(fig, "audit")
        table = _table(["stage", "raw replies passing the gate", "kept documents", "mean words", "proxy-phrase docs",
                        "refusals", "loops", "mixed script", "prompt echo", "hit max_tokens", "mean top-4-gram share",
                        "top-20 openings"],
                       [[s, g.get("pass_rate"), a.get("documents"), a.get("mean_words"), a.get("proxy_phrase_doc_rate"),
                         a.get("refusal_rate"), val(a, "loop_share"), val(a, "mixed_script_share"),
                         val(a, "prompt_echo_share"), val(a, "hit_max_tokens_share"), val(a, "mean_top_4gram_share"),
                         a.get("top20_openings_share") if a.get("top20_openings_share") is not None else "n/a (too few)"]
                        for s, a, g in rows])
        notes = "".join(f"<p>{html.escape(s)}: {html.escape(a['openings_note'])}.</p>" for s, a, _ in rows
                        if a.get("openings_note"))
        self.add("Synthetic-text audit", body + table + notes)

    def meaning(self) -> None:
        """Is the LLM text about its source, does it hold together (the quality gate's meaning measurements,
        audit.meaning in stats.json): distributions per stage and teacher, the verdict, worst and best rows."""
        found = [(stage, (self.stats.get(stage) or {}).get("audit", {}).get("meaning") or {})
                 for stage in llm_datasets()]
        found = [(s, m) for s, m in found if m.get("rows")]
        if not found:
            self.add("Meaning", "<p>No meaning measurements in this run (quality_gate.meaning off, or no LLM text).</p>")
            return
        import numpy as np

        fig, ax = self.fig(8, 3)
        labels, data = [], []
        for stage, m in found:
            for key in ("faithfulness", "coherence"):
                d = m.get(key)
                if d:
                    labels.append(f"{stage}\n{key}")
                    data.append([d["p10"], d["median"], d["p90"]])
        if data:
            a = np.array(data)
            x = np.arange(len(labels))
            ax.errorbar(x, a[:, 1], yerr=[a[:, 1] - a[:, 0], a[:, 2] - a[:, 1]], fmt="o", capsize=6, color="#1f77b4")
            lv = found[0][1].get("levels", {})
            for y, name in ((lv.get("about_source"), "about its source"), (lv.get("holds_together"), "holds together")):
                if y is not None:
                    ax.axhline(y, ls="--", lw=1, color="#999")
                    ax.text(len(labels) - 0.5, y, f" {name} ({y:g})", fontsize=7, va="bottom", ha="right")
            ax.set_xticks(x, labels, fontsize=8)
            ax.set_ylim(-0.1, 1)
            ax.set_ylabel("MiniLM cosine (p10, median, p90)")
            ax.set_title("meaning of the kept rows")
        body = self.image(fig, "meaning")
        rows = []
        for stage, m in found:
            for group, g in [("all", m)] + [(f"teacher {k}", v) for k, v in (m.get("by_teacher") or {}).items()] + \
                    [(f"style {k}", v) for k, v in (m.get("by_style") or {}).items()]:
                f, c, q = g.get("faithfulness") or {}, g.get("coherence") or {}, g.get("quality") or {}
                rows.append([stage, group, g.get("rows"), f.get("median"), c.get("median"), g.get("good_share"),
                             q.get("mean"), (g.get("source_quality") or {}).get("mean")])
        body += "".join(f"<p><b>{html.escape(stage)}</b>: {html.escape(m.get('verdict', ''))}</p>" for stage, m in found)
        body += _table(["stage", "rows", "n", "median faithfulness", "median coherence", "share about source and coherent",
                        "quality (mean)", "sources' quality (mean)"], rows)
        for stage, m in found:
            for which in ("worst", "best"):
                ex = m.get(which) or []
                if ex:
                    body += f"<h3>{html.escape(stage)}: the {len(ex)} {which} rows</h3>" + _table(
                        ["faithfulness", "coherence", "text", "source"],
                        [[e.get("faithfulness"), e.get("coherence"), e.get("text"), e.get("source")] for e in ex])
        self.add("Meaning", body)

    def samples(self, kept: int = 3, removed: int = 3) -> None:
        """A few rows of each dataset as a reader would see them: kept ones, and removed ones with their
        reason, each with the prompt (or source) and the teacher beside it."""
        body = ""
        for name, stage, tag in (("textbooks", "generate", "data"), ("rephrased", "rephrase", "data"),
                                 ("filtered web", "filter", "kept")):
            folder = self.run / stage
            if not (folder / tag).is_dir():
                continue
            body += f"<h3>{html.escape(name)}</h3>"
            for label, sub, n in (("kept", tag, kept), ("removed", "removed", removed)):
                rows = _sample_rows(folder / sub, n)
                if not rows:
                    body += f"<p>No {label} rows.</p>"
                    continue
                for r in rows:
                    head = " · ".join(html.escape(f"{k}: {r[k]}") for k in ("filter_reason", "teacher", "style", "format",
                                                                             "audience", "finish_reason", "int_score")
                                      if r.get(k) not in (None, ""))
                    detail = f"<p class='warn'>{html.escape(str(r['error_detail'])[:300])}</p>" if r.get("error_detail") else ""
                    given = r.get("prompt") or r.get("source_chunk")
                    text = r.get("text") or r.get("raw_reply") or ""
                    if label == "removed" and r.get("raw_reply"):
                        text = r["raw_reply"]
                    body += (f"<div class='row {label}'><p><b>{label}</b> <code>{html.escape(str(r.get('id')))}</code> "
                             f"{head}</p>{detail}"
                             + (f"<details><summary>prompt / source</summary><pre>{html.escape(given[:1500])}</pre></details>"
                                if given else "")
                             + f"<pre>{html.escape(text[:1500])}{' ...' if len(text) > 1500 else ''}</pre></div>")
        self.add("Sample rows", body or "<p>No dataset in this run yet.</p>")

    def _training_cost(self) -> dict:
        """The ablation's runs, summed from the last training record of each metrics.jsonl."""
        tot = {"tokens": 0, "compute_s": 0.0, "gpu_hours": 0.0, "cost_usd": 0.0}
        for f in (self.run / "ablate" / "runs").glob("*/*/metrics.jsonl"):
            last = next((json.loads(x) for x in reversed(f.read_text().splitlines()) if '"type": "train"' in x), None)
            if last:
                for k in tot:
                    tot[k] += last.get(k) or 0
        return tot

    def costs(self) -> None:
        stages = self.manifest.get("stages") or {s.name: {"status": "ran"} for s in all_stages() if s.llm and self.stats.get(s.name)}
        rows, labels, walls = [], [], []
        for stage, v in stages.items():
            folder = {"train-classifier": "classifier", "tokenize": "tokens"}.get(stage, stage)
            s = _stats(self.run / folder) or {}
            llm = s.get("llm", {})
            wall = v.get("ran_wall_s") or s.get("wall_time_s")
            tok_s, gpu_h, cost = llm.get("output_tok_s"), llm.get("gpu_hours"), llm.get("cost_usd")
            if stage == "ablate":
                t = self._training_cost()
                if t["compute_s"]:
                    tok_s, gpu_h, cost = t["tokens"] / t["compute_s"], t["gpu_hours"], t["cost_usd"]
            if wall:
                labels.append(stage)
                walls.append(wall)
            rows.append([stage, v.get("status"), wall, s.get("docs_per_s"), llm.get("completion_tokens"), tok_s, gpu_h, cost])
        if not rows:
            self.add("Throughput and cost", "<p>No timing recorded.</p>")
            return
        body = ""
        if walls:
            fig, ax = self.fig(8, 0.4 * len(labels) + 1.2)
            ax.barh(labels[::-1], walls[::-1], color="#7f7f7f")
            ax.set_xlabel("wall time (s)")
            ax.set_title("time per stage")
            body += self.image(fig, "time per stage")
        self.add("Throughput and cost", body + _table(
            ["stage", "status", "wall s", "docs/s", "LLM output tokens", "tok/s (LLM out; ablate: training)",
             "GPU-hours", "cost USD"], rows)
            + "<p>GPU-hours: the LLM engine's busy hours times its devices (on a CPU, hours of the CPU engine), and "
              "the trainer's GPU time (none on a CPU); cost prices them at llm.cost_per_gpu_hour and "
              "train.cost_per_gpu_hour (empty or 0 when those are 0).</p>")

    def training(self) -> None:
        p = self.run / "ablate" / "results.json"
        if not p.exists():
            self.add("Training curves", "<p>No ablation in this run.</p>")
            return
        r = json.loads(p.read_text())
        body = f"<p class='verdict'>{html.escape(r.get('verdict', ''))}</p>"
        # the ablation's own plots (training and validation loss, accuracy per task), inlined
        for png in ("loss_vs_tokens.png", "accuracy_vs_tokens.png"):
            if (self.run / "ablate" / png).exists():
                self.plots += 1
                body += _img(base64.b64encode((self.run / "ablate" / png).read_bytes()).decode(), png)
        names = list(r["datasets"])
        rows = []
        for n in names:
            vl = r["datasets"][n].get("val_loss", {})
            rows.append([n, r["datasets"][n].get("train_tokens_available"),
                         *[(vl.get(m) or [None])[0] for m in names]])
        body += _table(["trained on", "tokens available", *[f"val loss on {m}" for m in names]], rows)
        self.add("Training curves", body)

    # ------------------------------------------------------------------ page

    def html(self) -> str:
        cfg = self.manifest.get("config") or "configs/default.yaml"
        over = " ".join(self.manifest.get("overrides", []))
        toc = "".join(f'<li><a href="#s{i}">{html.escape(t)}</a></li>' for i, (t, _) in enumerate(self.sections))
        body = "".join(f'<section id="s{i}"><h2>{html.escape(t)}</h2>{b}</section>' for i, (t, b) in enumerate(self.sections))
        return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>synthweb report: {html.escape(str(self.run))}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 1.5em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
th {{ background: #f3f3f3; }} td:first-child {{ text-align: left; }}
img.plot {{ display: block; max-width: 100%; margin: 0.6em 0; }}
.warn {{ color: #a33; }} .verdict {{ font-weight: bold; }}
div.row {{ border-left: 4px solid #2ca02c; padding: 0 0.8em; margin: 0.8em 0; }} div.row.removed {{ border-color: #d62728; }}
pre {{ white-space: pre-wrap; background: #f8f8f8; padding: 0.5em; font-size: 0.85em; max-height: 22em; overflow: auto; }}
</style></head>
<body data-plots="{self.plots}">
<h1>synthweb run report</h1>
<p>Run folder <code>{html.escape(str(self.run))}</code>; config <code>{html.escape(str(cfg))}</code>
{('; overrides <code>' + html.escape(over) + '</code>') if over else ''}.</p>
<ul>{toc}</ul>
{body}
<script>
// for readers and tests: how many inlined plots the browser decoded
window.addEventListener("load", () => {{
  const imgs = [...document.querySelectorAll("img.plot")];
  document.body.dataset.rendered = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
}});
</script>
</body></html>
"""


def write_report(run: Path, output: Path | None = None) -> Path:
    run = Path(run)
    if not run.is_dir():
        raise UserError(f"report: {run} is not a folder (give the run folder, synthweb run's run.output)")
    r = Report(run)
    if not any(r.stats.values()) and not (run / "run.json").exists():
        raise UserError(f"report: {run} holds no stage output (no seeds/, generate/, ... with stats.json, no run.json)")
    for section in (r.funnel, r.scores, r.distributions, r.lengths, r.dedup, r.contamination, r.audit, r.meaning, r.samples,
                    r.costs, r.training):
        section()
    out = output or run / "report.html"
    atomic_write_text(out, r.html())
    return out
