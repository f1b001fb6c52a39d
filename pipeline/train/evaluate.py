"""Zero-shot cloze evaluation: each choice scored by the model's log-likelihood of it as a continuation.

Layouts read (llm-foundry's local eval files, and HellaSwag's text release):
- ``{query, choices, gold}`` (ARC, PIQA, OpenBookQA, SIQA, CommonsenseQA, COPA, BoolQ, MMLU in that form):
  the context is the query; a "Question: ..." without an answer cue gets "\\nAnswer:"; choices follow a space;
- ``{context_options, continuation, gold}`` (WinoGrande): the shared continuation scored after each option;
- ``{context, continuation}`` (LAMBADA): correct when every continuation token is the greedy argmax;
- ``*.txt.bz2`` of 6-line items (HellaSwag): context, gold index, four endings.
``acc`` picks the highest total log-likelihood, ``acc_norm`` the highest per character (length-normalised,
the figure reported and compared). Chance is the mean of 1/choices; a score within two standard errors
of chance is flagged ``at_chance`` (an early-signal check: such a task cannot rank datasets yet).
"""

from __future__ import annotations

import bz2
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import UserError


@dataclass
class Item:
    contexts: list[str]  # one per choice (WinoGrande) or the same context repeated
    continuations: list[str]
    gold: int
    greedy: bool = False  # LAMBADA: one continuation, exact greedy match


def _mc_context(query: str) -> str:
    q = query.rstrip()
    if q.startswith("Question:") and not q.endswith(":"):
        q += "\nAnswer:"
    return q


def _from_record(rec: dict, where: str) -> Item:
    keys = set(rec)
    if {"query", "choices", "gold"} <= keys:
        ctx = (rec["context"].rstrip() + "\n" if isinstance(rec.get("context"), str) else "") + _mc_context(rec["query"])
        choices = [str(c) for c in rec["choices"]]
        item = Item([ctx] * len(choices), [" " + c.strip() for c in choices], int(rec["gold"]))
    elif {"context_options", "continuation", "gold"} <= keys:
        opts = [str(o) for o in rec["context_options"]]
        item = Item(opts, [" " + str(rec["continuation"]).strip()] * len(opts), int(rec["gold"]))
    elif {"context", "continuation"} <= keys and "choices" not in keys:
        item = Item([str(rec["context"]).rstrip()], [" " + str(rec["continuation"]).strip()], 0, greedy=True)
    else:
        raise UserError(f"{where}: unknown benchmark format (fields: {', '.join(sorted(keys))}); expected "
                        "{query, choices, gold}, {context_options, continuation, gold} or {context, continuation}")
    if not item.greedy and not 0 <= item.gold < len(item.continuations):
        raise UserError(f"{where}: gold {item.gold} is not an index into {len(item.continuations)} choices")
    return item


def _hellaswag(path: Path, limit: int | None) -> list[Item]:
    with bz2.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) % 6:
        raise UserError(f"{path}: {len(lines)} lines, not a multiple of 6 (context, gold, 4 endings per item)")
    items = []
    for i in range(0, len(lines), 6):
        ctx, gold, ends = lines[i], lines[i + 1], lines[i + 2:i + 6]
        if not gold.strip().isdigit() or not 0 <= int(gold) < 4:
            raise UserError(f"{path}:{i + 2}: expected the gold ending's index 0-3, got {gold[:40]!r}")
        items.append(Item([ctx] * 4, [" " + e.strip() for e in ends], int(gold)))
        if limit and len(items) >= limit:
            break
    return items


def load_task(path: str | Path, limit: int | None = None) -> list[Item]:
    path = Path(path)
    if path.name.endswith(".txt.bz2"):
        return _hellaswag(path, limit)
    if not path.name.endswith(".jsonl"):
        raise UserError(f"{path}: unknown benchmark format (expected .jsonl in an llm-foundry layout or HellaSwag .txt.bz2)")
    items = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{n}: not JSON ({e.msg})") from None
            if not isinstance(rec, dict):
                raise UserError(f"{path}:{n}: expected a JSON object")
            items.append(_from_record(rec, f"{path}:{n}"))
            if limit and len(items) >= limit:
                break
    if not items:
        raise UserError(f"{path}: no benchmark items")
    return items


