"""The prefix engine (engine/models/inference/generation.py; docs/architecture.md, "The generation path"):
its outputs equal transformers' `generate` (greedy, and sampled under a seed), shared prefixes are
computed once, a finished row's slot is taken at once, and an agent's next turn prefills only its
new tokens. Fast tests on a tiny random Llama; one slow journey per feature on the real SmolLM2."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from engine.types import ChatMessage, GenerateRequest, GenerateResponse, ProviderError, SamplingParams

torch = pytest.importorskip("torch")


# -- a tiny random Llama: the engine's own logic, against transformers' generate ------------------
class _Ids:
    """Decodes ids as text, one word per id: stop strings are visible in the ids."""

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(f"<{i}>" for i in ids)


EOS = 7


@pytest.fixture(scope="module")
def tiny() -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM  # deferred: heavy

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    model = LlamaForCausalLM(cfg).eval()
    model.generation_config.eos_token_id = EOS
    model.generation_config.pad_token_id = 0
    return model


def _engine(model: Any, slots: int) -> Any:
    from engine.models.inference.generation import build_engine

    engine = build_engine(model, _Ids(), slots)
    assert engine is not None
    return engine


def _run(engine: Any, prompts: list[list[int]], sampling: list[SamplingParams]) -> list[Any]:
    from engine.models.inference.generation import GenJob

    out: list[Any] = [None] * len(prompts)

    def settle(i: int):
        return lambda outcome: out.__setitem__(i, outcome)

    jobs = [GenJob(prompt=lambda p=p: p, sampling=s, settle=settle(i))
            for i, (p, s) in enumerate(zip(prompts, sampling, strict=True))]
    assert engine.add(jobs)
    engine.serve()
    return out


def _reference(model: Any, prompt: list[int], s: SamplingParams) -> list[int]:
    ids = torch.tensor([prompt])
    kwargs: dict[str, Any] = {"do_sample": False}
    if s.temperature > 0:
        kwargs = {"do_sample": True, "temperature": s.temperature, "top_p": s.top_p}
        torch.manual_seed(s.seed)
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=s.max_tokens,
                             pad_token_id=0, **kwargs)
    return out[0, len(prompt):].tolist()


def _references_without_eos(model: Any, prompts: list[list[int]], s: SamplingParams) -> list[list[int]]:
    """`generate`'s tokens for each prompt run to max_tokens (the engine under test has no eos either)."""
    model.generation_config.eos_token_id = None
    try:
        return [_reference(model, p, s) for p in prompts]
    finally:
        model.generation_config.eos_token_id = EOS


SHARED = list(range(10, 60))  # a 50-token "few-shot block" every prompt starts with


def test_greedy_rows_equal_transformers_generate_with_the_prefix_computed_once(tiny):
    prompts = [SHARED + [60 + i, 61 + i, 62] for i in range(5)]
    greedy = SamplingParams(max_tokens=12)
    engine = _engine(tiny, slots=2)
    got = _run(engine, prompts, [greedy] * 5)
    for prompt, result in zip(prompts, got, strict=True):
        ref = _reference(tiny, prompt, greedy)
        ref = ref[: ref.index(EOS) + 1] if EOS in ref else ref
        assert result.tokens == ref
        assert result.prompt_tokens == len(prompt)
    # the block is computed for the first prompt only: each later one prefills its 3 own tokens
    assert engine.prefilled_tokens == len(prompts[0]) + 4 * 3
    assert engine.reused_tokens == 4 * len(SHARED)


def test_rows_sharing_a_block_decode_against_one_copy_of_it(tiny):
    """The shared block's keys and values are read once per step for every row that reused it (one
    trunk), and a row's slot holds only what follows the block: outputs still equal `generate`."""
    from engine.models.inference.slots import CAP_STEP

    block = [10 + i % 80 for i in range(300)]  # longer than CAP_STEP: a copy per slot would grow it
    prompts = [block + [60 + i, 61 + i, 62] for i in range(4)]
    engine = _engine(tiny, slots=4)
    engine.eos_ids = set()
    groups: list[list[int]] = []
    decode = engine._decode_hidden
    engine._decode_hidden = lambda ids, pos, local, trunks: (  # type: ignore[method-assign]
        groups.append(sorted(len(idx) for _, idx in trunks)), decode(ids, pos, local, trunks))[1]
    got = _run(engine, prompts, [SamplingParams(max_tokens=8)] * 4)
    assert [r.tokens for r in got] == _references_without_eos(tiny, prompts, SamplingParams(max_tokens=8))
    assert [1, 3] in groups  # the first prompt's own rows, and the three that reused its block as one
    assert engine.kv.cap == CAP_STEP


