"""A Llama checkpoint loaded for loglikelihoods without transformers (docs/architecture.md, "The
loglikelihood path").

Why: importing transformers and building its tokenizer and model costs about 5 s of every run
on 2 cores (import ~1.5 s, tokenizer ~2 s, model ~1.5 s), longer than scoring a small task. The
flat forward (flat_forward.py) needs only the weight tensors, four config numbers and the
tokenizer's ids, so a checkpoint that fits it exactly (a Llama config with default RoPE,
safetensors weights, a `tokenizer.json`) is read directly: the weights with `safetensors`, the
tokenizer with the `tokenizers` library that transformers' fast tokenizer itself wraps. The
arithmetic and the token ids are the same (tests/test_lean_llama.py compares both with
transformers on the real checkpoint); anything else goes through transformers as before.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from tokenizers import Tokenizer

from engine.models.inference.flat_forward import LAYER_WEIGHTS, FlatLlama, LlamaLayer, LlamaShape

WEIGHT_DTYPES = {"F32", "F16", "BF16"}  # stored as plain floats (no quantized tensors)


def _config(model_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None


def _rope_theta(cfg: dict[str, Any]) -> float | None:
    """The RoPE base when the config asks for default (unscaled) RoPE, else None."""
    params = cfg.get("rope_parameters")
    if isinstance(params, dict):  # transformers 5
        return float(params.get("rope_theta", 10000.0)) if params.get("rope_type", "default") == "default" else None
    if cfg.get("rope_scaling"):
        return None
    return float(cfg.get("rope_theta", 10000.0))


def _weight_files(model_dir: Path) -> list[Path] | None:
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        try:
            return sorted({model_dir / f for f in json.loads(index.read_text())["weight_map"].values()})
        except (OSError, ValueError, KeyError):
            return None
    single = model_dir / "model.safetensors"
    return [single] if single.exists() else None


def lean_shape(model_dir: Path) -> LlamaShape | None:
    """The flat forward's shape when the checkpoint can be loaded without transformers, else None."""
    cfg = _config(model_dir)
    if (
        cfg is None
        or cfg.get("model_type") != "llama"
        or cfg.get("attention_bias") or cfg.get("mlp_bias")
        or cfg.get("hidden_act", "silu") != "silu"
        or cfg.get("pretraining_tp", 1) != 1
        or not (model_dir / "tokenizer.json").exists()
        or _weight_files(model_dir) is None
    ):
        return None
    theta = _rope_theta(cfg)
    if theta is None:
        return None
    heads = int(cfg["num_attention_heads"])
    return LlamaShape(n_heads=heads, n_kv=int(cfg.get("num_key_value_heads", heads)),
                      head_dim=int(cfg.get("head_dim") or cfg["hidden_size"] // heads), rope_theta=theta)


def load_flat(model_dir: Path, dtype: str) -> FlatLlama | None:
    """The flat forward over the checkpoint's safetensors weights (cast to `dtype`), or None when the
    checkpoint does not fit (lean_shape) or stores a tensor that is not a plain float."""
    shape = lean_shape(model_dir)
    files = _weight_files(model_dir)
    if shape is None or files is None:
        return None
    cfg = _config(model_dir) or {}
    want = getattr(torch, dtype)
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        with safe_open(str(file), "pt") as f:
            for name in f.keys():  # safe_open is not a mapping
                if f.get_slice(name).get_dtype() not in WEIGHT_DTYPES:
                    return None
                tensors[name] = f.get_tensor(name).to(want)
    eps = float(cfg.get("rms_norm_eps", 1e-6))
    try:
        layers = []
        for i in range(int(cfg["num_hidden_layers"])):
            layers.append(LlamaLayer.of([tensors[f"model.layers.{i}.{n}.weight"] for n in LAYER_WEIGHTS], eps))
        embed = tensors["model.embed_tokens.weight"]
        head = tensors.get("lm_head.weight", embed if cfg.get("tie_word_embeddings", True) else None)
        if head is None:
            return None
        return FlatLlama(layers, tensors["model.norm.weight"], eps, embed, head, shape)
    except KeyError:  # a weight under another name: transformers knows the mapping
        return None


def _token_content(value: Any) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


class LeanTokenizer:
    """The ids transformers' fast tokenizer gives (`encode(text, add_special_tokens=False)`), from the
    checkpoint's `tokenizer.json`, and its bos/eos/pad ids from the tokenizer config files."""

    def __init__(self, model_dir: Path):
        self._tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        special: dict[str, Any] = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the later file wins, as in transformers
            path = model_dir / name
            if path.exists():
                special.update(json.loads(path.read_text()))
        cfg = _config(model_dir) or {}
        self.bos_token_id = self._id(special.get("bos_token"), cfg.get("bos_token_id"))
        self.eos_token_id = self._id(special.get("eos_token"), cfg.get("eos_token_id"))
        pad = self._id(special.get("pad_token"), None)
        self.pad_token_id = pad if pad is not None else self.eos_token_id

    def _id(self, token: Any, fallback: Any) -> int | None:
        content = _token_content(token)
        found = self._tok.token_to_id(content) if content else None
        if found is not None:
            return int(found)
        return int(fallback) if isinstance(fallback, int) else None

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=add_special_tokens).ids)
