"""Train, evaluate and save a filter classifier (``synthweb train-classifier``).

The recipe (FineWeb-Edu's, with the split done honestly): deduplicate the labelled texts, split
them stratified by label into train / validation / test, embed with a BERT-style encoder (frozen:
embeddings computed once and cached on disk; finetune: the encoder trains too), train a regression
head with early stopping on the validation loss, choose the decision cut on the validation split
only (calibration), and report everything on the test split, which nothing above has seen.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from classifiers.config import ClassifierConfig
from classifiers.data import Labelled, load_labelled
from classifiers.model import (
    ClassifierSpec,
    calibrate,
    decision_boundary,
    int_scores,
    make_head,
    save_spec,
)
from pipeline.errors import StageFailed, UserError


def resolve_task(cfg: ClassifierConfig, labels: np.ndarray) -> str:
    if cfg.task != "auto":
        return cfg.task
    return "binary" if set(np.unique(labels).tolist()) <= {0.0, 1.0} else "regression"


def check_labels(labels: np.ndarray, task: str, threshold: float, lo: float = 0, hi: float = 5) -> None:
    values = np.unique(labels)
    if len(values) < 2:
        raise UserError(f"single-class training set: every label is {values[0]:g}; a classifier needs at least two classes")
    if task == "binary":
        if not set(values.tolist()) <= {0.0, 1.0}:
            raise UserError(f"classifier.task is binary, but labels include {values[~np.isin(values, [0, 1])][0]:g} (need 0/1)")
        return
    if values.min() < lo or values.max() > hi:
        raise UserError(f"labels must lie in {lo:g}-{hi:g}; found {values.min():g}..{values.max():g}")
    if not ((labels >= threshold).any() and (labels < threshold).any()):
        side = "at or above" if (labels >= threshold).all() else "below"
        raise UserError(f"every label is {side} the threshold {threshold:g}: the binary decision cannot be learnt "
                        "(set classifier.threshold)")


def classes_of(labels: np.ndarray, task: str) -> np.ndarray:
    return labels.astype(int) if task == "binary" else np.clip(np.floor(labels + 0.5), 0, 5).astype(int)


def split(labels: np.ndarray, task: str, cfg: ClassifierConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Stratified train / validation / test indices (by class; by the binary side when a class is too rare)."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    cls = classes_of(labels, task)
    binary = (labels >= (0.5 if task == "binary" else cfg.threshold)).astype(int)
    for name, strat in (("label", cls), ("binary", binary), ("none", None)):
        try:
            if cfg.test_size > 0:
                rest, te = train_test_split(idx, test_size=cfg.test_size, stratify=strat, random_state=cfg.seed)
            else:
                rest, te = idx, idx[:0]
            tr, va = train_test_split(rest, test_size=cfg.validation_size,
                                      stratify=None if strat is None else strat[rest], random_state=cfg.seed)
            return tr, va, te, name
        except ValueError:  # a class with too few members to be in every part
            continue
    raise UserError(f"cannot split {len(labels)} examples into train/validation/test; label more data")


def _cache_dir(cfg: ClassifierConfig) -> Path:
    if cfg.embedding_cache:
        return Path(cfg.embedding_cache)
    return Path(os.environ.get("SYNTHWEB_CACHE", Path.home() / ".cache" / "synthweb")) / "embeddings"


def embed_cached(encoder, texts: list[str], cfg: ClassifierConfig, printer=print) -> np.ndarray:
    """Frozen mode: the embeddings of a training set are computed once; retraining the head reuses them."""
    h = hashlib.sha256(f"{cfg.encoder}|{encoder.max_length}|{encoder.windows}|{encoder.dtype}".encode())
    for t in texts:
        h.update(hashlib.sha1(t.encode()).digest())
    path = _cache_dir(cfg) / f"{h.hexdigest()[:24]}.npy"
    if path.exists():
        emb = np.load(path)
        if emb.shape == (len(texts), encoder.dim):
            printer(f"train-classifier: embeddings from the cache ({path})")
            return emb
    t0 = time.time()
    emb = encoder.encode(texts)
    printer(f"train-classifier: embedded {len(texts):,} texts in {time.time() - t0:.0f} s")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(tmp, emb)
    os.replace(tmp, path)
    return emb


def _loss(task: str):
    import torch.nn.functional as F

    return F.binary_cross_entropy_with_logits if task == "binary" else F.mse_loss


def train_head(X: dict, y: dict, task: str, cfg: ClassifierConfig, device: str = "cpu"):
    """Head on frozen embeddings: AdamW, minibatches, early stopping on the validation loss."""
    import torch

    torch.manual_seed(cfg.seed)
    head = make_head(X["train"].shape[1], cfg.head, cfg.hidden, cfg.dropout).to(device)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = _loss(task)
    Xtr, ytr = torch.from_numpy(X["train"]).to(device), torch.from_numpy(y["train"]).to(device)
    Xva, yva = torch.from_numpy(X["validation"]).to(device), torch.from_numpy(y["validation"]).to(device)
    gen = torch.Generator().manual_seed(cfg.seed)
    best, best_state, best_epoch, history = float("inf"), None, -1, []
    for epoch in range(cfg.epochs):
        head.train()
        for b in torch.randperm(len(Xtr), generator=gen).split(cfg.batch_size):
            loss = loss_fn(head(Xtr[b]).squeeze(-1), ytr[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        head.eval()
        with torch.no_grad():
            val = float(loss_fn(head(Xva).squeeze(-1), yva))
        history.append(round(val, 5))
        if val < best - 1e-6:
            best, best_epoch = val, epoch
            best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
        elif epoch - best_epoch >= cfg.patience:
            break
    head.load_state_dict(best_state)
    head.eval()
    return head, {"epochs_run": len(history), "best_epoch": best_epoch + 1, "best_validation_loss": round(best, 5),
                  "validation_loss": history}


def train_finetune(encoder, texts: dict, y: dict, task: str, cfg: ClassifierConfig, printer=print):
    """Encoder and head trained together (for GPUs); early stopping on the validation loss per epoch."""
    import torch

    torch.manual_seed(cfg.seed)
    dev = encoder.device
    head = make_head(encoder.dim, cfg.head, cfg.hidden, cfg.dropout).to(dev)
    opt = torch.optim.AdamW([{"params": encoder.st.parameters(), "lr": cfg.encoder_lr},
                             {"params": head.parameters(), "lr": cfg.lr}], weight_decay=cfg.weight_decay)
    loss_fn = _loss(task)
    gen = torch.Generator().manual_seed(cfg.seed)
    tr_texts, ytr = texts["train"], torch.from_numpy(y["train"]).to(dev)

    def predict(batch_texts: list[str]) -> torch.Tensor:
        wins, owner = encoder.windows_of(batch_texts)
        return head(encoder.embed_windows(wins, owner, len(batch_texts))).squeeze(-1)

    def val_loss() -> float:
        encoder.st.eval()
        head.eval()
        with torch.no_grad():
            va = texts["validation"]
            preds = torch.cat([predict(va[i : i + cfg.batch_size]) for i in range(0, len(va), cfg.batch_size)])
            return float(loss_fn(preds, torch.from_numpy(y["validation"]).to(dev)))

    best, best_state, best_epoch, history = float("inf"), None, -1, []
    for epoch in range(cfg.epochs):
        encoder.st.train()
        head.train()
        t0 = time.time()
        for b in torch.randperm(len(tr_texts), generator=gen).split(cfg.batch_size):
            loss = loss_fn(predict([tr_texts[i] for i in b.tolist()]), ytr[b.to(dev)])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(encoder.st.parameters()) + list(head.parameters()), 1.0)
            opt.step()
        val = val_loss()
        history.append(round(val, 5))
        printer(f"train-classifier: epoch {epoch + 1}: validation loss {val:.4f} ({time.time() - t0:.0f} s)")
        if val < best - 1e-6:
            best, best_epoch = val, epoch
            best_state = ({k: v.detach().cpu().clone() for k, v in encoder.st.state_dict().items()},
                          {k: v.detach().cpu().clone() for k, v in head.state_dict().items()})
        elif epoch - best_epoch >= cfg.patience:
            break
    encoder.st.load_state_dict(best_state[0])
    head.load_state_dict(best_state[1])
    encoder.st.eval()
    head.eval()
    return head, {"epochs_run": len(history), "best_epoch": best_epoch + 1, "best_validation_loss": round(best, 5),
                  "validation_loss": history}


def choose_cut(raw: np.ndarray, labels: np.ndarray, spec: ClassifierSpec) -> float:
    """The raw cut maximising binary F1 on the validation split (ties: nearest the nominal boundary)."""
    from sklearn.metrics import f1_score

    truth = labels >= (0.5 if spec.task == "binary" else spec.threshold)
    nominal = decision_boundary(spec)
    lo, hi = (0.0, 1.0) if spec.task == "binary" else (spec.label_min, spec.label_max)
    values = np.unique(raw)
    cands = [c for c in (values[:-1] + values[1:]) / 2 if lo < c < hi] or [nominal]
    scored = [(f1_score(truth, raw >= c, zero_division=0), -abs(c - nominal), c) for c in cands]
    return float(max(scored)[2])


def evaluate(scores: np.ndarray, labels: np.ndarray, spec: ClassifierSpec) -> dict:
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        f1_score,
        precision_score,
        recall_score,
    )

    pred_int = int_scores(scores, spec)
    positive = 0.5 if spec.task == "binary" else spec.threshold
    truth_b, pred_b = labels >= positive, pred_int >= positive
    cls = classes_of(labels, spec.task)
    classes = [0, 1] if spec.task == "binary" else list(range(int(spec.label_min), int(spec.label_max) + 1))
    m = {
        "n": int(len(labels)),
        "binary_f1": round(float(f1_score(truth_b, pred_b, zero_division=0)), 4),
        "precision": round(float(precision_score(truth_b, pred_b, zero_division=0)), 4),
        "recall": round(float(recall_score(truth_b, pred_b, zero_division=0)), 4),
        "accuracy": round(float(accuracy_score(cls, pred_int)), 4),
        "macro_f1": round(float(f1_score(cls, pred_int, labels=classes, average="macro", zero_division=0)), 4),
        "per_class_f1": {str(c): round(float(v), 4) for c, v in
                         zip(classes, f1_score(cls, pred_int, labels=classes, average=None, zero_division=0))},
        "confusion_matrix": confusion_matrix(cls, pred_int, labels=classes).tolist(),
        "positive_rate": round(float(truth_b.mean()), 4),
    }
    if spec.task == "regression":
        from scipy.stats import spearmanr

        m["mse"] = round(float(np.mean((scores - labels) ** 2)), 4)
        m["spearman"] = round(float(spearmanr(scores, labels).statistic), 4) if len(set(labels)) > 1 else None
    else:
        from sklearn.metrics import roc_auc_score

        m["roc_auc"] = round(float(roc_auc_score(truth_b, scores)), 4) if 0 < truth_b.sum() < len(truth_b) else None
    return m


def plot_confusion(cm: list[list[int]], classes: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(4.8, 4.2), dpi=120)
    ax.imshow(a, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted (int_score)")
    ax.set_ylabel("label")
    ax.set_title(title, fontsize=9)
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            ax.text(j, i, str(a[i, j]), ha="center", va="center", color="white" if a[i, j] > a.max() / 2 else "black", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _card(spec: ClassifierSpec, metrics: dict, data: Labelled, source: str) -> str:
    t = metrics
    rows = "\n".join(f"| {k} | {t[k]} |" for k in ("binary_f1", "precision", "recall", "accuracy", "macro_f1") if k in t)
    per_class = ", ".join(f"{k}: {v}" for k, v in t["per_class_f1"].items())
    enc = "fine-tuned copy in `encoder/`" if spec.mode == "finetune" else f"`{spec.encoder}` (frozen)"
    model = "fastText (n-gram bag)" if spec.kind == "fasttext" else f"{enc}, {spec.head.get('type')} head"
    decision = "int_score = round(score) >= threshold" if spec.task == "regression" else "score (P(positive)) >= 0.5"
    return f"""---