def test_rows_of_different_lengths_never_read_uninitialized_keys(tiny):
    """A shorter row's attention reads the positions past its length with weight 0: they must be
    finite (0 x NaN is NaN: GSM8K 8-shot rows turned into special tokens when they were not)."""
    prompts = [SHARED + [60, 61], SHARED + [62, 63, 64, 65, 66, 67, 68]]
    engine = _engine(tiny, slots=2)
    engine.eos_ids = set()
    engine.kv.reserve(300)
    assert all(bool(torch.isfinite(t).all()) for t in engine.kv.keys + engine.kv.values)
    got = _run(engine, prompts, [SamplingParams(max_tokens=10)] * 2)
    assert [r.tokens for r in got] == _references_without_eos(tiny, prompts, SamplingParams(max_tokens=10))


def test_a_finished_row_leaves_and_a_waiting_one_takes_its_slot_at_once(tiny):
    long, short = SamplingParams(max_tokens=20), SamplingParams(max_tokens=2)
    prompts = [[20 + i, 30, 31, 32] for i in range(5)]
    model_without_eos = _engine(tiny, slots=2)
    model_without_eos.eos_ids = set()  # every row runs to its max_tokens: the step count is exact
    got = _run(model_without_eos, prompts, [long] + [short] * 4)
    assert [len(r.tokens) for r in got] == [20, 2, 2, 2, 2]
    # padded batches of two would take 20 + 2 + 2 = 24 steps; in flight the short rows pass
    # through the second slot while the long one decodes: 19 steps after its first token
    assert model_without_eos.steps == 19


def test_a_next_turn_prefills_only_its_new_tokens(tiny):
    engine = _engine(tiny, slots=2)
    engine.eos_ids = set()
    first = SHARED + [70, 71]
    turn = _run(engine, [first], [SamplingParams(max_tokens=6)])[0]
    before = engine.prefilled_tokens
    nxt = first + turn.tokens + [80, 81, 82]  # the tool result after the model's own tokens
    again = _run(engine, [nxt], [SamplingParams(max_tokens=6)])[0]
    # the last generated token was never fed: it and the 3 new ones are all that is computed
    assert engine.prefilled_tokens - before == 1 + 3
    assert again.tokens == _reference(tiny, nxt, SamplingParams(max_tokens=6))


def test_sampled_rows_follow_the_seed_as_generate_does_alone(tiny):
    prompt = SHARED + [65]
    samples = [SamplingParams(max_tokens=10, temperature=0.9, top_p=0.9, seed=s) for s in (1, 2, 3)]
    engine = _engine(tiny, slots=3)
    engine.eos_ids = set()
    first = [r.tokens for r in _run(engine, [prompt] * 3, samples)]
    assert first == [r.tokens for r in _run(engine, [prompt] * 3, samples)]
    assert len({tuple(t) for t in first}) > 1  # the seeds differ, so do the samples
    tiny.generation_config.eos_token_id = None
    try:
        assert first == [_reference(tiny, prompt, s) for s in samples]
    finally:
        tiny.generation_config.eos_token_id = EOS


def test_one_forward_admits_the_waiting_prompts_and_k_samples_share_one_prefill(tiny):
    """The prompts waiting when slots are free are prefilled in one flat forward (a decode-sized
    forward of a small model costs about the same for 1 row as for 16: admitting one prompt per
    forward cost a step each), and the k samples of one prompt are prefilled once."""
    engine = _engine(tiny, slots=5)
    engine.eos_ids = set()
    forwards: list[int] = []
    hidden = engine.flat.hidden
    engine.flat.hidden = lambda ids, pos, segments, keep=None: (  # type: ignore[method-assign]
        forwards.append(len(segments)), hidden(ids, pos, segments, keep=keep))[1]
    distinct = [[20 + i, 30 + i, 40] for i in range(3)]
    sampled = SHARED + [66]
    greedy = SamplingParams(max_tokens=6)
    samples = [SamplingParams(max_tokens=6, temperature=0.9, top_p=0.9, seed=s) for s in (4, 5)]
    got = _run(engine, [*distinct, sampled, sampled], [greedy] * 3 + samples)
    assert forwards == [4]  # three distinct prompts and one sampled twice: one forward, four prompts
    assert engine.prefilled_tokens == 3 * 3 + len(sampled)
    tiny.generation_config.eos_token_id = None
    try:
        assert [r.tokens for r in got] == [_reference(tiny, p, s) for p, s in
                                           zip([*distinct, sampled, sampled], [greedy] * 3 + samples, strict=True)]
    finally:
        tiny.generation_config.eos_token_id = EOS


