"""Model identity: name, path, revision, checkpoint step, a content hash of the model folder and the
serving options that reach a request, each by exclusion (docs/architecture.md, "Boundaries")."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from engine.config.paths import evalbench_home
from engine.config.schema import PROVIDER_KEYS, ModelConfig
from engine.models.tool_caller import training_revision
from engine.types import ModelIdentity, stable_hash

_STEP = re.compile(r"(?:step|checkpoint|ckpt)[-_]?(\d+)", re.IGNORECASE)
_TOKENIZER = ("tokenizer*.json", "special_tokens_map.json", "added_tokens.json", "chat_template*", "vocab*", "merges*",
              "*.model", "generation_config.json")


def checkpoint_step(cfg: ModelConfig) -> int | None:
    if cfg.checkpoint_step is not None:
        return cfg.checkpoint_step
    if cfg.path:
        found = _STEP.findall(cfg.path)
        return int(found[-1]) if found else None
    return None


# The files of a model folder that cannot change an answer, and only these, are left out of its
# identity (docs/architecture.md, "Boundaries"); every other file is hashed, so a file type added
# later (a new config, a processor, a quantization map) is in the identity without anyone listing it.
IGNORED_FILES = (
    "README*", "LICENSE*",  # the model card and licence: prose, never read by a loader
    ".gitattributes", "*.lock",  # git and download bookkeeping (LFS filters, hub download locks)
    # Trainer checkpoint state: resumes training, never read to evaluate (weights and config are).
    "optimizer.pt", "scheduler.pt", "rng_state*.pth", "trainer_state.json", "training_args.bin",
)
IGNORED_DIRS = (".git", ".cache")  # a clone's history; huggingface_hub's download metadata
_MEMO_BYTES = 1 << 20  # files this large (the weights) are hashed once, memoized by (path, size, mtime)


def identity_files(model_dir: Path) -> list[Path]:
    """Every file of the model folder that enters its identity (all but IGNORED_FILES/IGNORED_DIRS)."""
    out = []
    for root, dirs, files in os.walk(model_dir, followlinks=True):
        dirs[:] = sorted(d for d in dirs if d not in IGNORED_DIRS)
        out += [Path(root) / f for f in files if not any(fnmatch.fnmatch(f, p) for p in IGNORED_FILES)]
    return sorted(out, key=lambda f: f.relative_to(model_dir).as_posix())


def _file_hash(f: Path) -> str:
    digest = hashlib.sha256()
    with open(f, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def content_hash(model_dir: Path) -> str:
    """sha256 over every identity file of the folder (its relative path and content): the weights, the
    config (a changed `rope_theta` or `rms_norm_eps` is another model), the tokenizer, everything but
    IGNORED_FILES. The weights' hashes are memoized by (path, size, mtime) so a re-run costs nothing."""
    memo_path = evalbench_home() / "content_hashes.json"
    memo = _read_memo(memo_path)
    added: dict[str, str] = {}
    digest = hashlib.sha256()
    for f in identity_files(model_dir):
        stat = f.stat()
        key = f"file:{f.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
        value = memo.get(key) if stat.st_size >= _MEMO_BYTES else None
        if value is None:
            value = _file_hash(f)
            if stat.st_size >= _MEMO_BYTES:
                added[key] = value
        digest.update(f.relative_to(model_dir).as_posix().encode() + b"\0" + value.encode() + b"\0")
    if added:
        _write_memo(memo_path, added)
    return digest.hexdigest()[:16]


def _write_memo(memo_path: Path, added: dict[str, str]) -> None:
    memo = {**_read_memo(memo_path), **added}  # re-read: another engine may have added entries
    memo_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo_path.with_name(f".{memo_path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(memo))
    os.replace(tmp, memo_path)  # atomic: a concurrent reader sees the old or the new memo, never half


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
        options_hash=stable_hash(serving_options(cfg))[:16],
    )


# Model keys that are identity fields of their own (name, provider, path, revision, api_base; the
# checkpoint step is a label), or cannot change an answer: how many requests go at once (padding is
# masked), how long to wait, which client carries a request (lean and litellm give identical
# records, tests/test_litellm*), the name of the variable holding the API key (a secret; it
# authenticates, it selects no model).
NOT_OPTIONS = frozenset({"name", "provider", "path", "revision", "api_base", "checkpoint_step",
                         "batch_size", "timeout_s", "client", "api_key_env",
                         # the same greedy answers bar fp32 near-ties, as batch_size (docs/architecture.md, "The generation path")
                         "generation_engine"})


def serving_options(cfg: ModelConfig) -> dict[str, Any]:
    """Every key of the model config the provider reads that is not in NOT_OPTIONS (by exclusion: a key
    added to ModelConfig and read by a provider is in the identity without anyone listing it)."""
    used = PROVIDER_KEYS[cfg.provider] - NOT_OPTIONS
    options: dict[str, Any] = {k: v for k, v in cfg.model_dump(mode="json").items() if k in used}
    if cfg.provider == "hf":
        # How a prompt longer than max_length is cut (engine/models/inference/hf_loglikelihood.py encode_pair); a
        # new convention changes answers, so it is part of the identity (and the cache key).
        options["truncation"] = "lm-eval-left-v2"
    return options