def task_files(specs: list[str]) -> dict[str, Path]:
    """Task name (file name without extensions) -> file, from files and folders."""
    out: dict[str, Path] = {}
    for spec in specs:
        p = Path(spec).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.name.endswith((".jsonl", ".txt.bz2")))
            if not found:
                raise UserError(f"eval.tasks: {p} holds no benchmark files (.jsonl, .txt.bz2)")
        elif p.is_file():
            found = [p]
        else:
            raise UserError(f"eval.tasks: no such file or folder: {p}")
        for f in found:
            out[f.name.split(".")[0]] = f
    return out


def _requests(items: list[Item], tok, max_len: int):
    """(item, choice, token ids, number of continuation tokens at the end) per choice."""
    reqs = []
    for i, it in enumerate(items):
        for j, (ctx, cont) in enumerate(zip(it.contexts, it.continuations)):
            ctx_ids = tok.encode(ctx, add_special_tokens=False).ids
            whole = tok.encode(ctx + cont, add_special_tokens=False).ids
            n_cont = max(1, len(whole) - len(ctx_ids))
            ids = whole[-(max_len + 1):]
            reqs.append((i, j, ids, min(n_cont, len(ids) - 1)))
    return reqs


def score_items(model, tok, items: list[Item], device, max_len: int, batch_size: int, autocast=None,
                split_head: bool = True):
    """Per choice: (sum of continuation log-probs, all continuation tokens greedy?). ``split_head``
    runs the body once and the head on continuation positions only (off for FSDP-sharded models)."""
    import torch

    reqs = _requests(items, tok, max_len)
    order = sorted(range(len(reqs)), key=lambda k: -len(reqs[k][2]))
    logp = np.zeros(len(reqs))
    greedy = np.zeros(len(reqs), dtype=bool)
    model.eval()
    split_head = split_head and hasattr(model, "model") and hasattr(model, "lm_head")
    with torch.no_grad():
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            width = max(len(reqs[k][2]) for k in idx) - 1
            x = torch.zeros(len(idx), width, dtype=torch.long)
            for r, k in enumerate(idx):
                ids = reqs[k][2][:-1]
                x[r, :len(ids)] = torch.tensor(ids)
            with autocast() if autocast else torch.autocast("cpu", enabled=False):
                if split_head:  # the vocabulary projection only where continuations are: most of the cost
                    hidden = model.model(input_ids=x.to(device)).last_hidden_state
                else:
                    logits = model(input_ids=x.to(device)).logits
            for r, k in enumerate(idx):
                ids, n = reqs[k][2], reqs[k][3]
                targets = torch.tensor(ids[-n:], device=device)
                span = slice(len(ids) - 1 - n, len(ids) - 1)
                with autocast() if autocast else torch.autocast("cpu", enabled=False):
                    row = model.lm_head(hidden[r, span]) if split_head else logits[r, span]
                lp = torch.log_softmax(row.float(), dim=-1)
                logp[k] = lp.gather(1, targets[:, None]).sum().item()
                greedy[k] = bool((lp.argmax(-1) == targets).all())
    return reqs, logp, greedy


def evaluate_task(model, tok, items: list[Item], device, max_len: int, batch_size: int, autocast=None,
                  split_head: bool = True) -> dict:
    reqs, logp, greedy = score_items(model, tok, items, device, max_len, batch_size, autocast, split_head)
    per_item: dict[int, list] = {}
    for (i, j, _ids, _n), lp, g in zip(reqs, logp, greedy):
        per_item.setdefault(i, []).append((j, lp, g))
    acc = acc_norm = 0.0
    chance = 0.0
    for i, it in enumerate(items):
        rows = sorted(per_item[i])
        if it.greedy:
            acc += rows[0][2]
            acc_norm += rows[0][2]
            continue
        lps = np.array([r[1] for r in rows])
        chars = np.array([max(1, len(c)) for c in it.continuations])
        acc += int(np.argmax(lps)) == it.gold
        acc_norm += int(np.argmax(lps / chars)) == it.gold
        chance += 1 / len(it.continuations)
    n = len(items)
    chance /= n
    score = acc_norm / n
    stderr = math.sqrt(max(chance * (1 - chance), 1e-12) / n)
    return {"acc": acc / n, "acc_norm": score, "n": n, "chance": chance,
            "at_chance": bool(score - chance <= 2 * stderr), "stderr": math.sqrt(max(score * (1 - score), 1e-12) / n),
            "metric": "greedy_match" if items[0].greedy else "acc_norm"}
