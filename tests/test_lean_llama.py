"""The lean loader (engine/models/inference/lean_llama.py): a Llama checkpoint read without transformers gives
the same token ids and the same loglikelihoods as transformers' tokenizer and model, bit for bit;
a checkpoint it does not fit goes through transformers; a loglikelihood-only run never imports it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config.schema import ModelConfig
from engine.models.inference.lean_llama import lean_shape
from engine.types import LoglikelihoodRequest

REQUESTS = [
    LoglikelihoodRequest(context="Question: What is the capital of France?\nAnswer:",
                         continuations=(" Paris", " Lyon", " the city of Marseille, on the coast")),
    LoglikelihoodRequest(context="A man is sitting on a roof. He", continuations=(
        " is using wrap to wrap a pair of skis.", " starts pulling up roofing on a roof.")),
    LoglikelihoodRequest(context="The following are multiple choice questions.\n\nQ: 2+2=\nA. 3\nB. 4\nAnswer:",
                         continuations=(" A", " B"), unconditional_context="Answer:"),
]
TEXTS = ["  héllo\n\n wörld <|im_end|> 日本語 \t x", "Answer: (B)  ", "def f(x):\n\treturn x**2\n", " Wrong, Not wrong"]


def _copy_checkpoint(src: Path, dst: Path, **config_changes) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).symlink_to(f)
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(config_changes)
    (dst / "config.json").unlink()
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.mark.slow
def test_lean_path_equals_transformers_bit_for_bit(smollm2_dir):
    from engine.models.hf import HFProvider
    from engine.models.inference.lean_llama import LeanTokenizer

    lean = HFProvider(ModelConfig(name="smollm2-135m-instruct", path=str(smollm2_dir)))
    got = lean.loglikelihood_sync(REQUESTS)
    assert lean._lean and lean._model is None and lean._tokenizer is None  # transformers never loaded
    reference = HFProvider(ModelConfig(name="smollm2-135m-instruct", path=str(smollm2_dir)))
    reference.model  # noqa: B018 - transformers' model loaded first: its weights feed the flat forward
    want = reference.loglikelihood_sync(REQUESTS)
    assert reference._lean is False
    for g, w in zip(got, want, strict=True):
        assert g.logprobs == w.logprobs and g.is_greedy == w.is_greedy and g.token_counts == w.token_counts
        assert g.unconditional_logprobs == w.unconditional_logprobs
    tok, ref = LeanTokenizer(smollm2_dir), reference.tokenizer
    texts = TEXTS + [r.context for r in REQUESTS] + [c for r in REQUESTS for c in r.continuations]
    assert [tok.encode(t) for t in texts] == [ref.encode(t, add_special_tokens=False) for t in texts]
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (ref.bos_token_id, ref.eos_token_id, ref.pad_token_id)


@pytest.mark.slow
def test_bfloat16_runs_lean_within_bfloat16s_own_noise_of_transformers(smollm2_dir):
    """`model.dtype=bfloat16` on the lean path (it crashed: float32 RoPE tables made q and k float32
    beside a bfloat16 v). bfloat16 keeps ~3 digits: transformers' own bfloat16 forward moves these
    sums by up to 0.24 between batch sizes, so the bound is 0.5, with the clear-cut answer kept."""
    from engine.models.hf import HFProvider

    lean = HFProvider(ModelConfig(name="smollm2-135m-instruct", path=str(smollm2_dir), dtype="bfloat16"))
    got = lean.loglikelihood_sync(REQUESTS)
    assert lean._lean and lean._model is None
    reference = HFProvider(ModelConfig(name="smollm2-135m-instruct", path=str(smollm2_dir), dtype="bfloat16"))
    want = reference.loglikelihood_sync(REQUESTS, plain=True)
    for g, w in zip(got, want, strict=True):
        assert g.logprobs == pytest.approx(w.logprobs, abs=0.5) and g.token_counts == w.token_counts
    assert max(range(3), key=got[0].logprobs.__getitem__) == 0  # " Paris"


@pytest.mark.parametrize(("change", "fits"), [
    ({}, True),
    ({"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}}, False),  # scaled RoPE
    ({"model_type": "mistral"}, False),
    ({"attention_bias": True}, False),
    ({"hidden_act": "gelu"}, False),
])
def test_only_checkpoints_the_flat_forward_reproduces_are_loaded_lean(smollm2_dir, tmp_path, change, fits):
    ckpt = _copy_checkpoint(smollm2_dir, tmp_path / "ckpt", **change)
    assert (lean_shape(ckpt) is not None) is fits


def test_a_checkpoint_without_tokenizer_json_is_not_loaded_lean(smollm2_dir, tmp_path):
    ckpt = _copy_checkpoint(smollm2_dir, tmp_path / "ckpt")
    (ckpt / "tokenizer.json").unlink()
    assert lean_shape(ckpt) is None


def test_old_style_rope_config_is_read(smollm2_dir, tmp_path):
    ckpt = _copy_checkpoint(smollm2_dir, tmp_path / "ckpt", rope_parameters=None, rope_theta=500000.0, rope_scaling=None)
    shape = lean_shape(ckpt)
    assert shape is not None and shape.rope_theta == 500000.0
    scaled = _copy_checkpoint(smollm2_dir, tmp_path / "scaled", rope_parameters=None, rope_scaling={"type": "dynamic"})
    assert lean_shape(scaled) is None


@pytest.mark.slow
def test_scaled_rope_checkpoint_scores_through_transformers(smollm2_dir, tmp_path):
    from engine.models.hf import HFProvider

    ckpt = _copy_checkpoint(smollm2_dir, tmp_path / "ckpt",
                            rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 100000.0})
    provider = HFProvider(ModelConfig(name="scaled", path=str(ckpt)))
    out = provider.loglikelihood_sync(REQUESTS[:1])
    assert provider._lean is False and provider._model is not None and len(out[0].logprobs) == 3


@pytest.mark.slow
def test_loglikelihood_run_never_imports_transformers(tmp_path):
    """`python -m engine` on a loglikelihood task, uncached: torch yes (the weights), transformers no."""
    code = ("import sys; sys.argv=['engine','task=mmlu:mc','limit=2','tracking=none','progress=false',"
            f"'cache.path={tmp_path / 'c.sqlite'}','hydra.run.dir={tmp_path / 'run'}'];"
            "\nfrom engine.cli import main  # what `python -m engine` runs (its __main__ then ends with os._exit)"
            "\ntry: main()\nexcept SystemExit as e: assert not e.code, e.code"
            "\nprint('MODULES', 'torch' in sys.modules, 'transformers' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert "MODULES True False" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-3000:]


def test_hf_provider_runs_every_model_call_on_one_thread(smollm2_dir, monkeypatch):
    """torch starts an OpenMP thread team per calling thread: concurrent calls on a thread pool left
    idle teams spinning on the same cores (scoring 25-40% slower), so all model work has one thread."""
    import asyncio
    import threading
    import time

    from engine.models.hf import HFProvider

    provider = HFProvider(ModelConfig(name="smollm2-135m-instruct", path=str(smollm2_dir)))
    seen: list[int] = []

    def record(requests, *_):
        time.sleep(0.02)  # overlapping calls: a pool would hand them to different threads
        seen.append(threading.get_ident())
        return []

    monkeypatch.setattr(provider, "loglikelihood_sync", record)
    monkeypatch.setattr(provider, "generate_sync", record)
    monkeypatch.setattr(provider, "_gen", False)  # the plain path; the prefix engine's thread: tests/test_generation_engine.py
    monkeypatch.setattr(provider, "token_logprobs_sync", record)

    async def calls():
        await asyncio.gather(*(f([]) for f in (provider.loglikelihood, provider.generate, provider.token_logprobs)
                               for _ in range(4)))
        await provider.aclose()

    asyncio.run(calls())
    assert len(seen) == 12 and len(set(seen)) == 1 and seen[0] != threading.get_ident()
