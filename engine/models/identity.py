"""Model identity: name, path, revision, checkpoint step and a content hash of the weights."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from engine.api import ModelIdentity, stable_hash
from engine.config.paths import evalbench_home
from engine.config.schema import ModelConfig
from engine.models.tool_caller import training_revision

_STEP = re.compile(r"(?:step|checkpoint|ckpt)[-_]?(\d+)", re.IGNORECASE)
_WEIGHTS = ("*.safetensors", "*.bin", "*.gguf")
_TOKENIZER = ("tokenizer*.json", "special_tokens_map.json", "added_tokens.json", "chat_template*", "vocab*", "merges*",
              "*.model", "generation_config.json")


def checkpoint_step(cfg: ModelConfig) -> int | None:
    if cfg.checkpoint_step is not None:
        return cfg.checkpoint_step
    if cfg.path:
        found = _STEP.findall(cfg.path)
        return int(found[-1]) if found else None
    return None


def content_hash(model_dir: Path) -> str:
    """sha256 over the weight files, memoized by (path, size, mtime) so a re-run costs nothing."""
    files = sorted(f for pattern in _WEIGHTS for f in model_dir.glob(pattern))
    key = "|".join(f"{f.resolve()}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)
    memo_path = evalbench_home() / "content_hashes.json"
    memo = _read_memo(memo_path)
    if key in memo:
        return memo[key]
    digest = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 24), b""):
                digest.update(block)
    value = digest.hexdigest()[:16]
    memo = {**_read_memo(memo_path), key: value}  # re-read: another engine may have added entries
    memo_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo_path.with_name(f".{memo_path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(memo))
    os.replace(tmp, memo_path)  # atomic: a concurrent reader sees the old or the new memo, never half
    return value


def _read_memo(path: Path) -> dict[str, str]:
    """The memo of weight hashes; unreadable (absent, half-written by an old version) is empty."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def tokenizer_hash(model_dir: Path) -> str | None:
    """sha256 over the tokenizer files and chat template: a new template is a new model for the cache."""
    files = sorted(f for pattern in _TOKENIZER for f in model_dir.glob(pattern))
    if not files:
        return None
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def model_identity(cfg: ModelConfig, model_dir: Path | None) -> ModelIdentity:
    # "truncation": how a prompt longer than max_length is cut (engine/models/hf_loglikelihood.py
    # encode_pair); a new convention changes answers, so it is part of the identity (and the cache key).
    options = ({"dtype": cfg.dtype, "max_length": cfg.max_length, "truncation": "lm-eval-left-v2"}
               if cfg.provider == "hf" else {})
    return ModelIdentity(
        name=cfg.name,
        provider=cfg.provider,
        path=str(model_dir) if model_dir else cfg.path,
        # A checkpoint trained here (scripts/train_tool_caller.py) names its training config and data.
        revision=cfg.revision or (training_revision(model_dir) if model_dir else None),
        checkpoint_step=checkpoint_step(cfg),
        content_hash=content_hash(model_dir) if model_dir else None,
        api_base=cfg.api_base.rstrip("/") if cfg.api_base else None,
        tokenizer_hash=tokenizer_hash(model_dir) if model_dir else None,
        options_hash=stable_hash(options)[:16] if options else None,
    )
