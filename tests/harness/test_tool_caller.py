"""The tool-calling SmolLM2: its training data (no overlap with the evaluation rows, no evaluation
document ever shown, one rendering for both protocols), a stale checkpoint refused, and, slow, a tiny
training run through the same code as `make tool-model`: deterministic, and the checkpoint loads and
runs one agent question."""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest

from engine.config.errors import ConfigError
from engine.config.paths import resolve_project_path
from engine.config.schema import ModelConfig
from engine.harness.search_index import LocalIndex
from engine.harness.tools import resolve_tools
from engine.models.tool_caller import TOOLS_CHAT_TEMPLATE, TRAINING_FILE, TRAINING_RECIPE, with_tool_model
from engine.training.finetune import TrainConfig, assistant_mask
from engine.training.trajectories import (
    CORPUS,
    QUERY_SUFFIX,
    build_tool_caller,
    corpus_split,
    leaked_conversations,
    render,
    search_agent_harness,
    training_questions,
    trajectories,
)


def _eval_rows():
    path = resolve_project_path("data/ellisande/ellisande_qa.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_training_questions_never_overlap_the_evaluation_rows():
    rows = _eval_rows()
    train = training_questions(10_000, seed=1234)
    assert len(rows) >= 50 and len(train) > 300
    assert not {r["question"] for r in rows} & {q["question"] for q in train}
    assert not {r["entity"] for r in rows} & {q["entity"] for q in train}
    assert not {r["doc"] for r in rows} & {q["doc"] for q in train}  # other entities, other documents


def test_the_corpus_split_is_disjoint_covers_the_corpus_and_holds_every_evaluation_entity():
    split = corpus_split()
    docs = LocalIndex.for_corpus(CORPUS).docs
    assert not split.evaluation & split.training
    assert split.evaluation | split.training == {d["id"] for d in docs}
    rows = _eval_rows()
    assert {r["doc"] for r in rows} <= split.evaluation
    entities = {r["entity"] for r in rows}
    assert not [d["id"] for d in docs if d["id"] in split.training and any(e in d["text"] for e in entities)]
    # a training company based in an evaluation town names it: an evaluation document too
    assert len(split.evaluation) > len({r["doc"] for r in rows}) and len(split.training) >= 50


def test_no_training_conversation_shows_an_evaluation_document():
    cfg = TrainConfig()
    split = corpus_split()
    conversations = trajectories(cfg.examples, cfg.seed)
    assert len(conversations) == cfg.examples == 240
    assert leaked_conversations(conversations, split) == 0
    entities = {r["entity"] for r in _eval_rows()}
    assert not [e for c in conversations for m in c for e in entities if e in (m.content or "")]
    # the measure can fail: the same questions searched over the whole corpus show evaluation documents
    leaky = trajectories(cfg.examples, cfg.seed, corpus=resolve_project_path(CORPUS))
    assert leaked_conversations(leaky, split) > 50


def test_a_checkpoint_of_an_older_training_recipe_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("EVALBENCH_HOME", str(tmp_path))
    model_dir = tmp_path / "models" / "smollm2-135m-tools"
    model_dir.mkdir(parents=True)
    (model_dir / "model.safetensors").write_bytes(b"")
    (model_dir / TRAINING_FILE).write_text(json.dumps({"data_hash": "0" * 16, "examples": 240}))
    with pytest.raises(ConfigError, match=r"older recipe.*make tool-model"):
        with_tool_model(ModelConfig(name="smollm2-135m-tools"))
    (model_dir / TRAINING_FILE).write_text(json.dumps({"data_hash": "0" * 16, "recipe": TRAINING_RECIPE}))
    assert with_tool_model(ModelConfig(name="smollm2-135m-tools")).path == str(model_dir)


def test_both_protocols_render_the_same_tokens_and_only_replies_are_trained(smollm2_dir):
    from transformers import AutoTokenizer  # deferred: heavy

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    tok.chat_template = TOOLS_CHAT_TEMPLATE
    schemas = [t.schema() for t in resolve_tools(search_agent_harness().tools)]
    text = [render(tok, m) for m in trajectories(3, seed=5, protocol="text")]
    native = [render(tok, m, schemas) for m in trajectories(3, seed=5, protocol="native")]
    assert text == native
    assert '<tool_call>{"name": "search", "arguments": {"query": ' in text[0]
    assert text[0].rstrip().endswith('"}}</tool_call><|im_end|>') and '{"name": "submit"' in text[0]
    enc = tok(text[0], return_offsets_mapping=True, add_special_tokens=False)
    mask = assistant_mask(text[0], enc["offset_mapping"])
    trained = tok.decode([i for i, m in zip(enc["input_ids"], mask, strict=True) if m])
    assert trained.startswith("<tool_call>") and "tool_response" not in trained and QUERY_SUFFIX not in trained


def _weights_hash(path):
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


@pytest.mark.slow
def test_a_tiny_training_is_deterministic_and_its_checkpoint_runs_an_agent_question(tmp_path):
    from engine.config.schema import ModelConfig
    from engine.harness.build import build_scaffold
    from engine.models import build_provider
    from engine.runner.cache import ResultCache
    from engine.runner.core import RunnerCore
    from engine.types import ChatMessage, GenerateRequest, SamplingParams

    cfg = TrainConfig(examples=1, epochs=1, batch=1, train_layers=1, seed=3)
    a = build_tool_caller(cfg, tmp_path / "a")
    b = build_tool_caller(cfg, tmp_path / "b")
    assert a["losses"] == b["losses"] and len(a["losses"]) == 1 and a["losses"][0] > 0
    assert _weights_hash(tmp_path / "a") == _weights_hash(tmp_path / "b")
    assert a["data_hash"] == b["data_hash"]

    provider = build_provider(ModelConfig(name="smollm2-135m-tools", path=str(tmp_path / "a")))
    assert provider.identity.revision and provider.identity.revision.startswith("train:")
    h = search_agent_harness().model_copy(update={"max_turns": 2})
    scaffold = build_scaffold(h, provider)
    assert scaffold.protocol == "native"  # the checkpoint's chat template renders tools
    core = RunnerCore(provider, h, ResultCache(None), progress=False)
    req = GenerateRequest(messages=(ChatMessage(role="user", content=_eval_rows()[0]["question"] + QUERY_SUFFIX),),
                          sampling=SamplingParams(max_tokens=48, stop=("<|im_end|>",)))
    traj = asyncio.run(scaffold.run(req, core.call_model))
    assert traj.error is None and traj.turns >= 1 and traj.end_reason in ("answer", "submit", "max_turns")
