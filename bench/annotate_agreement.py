"""How far the default CPU annotator (SmolLM2-135M) agrees with the LLM scores of the legal set.

Annotates N distinct pages of ../shared/data/web/fineweb-sample-legal-scored with the legal rubric
(prompts/annotate/legal.j2, constrained score) through ``synthweb annotate`` and compares with the
set's own scores (mistral-medium, mean over repeats): exact agreement, within 1, Spearman, binary F1@3.
Usage: python bench/annotate_agreement.py [N]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
LEGAL = REPO.parent / "shared" / "data" / "web" / "fineweb-sample-legal-scored"


def main(n: int = 100) -> None:
    from scipy.stats import spearmanr
    from sklearn.metrics import f1_score

    if not LEGAL.exists():
        sys.exit(f"skipped: {LEGAL} not found")
    t = pa.concat_tables([pq.read_table(f, columns=["id", "url", "text", "score"]) for f in sorted(LEGAL.glob("*.parquet"))])
    df = t.to_pandas().groupby("id", sort=False).agg(url=("url", "first"), text=("text", "first"), score=("score", "mean"))
    df = df.sample(n=n, random_state=42).reset_index()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "pages.jsonl"
        src.write_text("".join(json.dumps({"id": r.id, "url": r.url, "text": r.text}) + "\n" for r in df.itertuples()))
        out = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "pipeline.cli", "annotate", "--input", str(src), "--output", str(out), "--no-progress",
               "--set", "annotate.template=legal", "--set", "annotate.score_label=Legal score",
               "--set", "annotate.mode=constrained", "--set", "annotate.max_chars=1500", "--set", "annotate.max_tokens=120"]
        subprocess.run(cmd, cwd=REPO, check=True, env={"HF_HUB_OFFLINE": "1", **__import__("os").environ})
        rows = [r for f in sorted((out / "data").glob("*.parquet")) for r in pq.read_table(f, columns=["id", "score"]).to_pylist()]
        stats = json.loads((out / "stats.json").read_text())
    ours = {r["id"]: r["score"] for r in rows}
    ref = df.set_index("id").score
    ids = [i for i in ref.index if i in ours]
    a, b = np.array([ours[i] for i in ids]), ref.loc[ids].to_numpy()
    result = {
        "pages": n, "scored": len(ids), "exact": round(float((np.rint(a) == np.rint(b)).mean()), 3),
        "within_1": round(float((np.abs(a - b) <= 1).mean()), 3),
        "spearman": round(float(spearmanr(a, b).statistic), 3) if len(set(a)) > 1 else None,
        "binary_f1_at_3": round(float(f1_score(b >= 3, a >= 3, zero_division=0)), 3),
        "ours_histogram": {str(k): int((np.rint(a) == k).sum()) for k in range(6)},
        "reference_histogram": {str(k): int((np.rint(b) == k).sum()) for k in range(6)},
        "wall_time_s": stats.get("wall_time_s"), "llm_output_tok_s": stats.get("llm", {}).get("output_tok_s"),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)
