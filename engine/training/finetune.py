"""Fine-tuning the embedded SmolLM2 on rendered agent trajectories, cheaply and deterministically.

CPU budget (docs/architecture.md, "Agents that use tools"): the lower layers and the embeddings are
frozen, so their hidden states are computed once per example, under no_grad, and the system prompt
every example shares is run through them once (its key/value cache is reused). Only the top
`train_layers` decoder layers and the final norm train, epoch after epoch, on those cached states;
the loss is on assistant tokens only and the output head runs only at those positions.
Deterministic given the seed: torch.manual_seed, a seeded example order, one example per forward.
"""

from __future__ import annotations

import copy
import json
import re
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from engine.models.tool_caller import TOOLS_CHAT_TEMPLATE, TRAINING_FILE, TRAINING_RECIPE

_ASSISTANT = re.compile(r"<\|im_start\|>assistant\n(.*?<\|im_end\|>)", re.S)


class TrainConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    seed: int = 1234
    examples: int = 240  # oracle trajectories
    epochs: int = 2
    batch: int = 4  # examples per optimizer step (gradient accumulation)
    lr: float = 5e-4
    train_layers: int = 8  # the top decoder layers that train (of 30)
    warmup_steps: int = 2


def assistant_mask(text: str, offsets: list[tuple[int, int]]) -> list[bool]:
    """Per token: whether it belongs to an assistant reply (its content and closing <|im_end|>)."""
    spans = [m.span(1) for m in _ASSISTANT.finditer(text)]
    return [any(s <= a < e for s, e in spans) and b > a for a, b in offsets]


def _common_prefix(seqs: list[list[int]]) -> int:
    n = min(len(s) for s in seqs)
    for i in range(n):
        if any(s[i] != seqs[0][i] for s in seqs):
            return i
    return n


def train_tool_caller(base_dir: Path, out_dir: Path, texts: list[str], cfg: TrainConfig, data_hash: str,
                      on_step: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Train on `texts` (rendered trajectories), save model + tokenizer (tools-aware chat template)
    + the training file to `out_dir` (written to a temp folder, then renamed). Returns a summary."""
    import torch  # deferred: heavy, training only
    from transformers import AutoModelForCausalLM, AutoTokenizer  # deferred: heavy, training only

    started = time.monotonic()
    torch.manual_seed(cfg.seed)
    tok = AutoTokenizer.from_pretrained(base_dir)
    tok.chat_template = TOOLS_CHAT_TEMPLATE
    model: Any = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model.train(False)  # no dropout in this model; eval mode keeps the forward deterministic
    body = model.model
    n_layers = len(body.layers)
    split = n_layers - cfg.train_layers
    for p in model.parameters():
        p.requires_grad_(False)
    trainable = [p for layer in body.layers[split:] for p in layer.parameters()] + list(body.norm.parameters())
    for p in trainable:
        p.requires_grad_(True)

    encoded = [tok(t, return_offsets_mapping=True, add_special_tokens=False) for t in texts]
    ids = [e["input_ids"] for e in encoded]
    masks = [assistant_mask(t, e["offset_mapping"]) for t, e in zip(texts, encoded, strict=True)]
    prefix = _common_prefix(ids) - 1  # keep one token of every example out of the shared prefix

    # Frozen part, once: the shared prefix through the lower layers, then each example's rest.
    all_layers, norm = body.layers, body.norm
    body.layers, body.norm = torch.nn.ModuleList(all_layers[:split]), torch.nn.Identity()
    states = []
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # `past_key_values` → `cache` rename (transformers 5.x)
        pre = body(input_ids=torch.tensor([ids[0][:prefix]]), use_cache=True)
        for seq in ids:
            rest = body(input_ids=torch.tensor([seq[prefix:]]), past_key_values=copy.deepcopy(pre.past_key_values),
                        use_cache=True)
            states.append(torch.cat([pre.last_hidden_state, rest.last_hidden_state], dim=1))
    body.layers, body.norm = all_layers, norm
    frozen_s = time.monotonic() - started

    opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=0.0)
    order_gen = torch.Generator().manual_seed(cfg.seed)
    steps_per_epoch = (len(texts) + cfg.batch - 1) // cfg.batch
    total = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup_steps)) * max(0.1, 1 - s / max(1, total)))
    losses: list[float] = []
    step = 0
    for _ in range(cfg.epochs):
        order = torch.randperm(len(texts), generator=order_gen).tolist()
        for b in range(0, len(order), cfg.batch):
            batch = order[b:b + cfg.batch]
            n_tokens = sum(sum(masks[i][1:]) for i in batch)
            step_loss = 0.0
            for i in batch:
                h = states[i]
                t = h.shape[1]
                pos = torch.arange(t).unsqueeze(0)
                pe = body.rotary_emb(h, pos)
                for layer in body.layers[split:]:
                    h = layer(h, attention_mask=None, position_ids=pos, position_embeddings=pe)
                    h = h[0] if isinstance(h, tuple) else h
                target = torch.tensor(ids[i][1:])
                where = torch.tensor(masks[i][1:])
                logits = model.lm_head(body.norm(h[0, :-1][where]))
                loss = torch.nn.functional.cross_entropy(logits, target[where], reduction="sum") / n_tokens
                loss.backward()
                step_loss += float(loss.detach())
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(step_loss)
            step += 1
            if on_step is not None:
                on_step(step, step_loss)

    info = {"base": "smollm2-135m-instruct", "config": cfg.model_dump(), "data_hash": data_hash,
            "examples": len(texts), "recipe": TRAINING_RECIPE, "tokens": sum(len(s) for s in ids)}
    tmp = out_dir.with_name(out_dir.name + ".partial")
    model.hf_quantizer = None  # the base config names its GGUF source; save_pretrained refuses that otherwise
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / TRAINING_FILE).write_text(json.dumps(info, indent=1, sort_keys=True))
    (tmp / "train_log.json").write_text(json.dumps({"losses": losses, "frozen_s": round(frozen_s, 1),
                                                    "total_s": round(time.monotonic() - started, 1)}))
    if out_dir.exists():
        for f in out_dir.iterdir():
            f.unlink()
        out_dir.rmdir()
    tmp.rename(out_dir)
    return {**info, "losses": losses, "frozen_s": frozen_s, "total_s": time.monotonic() - started}
