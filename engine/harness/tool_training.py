"""Synthetic tool-use trajectories for training the tool-calling SmolLM2, through the real tool loop.

Each training question (a fact of a `train` entity of the Ellisande corpus, asked with wordings the
evaluation never uses; data/ellisande/facts.jsonl) is run through `ToolLoop` with an oracle standing
in for the model: search with the question, fetch the page when the results do not hold the answer,
submit the answer. The tools are the real ones over `data/corpus`, so the prompts, tool results and
call syntax are exactly what the harness sends at evaluation time (docs/architecture.md, "Agents
that use tools"). The text of the last request plus the oracle's last reply is one training example.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from engine.api import ChatMessage, GenerateRequest, GenerateResponse, SamplingParams, TokenUsage, stable_hash
from engine.config.paths import conf_dir, resolve_project_path
from engine.config.schema import HarnessConfig
from engine.harness.protocol import Protocol
from engine.harness.scaffolds import ToolLoop
from engine.harness.tools import resolve_tools
from engine.models.embedded import embedded_checkpoint_dir
from engine.models.tool_caller import TOOLS_CHAT_TEMPLATE
from engine.models.tool_caller_train import TrainConfig, train_tool_caller

FACTS = "data/ellisande/facts.jsonl"
QUERY_SUFFIX = "\nAnswer with a short phrase."  # conf/task/ellisande_qa.yaml generate_template

# Training wordings; the evaluation rows use scripts/make_agent_corpus.py EVAL_TEMPLATES (none of these).
TRAIN_TEMPLATES: dict[tuple[str, str], list[str]] = {
    ("town", "founded"): ["When was {name} established?", "{name} dates back to which year?",
                          "What year did {name} come into being?", "Since which year has {name} existed?"],
    ("town", "founder"): ["Who established {name}?", "Name the founder of {name}.",
                          "Which person set up {name}?", "Who started the settlement of {name}?"],
    ("town", "mayor"): ["Who serves as mayor of {name}?", "Name the mayor of {name}.",
                        "Who leads the town council of {name}?", "Which person is mayor in {name} today?"],
    ("town", "population"): ["How many people live in {name}?", "What is the census population of {name}?",
                             "How many residents does {name} have?", "What is the head count of {name}?"],
    ("town", "industry"): ["Which industry dominates {name}?", "What do most people in {name} work in?",
                           "What is the leading trade in {name}?", "Which business sector is biggest in {name}?"],
    ("town", "festival"): ["Which yearly festival takes place in {name}?", "Name the annual festival of {name}.",
                           "What celebration is held in {name} each year?", "Which festival is {name} known for?"],
    ("town", "river"): ["On which river does {name} lie?", "Name the river at {name}.",
                        "What river reaches the coast at {name}?", "Which river flows through {name}?"],
    ("company", "founded"): ["When was {name} established?", "{name} dates back to which year?",
                             "What year did {name} start trading?", "Since which year has {name} existed?"],
    ("company", "founder"): ["Who established {name}?", "Name the founder of {name}.",
                             "Which person set up {name}?", "Who started the company {name}?"],
    ("company", "ceo"): ["Who runs {name} as chief executive?", "Name the CEO of {name}.",
                         "Who leads {name} today?", "Which person heads {name}?"],
    ("company", "town"): ["Where is {name} headquartered?", "Which town is home to {name}?",
                          "Where does {name} have its base?", "In what town does {name} operate?"],
    ("company", "product"): ["What product is {name} famous for?", "Which goods does {name} make?",
                             "What does {name} manufacture?", "What are the main products of {name}?"],
    ("company", "employees"): ["How large is the workforce of {name}?", "How many staff work at {name}?",
                               "What is the number of employees at {name}?", "How many workers does {name} have?"],
    ("company", "mascot"): ["Which animal does {name} use as its mascot?", "Name the mascot animal of {name}.",
                            "What creature represents {name} as a mascot?", "Which animal stands for {name}?"],
}


def call_text(name: str, arguments: dict[str, Any]) -> str:
    """The call exactly as the text protocol prompt shows it (engine/harness/protocol.py)."""
    return f'<tool_call>{json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)}</tool_call>'


def search_agent_harness() -> HarnessConfig:
    """conf/harness/search_agent.yaml: the harness the model is trained for."""
    return HarnessConfig.model_validate(yaml.safe_load((conf_dir() / "harness" / "search_agent.yaml").read_text()))


def training_questions(n: int, seed: int) -> list[dict[str, Any]]:
    """`n` (question, answer, doc) drawn deterministically from the train split of the facts."""
    facts = [json.loads(line) for line in resolve_project_path(FACTS).read_text().splitlines() if line.strip()]
    pool = [(f, t) for f in facts if f["split"] == "train" for t in TRAIN_TEMPLATES[(f["kind"], f["attribute"])]]
    rng = random.Random(seed)
    picked = rng.sample(pool, min(n, len(pool)))
    return [{"question": t.format(name=f["entity"]), "entity": f["entity"], "answer": f["answer"], "doc": f["doc"]}
            for f, t in picked]


class _Oracle:
    """The model's stand-in: search for the entity the question names (a span the model can copy,
    which generalizes to unseen wordings better than the whole question), then fetch when the
    answer is not in the results, then submit."""

    def __init__(self, query: str, answer: str, doc: str):
        self.query, self.answer, self.url = query, answer, "corpus://" + doc
        self.last: tuple[GenerateRequest, str] | None = None

    async def __call__(self, req: GenerateRequest, _left: float | None) -> tuple[GenerateResponse, int]:
        msgs = list(req.messages or ())
        turns = sum(1 for m in msgs if m.role == "assistant")
        seen = msgs[-1].content if turns else ""
        if turns == 0:
            text = call_text("search", {"query": self.query})
        elif self.answer in seen or turns >= 2 or self.url not in seen:
            text = call_text("submit", {"answer": self.answer})
        else:
            text = call_text("fetch_page", {"url": self.url})
        self.last = (req, text)
        return GenerateResponse(text=text, usage=TokenUsage(prompt_tokens=1, completion_tokens=1)), 1


async def _trajectory(loop: ToolLoop, q: dict[str, Any]) -> list[ChatMessage]:
    oracle = _Oracle(q["entity"], q["answer"], q["doc"])
    request = GenerateRequest(messages=(ChatMessage(role="user", content=q["question"] + QUERY_SUFFIX),),
                              sampling=SamplingParams(max_tokens=64, stop=("<|im_end|>",)))
    traj = await loop.run(request, oracle)
    assert oracle.last is not None and traj.end_reason == "submit", traj.end_reason
    req, text = oracle.last
    return [*(req.messages or ()), ChatMessage(role="assistant", content=text)]


def trajectories(n: int, seed: int, protocol: Protocol = "text") -> list[list[ChatMessage]]:
    """`n` oracle trajectories (message lists ending with the submit call), deterministic in `seed`."""
    h = search_agent_harness()
    loop = ToolLoop(resolve_tools(h.tools), h, protocol, arguments_as_dict=True)

    async def run_all() -> list[list[ChatMessage]]:
        return [await _trajectory(loop, q) for q in training_questions(n, seed)]

    return asyncio.run(run_all())


def render(tokenizer: Any, messages: list[ChatMessage], tools: list[dict[str, Any]] | None = None) -> str:
    """The text the hf provider would build (engine/models/hf.py render_prompt), with the last reply."""
    return tokenizer.apply_chat_template([m.model_dump(exclude_none=True) for m in messages], tools=tools,
                                         tokenize=False, add_generation_prompt=False)


def data_hash(texts: list[str]) -> str:
    return stable_hash(texts)[:16]


def training_texts(cfg: TrainConfig, base: Path) -> list[str]:
    """The rendered training examples: the text protocol's rendering with the checkpoint's chat
    template (the native one renders the same tokens; tests/harness/test_tool_caller.py)."""
    from transformers import AutoTokenizer  # deferred: heavy, training only

    tok = AutoTokenizer.from_pretrained(base)
    tok.chat_template = TOOLS_CHAT_TEMPLATE
    return [render(tok, msgs) for msgs in trajectories(cfg.examples, cfg.seed, "text")]


def build_tool_caller(cfg: TrainConfig, out: Path, on_step: Callable[[int, float], None] | None = None,
                      on_data: Callable[[list[str], str], None] | None = None) -> dict[str, Any]:
    """Trajectories → rendered texts → fine-tuned checkpoint in `out` (scripts/train_tool_caller.py)."""
    base = embedded_checkpoint_dir()
    texts = training_texts(cfg, base)
    digest = data_hash(texts)
    if on_data is not None:
        on_data(texts, digest)
    return train_tool_caller(base, out, texts, cfg, digest, on_step)