def test_a_failed_prefill_settles_every_job_it_was_admitting(tiny):
    """A prefill that raises (out of memory, a bad prompt) settles each job of the round with the
    error: none is left in no row and no queue, its caller waiting forever."""
    engine = _engine(tiny, slots=4)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("prefill failed")

    from engine.models.inference.generation import GenJob

    engine.flat.hidden = broken  # type: ignore[method-assign]
    outcomes: list[Any] = []
    # the last two share an uncached block with each other: the second waits for a later round
    prompts = [[20, 21, 22], [30, 31], SHARED + [1], SHARED + [2]]
    engine.add([GenJob(prompt=lambda p=p: p, sampling=SamplingParams(max_tokens=4), settle=outcomes.append)
                for p in prompts])
    with pytest.raises(RuntimeError):
        engine.serve()
    assert len(outcomes) == 4 and all(isinstance(o, RuntimeError) for o in outcomes)
    assert not engine.running and not engine._rows and not engine._pending


def test_stop_strings_end_a_row_and_a_cancelled_job_is_settled_as_cancelled(tiny):
    from engine.models.inference.generation import GenJob

    engine = _engine(tiny, slots=2)
    engine.eos_ids = set()
    ref = _run(engine, [[40, 41]], [SamplingParams(max_tokens=8)])[0].tokens
    stop = f"<{ref[2]}>"
    got = _run(engine, [[40, 41]], [SamplingParams(max_tokens=8, stop=(stop,))])[0]
    assert got.stopped and got.tokens == ref[: ref.index(ref[2]) + 1]
    # as transformers' criterion reads the sequence's tail, a stop may begin in the prompt
    spanning = _run(engine, [[40, 41]], [SamplingParams(max_tokens=8, stop=(f"<41><{ref[0]}>",))])[0]
    assert spanning.stopped and spanning.tokens == ref[:1]
    outcome: list[Any] = []
    job = GenJob(prompt=lambda: [40, 41], sampling=SamplingParams(max_tokens=8), settle=outcome.append)
    job.cancel.set()
    engine.add([job])
    engine.serve()
    assert isinstance(outcome[0], ProviderError) and outcome[0].kind == "cancelled"


# -- the real SmolLM2 -------------------------------------------------------------------------------
def _task_requests(overrides: list[str]) -> list[GenerateRequest]:
    from engine.config.compose import compose_experiment
    from engine.config.suites import expand_experiment
    from engine.runner.task_run import prepare

    exp = compose_experiment(overrides)
    run = expand_experiment(exp)[0]
    task, instances = prepare(run, exp)
    samples = run.task.prompt.generation.samples
    out = []
    for inst in instances:
        base = task.build_request(inst)
        assert isinstance(base, GenerateRequest)
        for k in range(samples):  # the seeds plan_items gives pass@k's samples
            sampling = base.sampling.model_copy(update={"seed": exp.seed + k}) if samples > 1 else base.sampling
            out.append(base.model_copy(update={"sampling": sampling}))
    return out


def near_tie_or_equal(provider: Any, request: GenerateRequest, a: GenerateResponse, b: GenerateResponse,
                      gap: float = 1e-3) -> bool:
    """Equal outputs, or a first divergent token where the plain path's top-2 logits are within `gap`."""
    if a.text == b.text:
        return True
    tok = provider.tokenizer
    prompt = tok(provider.render_prompt(request), add_special_tokens=False)["input_ids"]
    x, y = tok(a.text, add_special_tokens=False)["input_ids"], tok(b.text, add_special_tokens=False)["input_ids"]
    common = next((i for i, (p, q) in enumerate(zip(x, y, strict=False)) if p != q), min(len(x), len(y)))
    with torch.inference_mode():
        logits = provider.model(torch.tensor([prompt + x[:common]])).logits[0, -1]
    top = logits.topk(2).values
    return float(top[0] - top[1]) < gap


@pytest.fixture(scope="module")
def prefix_provider(smollm2_dir: Any) -> Any:
    """The real SmolLM2 with `model.generation_engine=prefix` (opt-in: plain is the default)."""
    from engine.config.schema import ModelConfig
    from engine.models.hf import HFProvider

    return HFProvider(ModelConfig(name="smollm2-135m-instruct", path=str(smollm2_dir), generation_engine="prefix"))


@pytest.fixture(scope="module")
def gsm8k_requests() -> list[GenerateRequest]:
    return _task_requests(["task=gsm8k", "task.num_fewshot=3", "task.generation.max_tokens=32", "limit=3"])