library_name: synthweb
tags: [text-classification, data-filtering, synthweb]
---
# {spec.name}: {spec.task} quality classifier

Trained by `synthweb train-classifier` on `{source}` (label column `{spec.label_column}`).
Model: {model}; max {spec.max_length} tokens per window, {spec.windows} window(s) per document.

## Data
{data.rows_read:,} labelled rows; {data.duplicates_merged:,} duplicate rows merged into {len(data.texts):,} distinct
texts (mean label; {data.conflicting} texts had differing labels). Split stratified by {t['stratified_by']}, seed
{t['seed']}: {t['n_train']:,} train / {t['n_validation']:,} validation / {t['n_test']:,} test.

## Decision
Positive class: label >= {spec.threshold:g}. Decision: {decision}. {t['calibration']}

## Metrics ({t['evaluated_on']} split, {t['n_evaluated']:,} texts)
| metric | value |
|---|---|
{rows}

Per-class F1: {per_class}. Confusion matrix: `confusion_matrix.png`; everything in `metrics.json`.

## Use
`synthweb classify --input SHARDS --classifier THIS_FOLDER --output OUT` adds `score` and `int_score`;
in Python: `classifiers.model.Classifier.load(folder).score(texts)`.
"""


def _already_trained(output: Path, fingerprint: str) -> dict | None:
    try:
        same = json.loads((output / "config.json").read_text()).get("fingerprint") == fingerprint
        return json.loads((output / "metrics.json").read_text()) if same else None
    except (OSError, ValueError):
        return None


def _prepare_output(output: Path, force: bool) -> Path:
    if output.exists() and any(output.iterdir()):
        if not force:
            raise UserError(f"{output} already exists and is not empty; use --force to replace it, or another --output")
    tmp = output.parent / f".{output.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def train_classifier(cfg: ClassifierConfig, source: str, output: str | Path, force: bool = False, printer=print) -> dict:
    t_start = time.time()
    output = Path(output)
    data = load_labelled(source, cfg.text_column, cfg.label_column)
    labels = data.labels
    task = resolve_task(cfg, labels)
    threshold = 0.5 if task == "binary" else cfg.threshold
    check_labels(labels, task, threshold)
    h = hashlib.sha256(cfg.model_dump_json().encode())
    for t, y in zip(data.texts, labels):
        h.update(hashlib.sha1(t.encode()).digest() + np.float32(y).tobytes())
    fingerprint = h.hexdigest()[:16]
    done = _already_trained(output, fingerprint)
    if done is not None and not force:
        printer(f"train-classifier: {output} already holds this classifier (same config and data); nothing to do. "
                "Use --force to retrain it.")
        return done
    tr, va, te, strat = split(labels, task, cfg)
    if len(tr) < cfg.min_train_examples:
        raise UserError(f"{source}: {len(labels)} labelled rows leave {len(tr)} training examples after the validation "
                        f"and test splits; a classifier needs at least classifier.min_train_examples="
                        f"{cfg.min_train_examples} (label more data, or lower it knowingly)")
    printer(f"train-classifier: {data.rows_read:,} rows ({data.empty_skipped:,} with empty text skipped) -> "
            f"{len(data.texts):,} distinct texts "
            f"({data.duplicates_merged:,} duplicates merged, {data.conflicting} with differing labels); "
            f"{task}; split {len(tr):,} / {len(va):,} / {len(te):,} (train / validation / test)")
    tmp = _prepare_output(output, force)
    try:
        parts = {"train": tr, "validation": va, "test": te}
        y = {k: labels[v].astype(np.float32) for k, v in parts.items()}
        texts = {k: [data.texts[i] for i in v] for k, v in parts.items()}
        spec = ClassifierSpec(kind=cfg.kind, task=task, threshold=threshold, label_column=cfg.label_column,
                              name=output.name, fingerprint=fingerprint, label_min=0.0, label_max=1.0 if task == "binary" else 5.0)
        raw: dict[str, np.ndarray] = {}
        if cfg.kind == "fasttext":
            from classifiers.fasttext_model import predict_fasttext, train_fasttext

            model = train_fasttext(texts["train"], y["train"], cfg.fasttext, cfg.seed)
            model.save_model(str(tmp / "model.bin"))
            raw = {k: predict_fasttext(model, texts[k], task) for k in parts}
            history = {"fasttext": cfg.fasttext}
        else:
            from safetensors.torch import save_file

            from classifiers.encoder import TextEncoder

            encoder = TextEncoder(cfg.encoder, cfg.device, cfg.max_length, cfg.windows, cfg.batch_tokens, dtype=cfg.dtype)
            spec.encoder, spec.mode, spec.max_length, spec.windows = cfg.encoder, cfg.mode, encoder.max_length, cfg.windows
            if cfg.mode == "frozen":
                emb = embed_cached(encoder, data.texts, cfg, printer)
                X = {k: emb[v] for k, v in parts.items()}
                head, history = train_head(X, y, task, cfg, encoder.device)
            else:
                head, history = train_finetune(encoder, texts, y, task, cfg, printer)
                encoder.st.save(str(tmp / "encoder"), safe_serialization=True)
                spec.encoder = "encoder"
                X = {k: encoder.encode(texts[k]) for k in parts}
            spec.head = {"type": cfg.head, "hidden": cfg.hidden, "dropout": cfg.dropout, "dim": encoder.dim}
            save_file({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}, str(tmp / "model.safetensors"))
            import torch

            with torch.no_grad():
                for k in parts:
                    out = head(torch.from_numpy(X[k]).to(encoder.device)).squeeze(-1)
                    raw[k] = (torch.sigmoid(out) if task == "binary" else out).cpu().numpy()
        uncal = evaluate(calibrate(raw["validation"], spec), y["validation"], spec)
        val_pos = int((y["validation"] >= threshold).sum())
        one_sided = val_pos in (0, len(y["validation"]))
        if cfg.calibrate and not one_sided:
            spec.cut = choose_cut(raw["validation"], y["validation"], spec)
        elif cfg.calibrate:
            printer("train-classifier: warning: the validation split holds only one side of the threshold; "
                    "no decision cut can be chosen, so the classifier stays uncalibrated")
        evaluated_on = "test" if len(te) else "validation"
        report = {k: evaluate(calibrate(raw[k], spec), y[k], spec) for k in ("validation", "test") if len(parts[k])}
        uncal_eval = evaluate(calibrate(raw[evaluated_on], ClassifierSpec(**{**asdict(spec), "cut": None})),
                              y[evaluated_on], spec)
        main = report[evaluated_on]
        positives = int((y[evaluated_on] >= threshold).sum())
        if positives < 5 or positives > len(y[evaluated_on]) - 5:
            printer(f"train-classifier: warning: the {evaluated_on} split has {positives} of {len(y[evaluated_on])} texts "
                    f"at or above the threshold {threshold:g}; its binary metrics mean little (label more, or more varied, data)")
        how = (f"Decision cut chosen on the validation split only (raw output {spec.cut:.3f} maximised validation "
               f"binary F1; mapped onto the int_score boundary {decision_boundary(spec):g})." if spec.cut is not None
               else "Uncalibrated: the raw output is the score"
               + (" (validation split one-sided: no cut could be chosen)." if cfg.calibrate else "."))
        metrics = {
            **{k: main[k] for k in ("binary_f1", "precision", "recall", "accuracy", "macro_f1", "per_class_f1",
                                    "confusion_matrix", "positive_rate")},
            "threshold": threshold, "task": task, "kind": cfg.kind, "mode": cfg.mode if cfg.kind == "encoder" else None,
            "evaluated_on": evaluated_on, "n_evaluated": main["n"], "calibration": how, "cut": spec.cut,
            "uncalibrated": {"binary_f1": uncal_eval["binary_f1"], "precision": uncal_eval["precision"],
                             "recall": uncal_eval["recall"], "validation_binary_f1": uncal["binary_f1"]},
            "validation": report["validation"], "test": report.get("test"),
            "n_train": int(len(tr)), "n_validation": int(len(va)), "n_test": int(len(te)), "stratified_by": strat,
            "seed": cfg.seed, "rows_read": data.rows_read, "empty_text_skipped": data.empty_skipped,
            "duplicates_merged": data.duplicates_merged,
            "conflicting_labels": data.conflicting, "source": source, "training": history,
            "train_time_s": round(time.time() - t_start, 1),
        }
        for k in ("mse", "spearman", "roc_auc"):
            if k in main:
                metrics[k] = main[k]
        # the books, before anything is made final: every row read is empty (skipped), a merged duplicate, or
        # in exactly one split
        accounted = data.empty_skipped + data.duplicates_merged + len(tr) + len(va) + len(te)
        metrics["books"] = {"rows_read": data.rows_read, "accounted": accounted, "balanced": accounted == data.rows_read
                            and len(set(tr) | set(va) | set(te)) == len(tr) + len(va) + len(te) == len(data.texts)}
        if not metrics["books"]["balanced"]:
            raise StageFailed(f"train-classifier: the books do not balance ({metrics['books']}); nothing is written "
                              f"to {output} (this is a bug: please report it)")
        save_spec(spec, tmp)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
        classes = ["0", "1"] if task == "binary" else [str(c) for c in range(6)]
        plot_confusion(main["confusion_matrix"], classes, tmp / "confusion_matrix.png",
                       f"{output.name}: {evaluated_on} split, binary F1@{threshold:g} = {main['binary_f1']:.3f}")
        (tmp / "README.md").write_text(_card(spec, metrics, data, source))
        if output.exists():
            shutil.rmtree(output)
        os.replace(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return metrics
