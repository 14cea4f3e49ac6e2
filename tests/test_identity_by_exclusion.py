"""Model identity by exclusion (docs/architecture.md, "Boundaries"): every file of a model folder enters
its identity except a short documented list, and every model key a provider reads enters its options.

The reproduction: the same weights with another `rms_norm_eps` in config.json were served the answers
cached for the original model (only the weights and tokenizer files were hashed)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from engine.config.schema import ModelConfig
from engine.models.identity import content_hash, identity_files, model_identity
from tests.conftest import run_engine


def _copy_checkpoint(src: Path, dest: Path) -> Path:
    """The checkpoint folder, its large weight files symlinked (cheap; the memoized hash is reused)."""
    dest.mkdir()
    for f in src.iterdir():
        if f.suffix in (".safetensors", ".bin"):
            os.symlink(f.resolve(), dest / f.name)
        else:
            shutil.copy2(f, dest / f.name)
    return dest


def _run(workdir: Path, model_dir: Path) -> tuple[dict, list[dict]]:
    out = workdir / "runs" / model_dir.name
    res = run_engine(["task=mmlu:mc", "limit=3", f"model.path={model_dir}", "tracking=none", "progress=false",
                      f"output_dir={out}"], workdir)
    assert res.returncode == 0, res.stderr[-3000:]
    (record_path,) = out.rglob("experiment.json")
    instances = [json.loads(line) for line in (record_path.parent / "instances.jsonl").read_text().splitlines()]
    return json.loads(record_path.read_text()), instances


@pytest.mark.slow  # three engine runs on SmolLM2
def test_a_changed_config_json_is_another_model_and_a_changed_readme_is_not(workdir, smollm2_dir):
    _, first = _run(workdir, smollm2_dir)
    assert not any(i["cached"] for i in first)

    changed = _copy_checkpoint(smollm2_dir, workdir / "changed_eps")
    config = json.loads((changed / "config.json").read_text())
    config["rms_norm_eps"] = config.get("rms_norm_eps", 1e-5) * 10
    (changed / "config.json").write_text(json.dumps(config))
    record, instances = _run(workdir, changed)
    assert not any(i["cached"] for i in instances)  # no answer cached for the original model is served
    original = model_identity(ModelConfig(name="smollm2-135m-instruct", path=str(smollm2_dir)), smollm2_dir)
    assert record["model"]["content_hash"] != original.content_hash

    readme = _copy_checkpoint(smollm2_dir, workdir / "readme_only")
    (readme / "README.md").write_text("# A model card that says something else\n")
    record, instances = _run(workdir, readme)
    assert record["model"]["content_hash"] == original.content_hash
    assert all(i["cached"] for i in instances)  # the same model: its cached answers are served


def test_every_file_but_the_documented_ones_enters_the_identity(tmp_path):
    folder = tmp_path / "ckpt"
    (folder / "sub").mkdir(parents=True)
    (folder / ".git").mkdir()
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "sub/quant_map.json",
                 "README.md", ".gitattributes", "optimizer.pt", "trainer_state.json", ".git/HEAD"):
        (folder / name).write_text(name)
    hashed = {f.relative_to(folder).as_posix() for f in identity_files(folder)}
    assert hashed == {"config.json", "model.safetensors", "preprocessor_config.json", "sub/quant_map.json"}
    before = content_hash(folder)
    (folder / "sub" / "quant_map.json").write_text("another map")  # a file type nobody listed
    assert content_hash(folder) != before
    after = content_hash(folder)
    (folder / "README.md").write_text("another card")
    assert content_hash(folder) == after


def test_every_key_a_provider_reads_is_in_the_identity_of_an_api_model():
    base = ModelConfig(provider="litellm", name="openai/m", api_base="http://127.0.0.1:1/v1")
    ident = model_identity(base, None)
    for change in ({"api_base": "http://127.0.0.1:2/v1"}, {"name": "openai/other"},
                   {"supports_prompt_logprobs": True}, {"max_length": 4096}):
        other = ModelConfig.model_validate({**base.model_dump(), **change})
        assert model_identity(other, None) != ident, change
    for change in ({"timeout_s": 5.0}, {"batch_size": 3}, {"client": "lean"}, {"api_key_env": "MY_KEY"}):
        other = ModelConfig.model_validate({**base.model_dump(), **change})
        assert model_identity(other, None) == ident, change
