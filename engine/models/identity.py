"""Model identity: name, path, revision, checkpoint step and a content hash of the weights."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from engine.api import ModelIdentity
from engine.config.paths import evalbench_home
from engine.config.schema import ModelConfig

_STEP = re.compile(r"(?:step|checkpoint|ckpt)[-_]?(\d+)", re.IGNORECASE)
_WEIGHTS = ("*.safetensors", "*.bin", "*.gguf")


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
    memo = json.loads(memo_path.read_text()) if memo_path.exists() else {}
    if key in memo:
        return memo[key]
    digest = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 24), b""):
                digest.update(block)
    memo[key] = digest.hexdigest()[:16]
    memo_path.parent.mkdir(parents=True, exist_ok=True)
    memo_path.write_text(json.dumps(memo))
    return memo[key]


def model_identity(cfg: ModelConfig, model_dir: Path | None) -> ModelIdentity:
    return ModelIdentity(
        name=cfg.name,
        provider=cfg.provider,
        path=str(model_dir) if model_dir else cfg.path,
        revision=cfg.revision,
        checkpoint_step=checkpoint_step(cfg),
        content_hash=content_hash(model_dir) if model_dir else None,
    )
