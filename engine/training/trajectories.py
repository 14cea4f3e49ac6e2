"""Synthetic tool-use trajectories for training the tool-calling SmolLM2, through the real tool loop.

Each training question (a fact of a `train` entity of the Ellisande corpus, asked with wordings the
evaluation never uses; data/ellisande/facts.jsonl) is run through `ToolLoop` with an oracle standing
in for the model: search with the question, fetch the page when the results do not hold the answer,
submit the answer. The tools are the real ones, so the prompts, tool results and call syntax are
exactly what the harness sends at evaluation time (docs/architecture.md, "Agents that use tools").
The text of the last request plus the oracle's last reply is one training example.

The corpus is split (`corpus_split`): a document that names an evaluation entity is an evaluation
document, every other one a training document. Trajectories search and fetch over the training
documents only (the same ids, titles and text, written to a temporary corpus), so no training
conversation ever shows an evaluation document; evaluation runs still search all of `data/corpus`.
"""

from __future__ import annotations

import asyncio
import json
import random
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

from engine.config.paths import conf_dir, resolve_project_path
from engine.config.schema import HarnessConfig
from engine.harness.protocol import Protocol
from engine.harness.scaffolds import ToolLoop
from engine.harness.search_index import LocalIndex
from engine.harness.tools import resolve_tools
from engine.models.embedded import embedded_checkpoint_dir
from engine.models.tool_caller import TOOLS_CHAT_TEMPLATE
from engine.training.finetune import TrainConfig, train_tool_caller
from engine.types import ChatMessage, GenerateRequest, GenerateResponse, SamplingParams, TokenUsage, stable_hash

FACTS = "data/ellisande/facts.jsonl"
EVAL_ROWS = "data/ellisande/ellisande_qa.jsonl"  # conf/task/ellisande_qa.yaml data_files
CORPUS = "data/corpus"  # conf/harness/search_agent.yaml tool_options: what evaluation runs search
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


def _jsonl(path: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in resolve_project_path(path).read_text().splitlines() if line.strip()]


class CorpusSplit(BaseModel):
    """The documents of `data/corpus` by ids, as the search tool addresses them (corpus://<id>)."""

    model_config = ConfigDict(frozen=True)

    evaluation: frozenset[str]  # names an evaluation entity (its answering document, or e.g. a company based there)
    training: frozenset[str]  # every other document: the only ones a training conversation may show


def corpus_split() -> CorpusSplit:
    """Split the evaluation corpus: a document that names any evaluation question's entity, or is the
    document a question is answered from, is an evaluation document; the rest train. Naming is
    substring match, so a doubt counts as evaluation (the conservative side)."""
    rows = _jsonl(EVAL_ROWS)
    entities = {r["entity"] for r in rows}
    answering = {r["doc"] for r in rows}
    docs = LocalIndex.for_corpus(CORPUS).docs
    evaluation = {d["id"] for d in docs if d["id"] in answering or any(e in d["text"] for e in entities)}
    return CorpusSplit(evaluation=frozenset(evaluation), training=frozenset(d["id"] for d in docs) - evaluation)


@contextmanager
def training_corpus(split: CorpusSplit) -> Iterator[Path]:
    """A temporary corpus of the training documents only, with their ids, titles, text and urls
    unchanged (one JSONL row each), so search results and fetched pages read as in evaluation."""
    docs = [d for d in LocalIndex.for_corpus(CORPUS).docs if d["id"] in split.training]
    with tempfile.TemporaryDirectory(prefix="evalbench-train-corpus-") as tmp:
        (Path(tmp) / "training.jsonl").write_text("".join(json.dumps(d, sort_keys=True) + "\n" for d in docs))
        yield Path(tmp)


def shown_documents(messages: Sequence[ChatMessage], docs: Sequence[dict[str, str]]) -> set[str]:
    """Ids of the documents a conversation shows: a search result names its address, a fetched page
    holds the start of its text."""
    seen = "\n".join(m.content or "" for m in messages)
    return {d["id"] for d in docs if d["url"] in seen or d["text"][:120] in seen}


def leaked_conversations(conversations: Sequence[Sequence[ChatMessage]], split: CorpusSplit) -> int:
    """How many conversations show an evaluation document (the training data must have none)."""
    evaluation = [d for d in LocalIndex.for_corpus(CORPUS).docs if d["id"] in split.evaluation]
    return sum(1 for c in conversations if shown_documents(c, evaluation))


def training_questions(n: int, seed: int) -> list[dict[str, Any]]:
    """`n` (question, answer, doc) drawn deterministically from the facts of `train` entities whose
    document is a training document (`corpus_split`)."""
    training_docs = corpus_split().training
    pool = [(f, t) for f in _jsonl(FACTS) if f["split"] == "train" and f["doc"] in training_docs
            for t in TRAIN_TEMPLATES[(f["kind"], f["attribute"])]]
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

    async def __call__(self, req: GenerateRequest, _timeout: float | None) -> tuple[GenerateResponse, int, float]:
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
        return GenerateResponse(text=text, usage=TokenUsage(prompt_tokens=1, completion_tokens=1)), 1, 0.0


async def _trajectory(loop: ToolLoop, q: dict[str, Any]) -> list[ChatMessage]:
    oracle = _Oracle(q["entity"], q["answer"], q["doc"])
    request = GenerateRequest(messages=(ChatMessage(role="user", content=q["question"] + QUERY_SUFFIX),),
                              sampling=SamplingParams(max_tokens=64, stop=("<|im_end|>",)))
    traj = await loop.run(request, oracle)
    assert oracle.last is not None and traj.end_reason == "submit", traj.end_reason
    req, text = oracle.last
    return [*(req.messages or ()), ChatMessage(role="assistant", content=text)]


def _run_trajectories(questions: list[dict[str, Any]], protocol: Protocol, corpus: Path) -> list[list[ChatMessage]]:
    h = search_agent_harness()
    options = {**h.tool_options, "search": {**h.tool_options.get("search", {}), "corpus": str(corpus)},
               "fetch_page": {**h.tool_options.get("fetch_page", {}), "corpus": str(corpus)}}
    h = h.model_copy(update={"tool_options": options})
    loop = ToolLoop(resolve_tools(h.tools), h, protocol, arguments_as_dict=True)

    async def run_all() -> list[list[ChatMessage]]:
        return [await _trajectory(loop, q) for q in questions]

    return asyncio.run(run_all())


def trajectories(n: int, seed: int, protocol: Protocol = "text", corpus: Path | None = None) -> list[list[ChatMessage]]:
    """`n` oracle trajectories (message lists ending with the submit call), deterministic in `seed`,
    searching the training documents only (`corpus`: another corpus, e.g. to measure a leak)."""
    questions = training_questions(n, seed)
    if corpus is not None:
        return _run_trajectories(questions, protocol, corpus)
    with training_corpus(corpus_split()) as training_only:
        return _run_trajectories(questions, protocol, training_only)


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