@pytest.mark.slow
def test_gsm8k_greedy_equals_the_plain_path_and_reuses_the_shots(prefix_provider, gsm8k_requests):
    engine_before = prefix_provider._generation_engine()
    reused = engine_before.reused_tokens
    plain = prefix_provider.generate_sync(gsm8k_requests, plain=True)
    fast = prefix_provider.generate_sync(gsm8k_requests)
    assert all(near_tie_or_equal(prefix_provider, r, a, b) for r, a, b in zip(gsm8k_requests, plain, fast, strict=True))
    assert sum(a == b for a, b in zip(plain, fast, strict=True)) >= len(plain) - 1
    assert engine_before.reused_tokens - reused >= 2 * 200  # the 3-shot block, computed once

    async def one_call_each() -> list[list[GenerateResponse]]:
        """Separate calls (an agent's trajectories): their rows share the engine's batch."""
        return list(await asyncio.gather(*(prefix_provider.generate([r]) for r in gsm8k_requests)))  # one list each

    threads: list[int] = []
    serve = engine_before.serve
    engine_before.serve = lambda: (threads.append(threading.get_ident()), serve())[1]
    try:
        apart = asyncio.run(one_call_each())
    finally:
        del engine_before.serve
        asyncio.run(prefix_provider.aclose())
    assert [r[0].text for r in apart] == [r.text for r in fast]
    assert threads and threading.get_ident() not in threads  # the model thread, never the caller's


@pytest.mark.slow
def test_pass_at_k_samples_are_reproducible_and_equal_the_plain_path(prefix_provider):
    reqs = _task_requests(["task=humaneval", "variant=pass_at_10", "task.generation.samples=3", "task.pass_at_k=[1,3]",
                           "task.generation.max_tokens=32", "limit=1"])
    assert len(reqs) == 3 and len({r.sampling.seed for r in reqs}) == 3
    first = prefix_provider.generate_sync(reqs)
    assert [r.text for r in first] == [r.text for r in prefix_provider.generate_sync(reqs)]
    plain = [prefix_provider.generate_sync([r], plain=True)[0] for r in reqs]  # the plain path seeds per call
    assert all(near_tie_or_equal(prefix_provider, r, a, b) for r, a, b in zip(reqs, plain, first, strict=True))


@pytest.mark.slow
def test_an_agent_turn_prefills_only_the_new_messages(prefix_provider):
    engine = prefix_provider._generation_engine()
    first = GenerateRequest(messages=(ChatMessage(role="system", content="You answer briefly."),
                                      ChatMessage(role="user", content="Name a large city in France.")),
                            sampling=SamplingParams(max_tokens=16))
    reply = prefix_provider.generate_sync([first])[0]
    tool_result = "The search found: Lyon has 500,000 inhabitants."
    nxt = GenerateRequest(messages=(*(first.messages or ()), ChatMessage(role="assistant", content=reply.text),
                                    ChatMessage(role="user", content=tool_result)),
                          sampling=SamplingParams(max_tokens=16))
    tok = prefix_provider.tokenizer
    ids = [tok(prefix_provider.render_prompt(r), add_special_tokens=False)["input_ids"] for r in (first, nxt)]
    assert ids[1][: len(ids[0])] == ids[0]  # the chat template extends the conversation's tokens
    before = engine.prefilled_tokens
    again = prefix_provider.generate_sync([nxt])[0]
    new_tokens = len(ids[1]) - len(ids[0]) - reply.usage.completion_tokens
    assert engine.prefilled_tokens - before <= new_tokens + 2  # +2: the reply's last token and end marker
    assert again == prefix_provider.generate_sync([nxt], plain=True)[0]


@pytest.mark.slow
def test_a_call_made_while_the_engine_decodes_joins_its_rows_at_once(prefix_provider):
    """Separate `generate` calls (an agent's turns, the runner's single requests) share the running
    engine: a short request sent while a long one decodes is answered before the long one ends. The
    calls used to wait on the model thread behind the engine's serve, so a batch ran to its end first."""
    engine = prefix_provider._generation_engine()
    long = GenerateRequest(messages=(ChatMessage(role="user", content="Count from 1 to 200, separated by commas."),),
                           sampling=SamplingParams(max_tokens=96))
    short = GenerateRequest(messages=(ChatMessage(role="user", content="Say yes."),), sampling=SamplingParams(max_tokens=2))

    async def both() -> tuple[bool, GenerateResponse, GenerateResponse]:
        steps = engine.steps
        first = asyncio.create_task(prefix_provider.generate([long]))
        while engine.steps < steps + 3 and not first.done():  # the long row is decoding (never a hang)
            await asyncio.sleep(0.01)
        [answer] = await prefix_provider.generate([short])
        still_running = not first.done()
        [long_answer] = await first
        return still_running, answer, long_answer

    try:
        still_running, answer, long_answer = asyncio.run(both())
    finally:
        asyncio.run(prefix_provider.aclose())
    assert long_answer.usage.completion_tokens > 40  # long enough that the check below means something
    assert still_running and answer.text
