"""MinHash dedup (datatrove's stages) on real pages with planted duplicates: exact copies, copies with
2/5/10/20% of words changed, and pairs that only share a boilerplate footer; kill -9 and resume."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, read_rows, real_pages, synthweb

ARGS = ("--set", "executor.tasks=2", "--set", "input.on_bad_record=skip", "--no-progress")


def shingles(text: str, n: int = 5) -> set:
    w = text.lower().split()
    return {" ".join(w[i : i + n]) for i in range(len(w) - n + 1)}


def jaccard(a: str, b: str) -> float:
    x, y = shingles(a), shingles(b)
    return len(x & y) / max(1, len(x | y))


def change(text: str, share: float, rng: random.Random) -> str:
    w = text.split()
    for k in rng.sample(range(len(w)), max(1, int(len(w) * share))):
        w[k] = rng.choice(["alpha", "beta", "gamma", "delta", "omega"])
    return " ".join(w)


def corpus(n_pages: int = 160):
    rng = random.Random(3)
    pages = [p for p in real_pages(n_pages * 2, 4000) if len(p["text"].split()) >= 250][:n_pages]
    docs = [{"id": p["id"], "text": p["text"]} for p in pages]
    planted = []  # (copy id, source id, kind)
    for i, p in enumerate(pages[:75]):
        kind = ("exact", "2%", "5%", "10%", "20%")[i // 15]
        text = p["text"] if kind == "exact" else change(p["text"], int(kind[:-1]) / 100, rng)
        docs.append({"id": f"{p['id']}-{kind}", "text": text})
        planted.append((f"{p['id']}-{kind}", p["id"], kind))
    footer = ("Copyright 2019 Example Media Group. All rights reserved. Terms of use | Privacy policy | Cookie "
              "settings | Contact us | Advertise with us | Subscribe to our newsletter for the latest news and offers.")
    footer_ids = []
    for p in pages[75:115]:
        for d in docs:
            if d["id"] == p["id"]:
                d["text"] = f"{d['text']}\n\n{footer}"
                footer_ids.append(d["id"])
    docs += [{"id": "no-words", "text": "… !!! ???"}, {"id": "greek", "text": "Η φωτοσύνθεση είναι η διαδικασία. " * 30}]
    return docs, planted, footer_ids


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    docs, planted, footer_ids = corpus()
    d = tmp_path_factory.mktemp("dedup") / "in"
    d.mkdir()
    (d / "docs.jsonl").write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in docs))
    (d / "empty.jsonl").write_text("")  # an empty shard among the inputs (skipped, with a warning)
    out = d.parent / "out"
    r = synthweb("dedup", "--input", str(d), "--output", str(out), *ARGS)
    assert r.returncode == 0, r.stderr[-3000:]
    return d, out, docs, planted, footer_ids


def test_planted_near_duplicates_recall_and_precision(run):
    _, out, docs, planted, footer_ids = run
    text = {d["id"]: d["text"] for d in docs}
    kept = {r["id"]: r for r in read_rows(out / "data")}
    removed = {r["id"]: r for r in read_rows(out / "removed")}
    assert len(kept) + len(removed) == len(docs)
    pair_found = lambda c, s: (c in removed and removed[c]["duplicate_of"] == s) or \
        (s in removed and removed[s]["duplicate_of"] == c)  # noqa: E731
    high = [(c, s) for c, s, _ in planted if jaccard(text[c], text[s]) >= 0.8]
    recall = sum(pair_found(c, s) for c, s in high) / len(high)
    assert len(high) >= 25 and recall >= 0.95, (len(high), recall)
    for c, s, kind in planted:
        if kind == "exact":
            assert pair_found(c, s)
    planted_ids = {c for c, _, _ in planted} | {s for _, s, _ in planted}
    false = [i for i in removed if i not in planted_ids]
    precision = 1 - len(false) / max(1, len(removed))
    assert precision >= 0.99, false
    assert all(i in kept for i in footer_ids), "pages sharing only a footer are not near-duplicates"
    assert "no-words" in kept and "greek" in kept
    print(f"\nplanted Jaccard>=0.8: {len(high)}, recall {recall:.3f}; precision {precision:.3f}; "
          + ", ".join(f"{k}: {sum(pair_found(c, s) for c, s, kk in planted if kk == k)}/15"
                      for k in ("exact", "2%", "5%", "10%", "20%")))


def test_removed_rows_name_cluster_and_kept_document(run):
    _, out, _, _, _ = run
    kept = {r["id"]: r for r in read_rows(out / "data")}
    removed = read_rows(out / "removed")
    assert removed
    for r in removed:
        rep = kept[r["duplicate_of"]]
        assert r["filter_reason"] == "near_duplicate" and r["minhash_cluster_size"] >= 2
        assert rep["minhash_cluster_id"] == r["minhash_cluster_id"] is not None
        assert r["history"][-1]["stage"] == "dedup"
    singletons = [r for r in kept.values() if r["minhash_cluster_id"] is None]
    assert len(singletons) > len(kept) / 2 and all(r["minhash_cluster_size"] is None for r in singletons)


def test_kill_during_minhash_then_rerun_gives_the_same_result(run, tmp_path):
    d, out, _, _, _ = run
    out2 = tmp_path / "killed"
    cmd = [sys.executable, "-m", "pipeline.cli", "dedup", "--input", str(d), "--output", str(out2), *ARGS]
    p = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out2 / "_logs" / "minhash" / "buckets").exists():
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert not (out2 / "stats.json").exists(), "killed before the end"
    r = synthweb("dedup", "--input", str(d), "--output", str(out2), *ARGS)
    assert r.returncode == 0, r.stderr[-3000:]
    ids = lambda o, tag: sorted(x["id"] for x in read_rows(o / tag))  # noqa: E731
    assert ids(out2, "data") == ids(out, "data") and ids(out2, "removed") == ids(out, "removed")


def test_exact_dedup_keeps_the_configured_copy(tmp_path):
    pages = real_pages(30, 2000)
    docs = [{"id": p["id"], "text": p["text"], "score": 1.0} for p in pages]
    for i, p in enumerate(pages[:10]):  # copies that differ only in case and spacing, with a higher score
        docs.append({"id": f"{p['id']}-copy", "text": "  " + p["text"].upper().replace(" ", "   "), "score": 2.0 + i})
    docs.append({"id": "copy-of-copy", "text": pages[0]["text"], "score": 0.5})
    src = tmp_path / "in"
    src.mkdir()
    (src / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    for keep, expect in (("first", lambda p: p["id"]), ("highest_score", lambda p: f"{p['id']}-copy")):
        out = tmp_path / keep
        r = synthweb("dedup", "--method", "exact", "--input", str(src), "--output", str(out),
                     "--set", f"dedup.keep={keep}", "--set", "dedup.hash_buckets=4", *ARGS)
        assert r.returncode == 0, r.stderr[-3000:]
        kept = {x["id"] for x in read_rows(out / "data")}
        removed = {x["id"]: x for x in read_rows(out / "removed")}
        assert len(kept) == 30 and len(removed) == 11
        for p in pages[:10]:
            assert expect(p) in kept
        for x in removed.values():
            assert x["duplicate_of"] in kept and x["filter_reason"] == "exact_duplicate" and len(x["exact_hash"]) == 16
        assert removed["copy-of-copy"]["duplicate_of"] == expect(pages[0])
    out = tmp_path / "punct"  # without case folding the upper-case copies are different texts
    r = synthweb("dedup", "--method", "exact", "--input", str(src), "--output", str(out),
                 "--set", "dedup.exact_normalise=[whitespace]", *ARGS)
    assert r.returncode == 0 and len(read_rows(out / "removed")) == 1


def test_semantic_dedup_catches_paraphrases_minhash_misses(tmp_path):
    stop = {"the", "a", "an", "of", "and", "to", "in", "is", "that", "for", "on", "with", "as", "it", "was", "are",
            "be", "by", "this", "at", "or", "from"}
    pages = [p for p in real_pages(80, 900) if len(p["text"].split()) >= 100][:40]  # within MiniLM's 256 tokens
    docs = [{"id": p["id"], "text": p["text"]} for p in pages]
    for p in pages[:10]:  # the same content in telegraphic style: no function words (5-gram Jaccard 0.04-0.3)
        docs.append({"id": f"{p['id']}-para", "text": " ".join(w for w in p["text"].split() if w.lower() not in stop)})
    src = tmp_path / "in"
    src.mkdir()
    (src / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    results = {}
    for label, extra in (("brute", ()), ("ann", ("--set", "dedup.ann_above=10"))):
        out = tmp_path / label
        r = synthweb("dedup", "--method", "semantic", "--input", str(src), "--output", str(out), *extra, *ARGS)
        assert r.returncode == 0, r.stderr[-3000:]
        removed = {x["id"]: x for x in read_rows(out / "removed")}
        results[label] = removed
        assert {f"{p['id']}-para" for p in pages[:10]} <= set(removed), "every paraphrase is caught"
        for p in pages[:10]:
            x = removed[f"{p['id']}-para"]
            assert x["duplicate_of"] == p["id"] and x["semantic_similarity"] >= 0.9
            assert x["filter_reason"] == "semantic_duplicate" and x["dedup_method"] == "semantic"
        assert len(removed) <= 11, "distinct pages are not merged"
    assert set(results["brute"]) == set(results["ann"]), "the usearch index finds what brute force finds"
    mh = tmp_path / "minhash"
    r = synthweb("dedup", "--input", str(src), "--output", str(mh), *ARGS)
    assert r.returncode == 0 and not (set(x["id"] for x in read_rows(mh / "removed")) if (mh / "removed").exists() else set()) \
        & {f"{p['id']}-para" for p in pages[:10]}, "MinHash does not see these as near-duplicates"


def test_a_changed_input_between_passes_is_an_error_not_a_wrong_drop(tmp_path):
    """Pass 3 names documents by position as pass 1 read them: another id there stops the task."""
    from datatrove.data import Document

    from pipeline.errors import StageFailed
    from pipeline.stages.dedup import DuplicateFilter, RecordIds, SameInput

    docs = [Document(text=f"page {i}", id=f"d{i}") for i in range(4)]
    list(RecordIds(str(tmp_path / "ids")).run(iter(docs)))
    assert [d.id for d in SameInput(str(tmp_path / "ids")).run(iter(docs))] == ["d0", "d1", "d2", "d3"]
    with pytest.raises(StageFailed, match=r"task 0 document 2 is 'd2', the first pass read 'd1' there"):
        list(SameInput(str(tmp_path / "ids")).run(iter([docs[0], docs[2], docs[1], docs[3]])))
    with pytest.raises(StageFailed, match=r"read 3 documents, the first pass 4"):
        list(SameInput(str(tmp_path / "ids")).run(iter(docs[:3])))
    (tmp_path / "dec").mkdir()
    (tmp_path / "dec" / "000000.jsonl").write_text(json.dumps([1, "d1", "d0", "ab", 2]) + "\n")

    class Removed:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

        def write(self, doc, rank=0):
            self.doc = doc

    with pytest.raises(StageFailed, match=r"document 2 is 'd2', the decision was made for 'd1'"):
        list(DuplicateFilter(str(tmp_path / "dec"), Removed()).run(iter([docs[0], docs[2]])))

