"""Dataset ablations: the same model and token budget on each dataset, several seeds, one report.

Each (dataset, seed) is an ordinary ``synthweb train`` run under ``OUTPUT/runs/<dataset>/seed-<n>``
(resumable, reused when complete); every model is also evaluated on every other dataset's held-out
tokens, so validation losses are comparable across rows. ``results.json`` holds the numbers,
``report.html`` (self-contained, PNGs inlined) the table, the curves and the verdict.
"""

from __future__ import annotations

import base64
import html
import json
import statistics
from pathlib import Path

from pydantic import Field, field_validator

from pipeline.config import Strict
from pipeline.errors import UserError
from pipeline.io.writer import atomic_write_text
from pipeline.stages import Stage
from pipeline.train.loop import Trainer, prepare_datasets
from pipeline.train.tokenize import TrainDataset, dataset_name


class AblateConfig(Strict):
    """``synthweb ablate``: one model per dataset and seed, same budget; a comparison report."""

    datasets: list[TrainDataset] = []
    seeds: list[int] = [0, 1]
    evals: int = Field(default=4, ge=1)  # evaluations along training per run (accuracy-vs-tokens curves)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v or len(set(v)) != len(v):
            raise ValueError("seeds must be a non-empty list of distinct integers")
        return v

    @field_validator("datasets")
    @classmethod
    def _names(cls, v: list[TrainDataset]) -> list[TrainDataset]:
        names = [dataset_name(d) for d in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"two datasets are named {dup[0]!r}; give each a distinct name")
        return v


def _runs_cfg(cfg, name: str, folder: Path, seed: int, eval_every: int):
    from pipeline.train.tokenize import TrainDataset

    c = cfg.model_copy(deep=True)
    c.train.datasets = [TrainDataset(path=str(folder), name=name)]
    c.train.seed = seed
    c.train.eval_every = eval_every
    return c


def _curves(run_dir: Path) -> dict:
    train, evals = [], []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["type"] == "train":
            train.append((r["tokens"], r["loss"]))
        else:
            evals.append({"tokens": r["tokens"], "val_loss": r["val_loss"],
                          "tasks": {t: v["acc_norm"] for t, v in r["tasks"].items()}})
    return {"train_loss": train, "evals": evals}


