"""The tool-calling SmolLM2: where its checkpoint lives, its chat template, its training identity.

`scripts/train_tool_caller.py` (`make tool-model`) fine-tunes the embedded SmolLM2 on synthetic
search trajectories (engine/training/trajectories.py) and saves the checkpoint here, under the
evalbench home. `model=smollm2_tools` names it by `model.name`; a run that names it before it is
trained stops with a ConfigError naming the command (docs/architecture.md, "Agents that use tools").

The checkpoint's chat template renders `tools` (so `protocol: auto` picks `native` for it): the
tool list is described in the system turn exactly as the text protocol describes it, assistant
calls are `<tool_call>{json}</tool_call>`, tool results are `<tool_response name=...>` user turns.
Both protocols therefore give the model the same tokens, and one training set teaches both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.config.errors import ConfigError
from engine.config.paths import evalbench_home
from engine.config.schema import ModelConfig
from engine.types import stable_hash

TOOL_MODEL_NAME = "smollm2-135m-tools"
TRAINING_FILE = "evalbench_training.json"  # the training config and data hash, beside the weights
# The training data's recipe, saved in TRAINING_FILE: a checkpoint of another recipe is stale and refused.
# 2: trajectories search the training documents only (no evaluation document is ever shown).
TRAINING_RECIPE = 2

# Mirrors engine/harness/protocol.py TEXT_PROTOCOL_PROMPT and describe_tools, token for token.
TOOLS_CHAT_TEMPLATE = (
    "{%- set ns = namespace(tools_text='', args='') -%}"
    "{%- if tools -%}{%- for t in tools -%}{%- set fn = t.function if t.function is defined else t -%}"
    "{%- set ns.args = '' -%}{%- for k, v in (fn.parameters.properties if fn.parameters is defined else {}).items() -%}"
    "{%- set ns.args = ns.args ~ (', ' if not loop.first else '') ~ '\"' ~ k ~ '\": ' ~ (v.type if v.type is defined else 'any') -%}{%- endfor -%}"
    "{%- set ns.tools_text = ns.tools_text ~ ('\\n' if not loop.first else '') ~ '- ' ~ fn.name ~ '({' ~ ns.args ~ '}): ' ~ (fn.description if fn.description is defined else '') -%}"
    "{%- endfor -%}"
    "{%- set ns.tools_text = 'You can call tools. To call a tool, write exactly one line:\\n<tool_call>{\"name\": \"TOOL_NAME\", \"arguments\": {...}}</tool_call>\\nand stop; the result comes back in <tool_response>. Available tools:\\n' ~ ns.tools_text -%}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{%- if loop.first and message.role != 'system' -%}"
    "{{ '<|im_start|>system\\n' ~ (ns.tools_text if tools else 'You are a helpful AI assistant named SmolLM, trained by Hugging Face') ~ '<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- if message.role == 'system' -%}"
    "{{ '<|im_start|>system\\n' ~ message.content ~ (('\\n\\n' ~ ns.tools_text) if tools else '') ~ '<|im_end|>\\n' }}"
    "{%- elif message.role == 'tool' -%}"
    "{{ '<|im_start|>user\\n<tool_response name=\"' ~ (message.name or '?') ~ '\">\\n' ~ message.content ~ '\\n</tool_response><|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' and message.tool_calls and '<tool_call>' not in (message.content or '') -%}"
    "{{ '<|im_start|>assistant\\n' ~ (message.content or '') }}"
    "{%- for tc in message.tool_calls -%}{%- set f = tc.function if tc.function is defined else tc -%}"
    "{{ '<tool_call>{\"name\": \"' ~ f.name ~ '\", \"arguments\": ' ~ (f.arguments if f.arguments is string else f.arguments|tojson) ~ '}</tool_call>' }}"
    "{%- endfor -%}{{ '<|im_end|>\\n' }}"
    "{%- else -%}"
    "{{ '<|im_start|>' ~ message.role ~ '\\n' ~ (message.content or '') ~ '<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def tool_model_dir() -> Path:
    return evalbench_home() / "models" / TOOL_MODEL_NAME


def is_tool_model(cfg: ModelConfig) -> bool:
    return cfg.provider == "hf" and cfg.name == TOOL_MODEL_NAME


def training_info(model_dir: Path) -> dict[str, Any] | None:
    """The training config and data hash saved with a trained checkpoint (None: not a trained one)."""
    try:
        data = json.loads((model_dir / TRAINING_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def training_revision(model_dir: Path) -> str | None:
    """`train:<hash>` of the training config and data: the model identity's revision, so two
    trainings with other settings or data are two models (the weights' hash tells them apart too)."""
    info = training_info(model_dir)
    return None if info is None else "train:" + stable_hash(info)[:12]


NOT_TRAINED = (
    "model=smollm2_tools selects the tool-calling SmolLM2 checkpoint, which is not trained yet on this "
    "machine (expected at {path}). Fix: run `make tool-model` (or `python scripts/train_tool_caller.py`; "
    "about 12 minutes on 2 CPU cores, deterministic), then rerun; or pick another model, e.g. model=smollm2."
)


STALE = (
    "model=smollm2_tools found a checkpoint at {path} trained by an older recipe (recipe {found}, expected "
    "{expected}: its training trajectories showed documents the evaluation questions are answered from). "
    "Fix: run `make tool-model` to retrain it (about 12 minutes on 2 CPU cores, deterministic), then rerun."
)


def with_tool_model(cfg: ModelConfig) -> ModelConfig:
    """`model=smollm2_tools` → the config pointing at the trained checkpoint; ConfigError (exit 2) naming
    `make tool-model` when it is not trained, or trained by another recipe (a stale checkpoint is never
    evaluated in its place). Any other model config is returned unchanged."""
    if not is_tool_model(cfg) or cfg.path is not None:
        return cfg
    path = tool_model_dir()
    info = training_info(path)
    if not (path / "model.safetensors").exists() or info is None:
        raise ConfigError(NOT_TRAINED.format(path=path))
    if info.get("recipe") != TRAINING_RECIPE:
        raise ConfigError(STALE.format(path=path, found=info.get("recipe", 1), expected=TRAINING_RECIPE))
    return cfg.model_copy(update={"path": str(path)})