def _mean_std(xs: list[float]) -> tuple[float, float]:
    xs = [x for x in xs if x is not None]
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def ablate(cfg, output: str | Path, force: bool = False, log=print) -> dict:
    a, tc = cfg.ablate, cfg.train
    out = Path(output)
    if len(a.datasets) < 2:
        raise UserError("ablate.datasets needs at least two datasets to compare")
    out.mkdir(parents=True, exist_ok=True)
    prepared = prepare_datasets(cfg, out, a.datasets)
    folders = {name: folder for name, folder, _m, _w in prepared}
    steps = tc.tokens // (tc.micro_batch_size * tc.grad_accum * tc.seq_len)
    eval_every = max(1, steps // a.evals)
    results: dict = {"budget_tokens": steps * tc.micro_batch_size * tc.grad_accum * tc.seq_len, "steps": steps,
                     "preset": tc.preset, "seeds": a.seeds, "datasets": {}, "tasks": {}}
    for name, folder, manifest, _w in prepared:
        runs = {}
        for seed in a.seeds:
            run_dir = out / "runs" / name / f"seed-{seed}"
            log(f"ablate: {name}, seed {seed}")
            trainer = Trainer(_runs_cfg(cfg, name, folder, seed, eval_every), run_dir, force=force, log=log,
                              extra_val={n: f for n, f in folders.items() if n != name})
            r = trainer.run()
            if not r.get("complete"):
                raise UserError(f"ablate: the run {run_dir} stopped before the end; rerun ablate to resume it")
            runs[str(seed)] = {"val_loss": r["val_loss"], "val_loss_by_dataset": r["val_loss_by_dataset"],
                               "tasks": {t: v["acc_norm"] for t, v in r["tasks"].items()}, **_curves(run_dir)}
            for t, v in r["tasks"].items():
                results["tasks"].setdefault(t, {"chance": v["chance"], "n": v["n"], "metric": v["metric"]})
        results["datasets"][name] = {"source": manifest["source"], "where": manifest["where"],
                                     "train_tokens_available": manifest["tokens"]["train"], "runs": runs}
    _summarise(results)
    plots = _plots(results, out)
    results["verdict"] = _verdict(results)
    atomic_write_text(out / "results.json", json.dumps(results, indent=2))
    atomic_write_text(out / "report.html", _html(results, plots, cfg))
    return results


def _summarise(results: dict) -> None:
    names = list(results["datasets"])
    for name, d in results["datasets"].items():
        runs = d["runs"].values()
        d["val_loss"] = {other: _mean_std([r["val_loss_by_dataset"].get(other) for r in runs]) for other in names}
        d["tasks"] = {t: _mean_std([r["tasks"][t] for r in runs]) for t in results["tasks"]}
    for t, info in results["tasks"].items():
        n, chance = info["n"], info["chance"]
        se = (max(chance * (1 - chance), 1e-12) / n) ** 0.5
        best = max(d["tasks"][t][0] for d in results["datasets"].values())
        info["at_chance"] = bool(best - chance <= 2 * se)  # no dataset lifts it above noise: cannot rank yet
    signal = [t for t, info in results["tasks"].items() if not info["at_chance"]]
    results["informative_tasks"] = signal
    for d in results["datasets"].values():
        per_seed = [statistics.fmean(r["tasks"][t] for t in signal) for r in d["runs"].values()] if signal else []
        d["mean_informative"] = _mean_std(per_seed) if per_seed else None


def _verdict(results: dict) -> str:
    names = list(results["datasets"])
    loss = {n: results["datasets"][n]["val_loss"] for n in names}
    # on the union of held-out sets: the mean over every dataset's validation loss
    pooled = {n: statistics.fmean(v[0] for v in loss[n].values() if v[0] == v[0]) for n in names}
    best = min(pooled, key=pooled.get)
    parts = [f"lowest mean validation loss over all held-out sets: {best} ({pooled[best]:.4f}"
             + "".join(f"; {n} {pooled[n]:.4f}" for n in names if n != best) + ")"]
    sig = results["informative_tasks"]
    if not sig:
        parts.append("every task is at chance for every dataset: at this budget the benchmarks cannot rank the datasets")
    else:
        m = {n: results["datasets"][n]["mean_informative"] for n in names}
        top = max(m, key=lambda n: m[n][0])
        rest = sorted((n for n in names if n != top), key=lambda n: -m[n][0])
        gap = m[top][0] - m[rest[0]][0]
        noise = max(m[top][1], m[rest[0]][1])
        sure = "larger than" if gap > 2 * noise else "within"
        parts.append(f"best mean accuracy on the {len(sig)} tasks above chance ({', '.join(sig)}): {top} "
                     f"({m[top][0]:.3f} vs {m[rest[0]][0]:.3f}; the gap is {sure} twice the seed spread {noise:.3f})")
    return "ablate: " + "; ".join(parts)


def _plots(results: dict, out: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    paths = {}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (name, d) in enumerate(results["datasets"].items()):
        c = colours[i % len(colours)]
        for j, r in enumerate(d["runs"].values()):
            xs, ys = zip(*r["train_loss"]) if r["train_loss"] else ([], [])
            ax1.plot(xs, ys, color=c, alpha=0.8, lw=1, label=name if j == 0 else None)
            ev = r["evals"]
            ax2.plot([e["tokens"] for e in ev], [e["val_loss"] for e in ev], "o-", color=c, alpha=0.8, lw=1,
                     label=name if j == 0 else None)
    for ax, title in ((ax1, "training loss"), (ax2, "validation loss (own held-out set)")):
        ax.set_xlabel("tokens")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    paths["loss"] = out / "loss_vs_tokens.png"
    fig.savefig(paths["loss"], dpi=110)
    plt.close(fig)

    tasks = list(results["tasks"])
    if tasks:
        cols = min(4, len(tasks))
        rows = (len(tasks) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
        for k, t in enumerate(tasks):
            ax = axes[k // cols][k % cols]
            for i, (name, d) in enumerate(results["datasets"].items()):
                c = colours[i % len(colours)]
                for j, r in enumerate(d["runs"].values()):
                    ev = r["evals"]
                    ax.plot([e["tokens"] for e in ev], [e["tasks"][t] for e in ev], "o-", color=c, alpha=0.8, lw=1,
                            ms=3, label=name if j == 0 else None)
            ax.axhline(results["tasks"][t]["chance"], color="grey", ls="--", lw=1, label="chance")
            ax.set_title(t + ("  (at chance)" if results["tasks"][t]["at_chance"] else ""), fontsize=9)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        for k in range(len(tasks), rows * cols):
            axes[k // cols][k % cols].axis("off")
        axes[0][0].legend(fontsize=7)
        fig.supxlabel("tokens")
        fig.supylabel("accuracy (length-normalised)")
        fig.tight_layout()
        paths["accuracy"] = out / "accuracy_vs_tokens.png"
        fig.savefig(paths["accuracy"], dpi=110)
        plt.close(fig)
    return paths


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _html(results: dict, plots: dict[str, Path], cfg) -> str:
    e = html.escape
    names = list(results["datasets"])
    tasks = list(results["tasks"])
    head = "".join(f"<th>{e(t)}<br><small>chance {results['tasks'][t]['chance']:.3f}"
                   f"{' - at chance' if results['tasks'][t]['at_chance'] else ''}</small></th>" for t in tasks)
    rows = []
    for n in names:
        d = results["datasets"][n]
        own = d["val_loss"][n]
        cells = "".join(
            f"<td class='{'chance' if results['tasks'][t]['at_chance'] else ''}'>{d['tasks'][t][0]:.3f} ± {d['tasks'][t][1]:.3f}</td>"
            for t in tasks)
        mi = d["mean_informative"]
        rows.append(f"<tr><th>{e(n)}</th><td>{own[0]:.4f} ± {own[1]:.4f}</td>{cells}"
                    f"<td>{'%.3f ± %.3f' % mi if mi else 'n/a'}</td></tr>")
    cross = "".join(
        f"<tr><th>{e(n)}</th>" + "".join(f"<td>{results['datasets'][n]['val_loss'][o][0]:.4f}</td>" for o in names) + "</tr>"
        for n in names)
    sources = "".join(f"<li><b>{e(n)}</b>: {e(str(results['datasets'][n]['source']))}"
                      f"{' where ' + e(results['datasets'][n]['where']) if results['datasets'][n]['where'] else ''} "
                      f"({results['datasets'][n]['train_tokens_available']:,} training tokens available)</li>" for n in names)
    imgs = "".join(f"<figure>{_img(p, k)}</figure>" for k, p in plots.items())
    tc = cfg.train
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>synthweb ablation</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}}
table{{border-collapse:collapse;margin:1em 0}} td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
th{{background:#f4f4f4}} td.chance{{color:#999;background:#fafafa}} img{{max-width:100%}}
.verdict{{background:#eef6ee;padding:0.8em;border-left:4px solid #4a4}}
</style></head><body>
<h1>Ablation: {len(names)} datasets x {len(results['seeds'])} seeds</h1>
<p>Model <b>{e(tc.preset)}</b>, {results['budget_tokens']:,} tokens each ({results['steps']:,} steps of
{tc.micro_batch_size} x {tc.grad_accum} x {tc.seq_len}), lr {tc.lr:g} ({e(tc.schedule)}), seeds {results['seeds']}.</p>
<ul>{sources}</ul>
<p class="verdict">{e(results['verdict'].removeprefix('ablate: '))}</p>
<h2>Scores (mean ± standard deviation over seeds)</h2>
<table><tr><th>dataset</th><th>validation loss<br><small>own held-out set</small></th>{head}<th>mean of tasks<br><small>above chance</small></th></tr>
{''.join(rows)}</table>
<p>Greyed tasks are at chance for every dataset (within two standard errors): they cannot rank datasets at this budget.</p>
<h2>Validation loss of each model (row) on each dataset's held-out tokens (column)</h2>
<table><tr><th></th>{''.join(f'<th>{e(o)}</th>' for o in names)}</tr>{cross}</table>
<h2>Curves</h2>{imgs}
</body></html>
"""


def main(cfg, force: bool = False, progress: bool = True) -> dict:
    from pathlib import Path

    from pipeline.io.lock import output_lock

    with output_lock(Path(cfg.run.output), "ablate"):
        return ablate(cfg, cfg.run.output, force=force)


def _plan(run):
    import json

    from pipeline.stages import Call

    if run.cfg.ablate.datasets:
        return [Call(None, run.out / "ablate")]
    toks = {n: run.out / "tokens" / n for n in run.subsets() if (run.out / "tokens" / n / "tokens.json").exists()}
    if len(toks) < 2:
        return (f"{len(toks)} tokenized dataset(s) ({', '.join(toks) or 'none'}); an ablation compares two or more; "
                "skipped")
    return [Call(None, run.out / "ablate", ["ablate.datasets=" + json.dumps([{"name": n, "path": str(p)} for n, p in toks.items()])])]


STAGE = Stage(
    settings={"ablate": AblateConfig},
    name="ablate", help="one model per dataset and seed, same budget -> results.json + report.html",
    description="For every dataset in ablate.datasets and every seed in ablate.seeds, train the train section's "
    "model on that dataset alone with the same token budget, evaluate it along the way, and write "
    "OUTPUT/results.json, OUTPUT/report.html and PNG curves. Runs already complete are reused.",
    main=main, input_help=None, output_help="the ablation folder", progress=False, force_help="train every run again",
    needs=("output",), required="ablate needs --output (the folder for runs, results.json and report.html)",
    summary=lambda cfg, res: [res["verdict"], f"wrote {cfg.run.output}/results.json and {cfg.run.output}/report.html"],
    plan=_plan, markers=("results.json",),
)
