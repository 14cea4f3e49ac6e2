"""The hf provider on the real SmolLM2: exact loglikelihoods and batched chat generation."""

from __future__ import annotations

import threading

import pytest
import torch

from engine.types import ChatMessage, GenerateRequest, LoglikelihoodRequest, SamplingParams

pytestmark = pytest.mark.slow


@pytest.fixture
def provider(smollm2_provider):
    return smollm2_provider  # shared for the session (tests/conftest.py)


def _naive(provider, context: str, continuation: str) -> float:
    """One full forward of context+continuation, no cache sharing, no padding."""
    tok, model = provider.tokenizer, provider.model
    ctx = tok.encode(context, add_special_tokens=False)
    cont = tok.encode(context + continuation, add_special_tokens=False)[len(ctx) :]
    with torch.inference_mode():
        logits = model(torch.tensor([ctx + cont])).logits[0]
    lp = torch.log_softmax(logits.float(), -1)
    return sum(float(lp[len(ctx) - 1 + i, t]) for i, t in enumerate(cont))


def test_reference_loglikelihoods(provider):
    (resp,) = provider.loglikelihood_sync(
        [LoglikelihoodRequest(context="The capital of France is", continuations=(" Paris", " London", " Berlin"))]
    )
    assert resp.logprobs == pytest.approx((-0.258, -4.384, -6.921), abs=2e-3)
    assert resp.is_greedy == (True, False, False)


def test_shared_context_batch_equals_independent_forwards(provider):
    reqs = [
        LoglikelihoodRequest(context="Question: What color is the sky on a clear day?\nAnswer:",
                             continuations=(" blue", " green with purple stripes", " red")),
        LoglikelihoodRequest(context="The capital of France is", continuations=(" Paris", " the city of Lyon")),
        LoglikelihoodRequest(context="2 + 2 =", continuations=(" 4", " five"), unconditional_context="Answer:"),
    ]
    out = provider.loglikelihood_sync(reqs)  # left-padded batch, one context forward each
    for req, resp in zip(reqs, out, strict=True):
        for cont, lp in zip(req.continuations, resp.logprobs, strict=True):
            assert lp == pytest.approx(_naive(provider, req.context, cont), abs=1e-3)
    assert out[2].unconditional_logprobs[0] == pytest.approx(_naive(provider, "Answer:", " 4"), abs=1e-3)


def test_batched_chat_generation(provider):
    reqs = [
        GenerateRequest(messages=(ChatMessage(role="user", content="What is the capital of France?"),),
                        sampling=SamplingParams(max_tokens=16)),
        GenerateRequest(messages=(ChatMessage(role="user", content="Count from 1 to 3."),),
                        sampling=SamplingParams(max_tokens=16, stop=(".",))),
    ]
    a, b = provider.generate_sync(reqs)
    assert "Paris" in a.text
    assert "." not in b.text and b.finish_reason == "stop"
    alone = provider.generate_sync(reqs[:1])[0]
    assert alone.text == a.text  # left padding does not change greedy output


def test_a_long_prompt_is_cut_as_lm_eval_cuts_it() -> None:
    """lm-eval feeds `(ctx + cont)[-(max_length + 1):][:-1]`: exactly max_length tokens."""
    from engine.models.inference.hf_loglikelihood import encode_pair

    class Chars:  # one token per character: the arithmetic is visible
        bos_token_id = 0

        def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
            return [ord(c) for c in text]

    context, continuation, max_length = "abcdefghij" * 3, "XYZ", 12
    ctx, cont = encode_pair(Chars(), context, continuation, max_length)
    whole = [ord(c) for c in context + continuation]
    assert cont == [ord(c) for c in "XYZ"]
    assert ctx + cont[:-1] == whole[-(max_length + 1):][:-1]
    assert len(ctx + cont[:-1]) == max_length
    short_ctx, _ = encode_pair(Chars(), "abc", "XYZ", max_length)  # nothing to cut
    assert short_ctx == [ord(c) for c in "abc"]


def test_seeded_samples_on_the_plain_path_do_not_depend_on_concurrent_batches(provider, monkeypatch):
    """The plain path seeds torch's global generator: under the model lock, so that a concurrent
    caller of `generate_sync` (threads of a Python user; the CLI's runner uses one model thread) can
    neither reseed nor draw from this batch's stream."""
    reqs = [GenerateRequest(prompt="def add(a, b):\n", sampling=SamplingParams(
        max_tokens=6, temperature=0.8, top_p=0.95, seed=1234 + i)) for i in range(4)]
    alone = [provider.generate_sync([r], plain=True)[0].text for r in reqs]
    seeds_under_lock: list[bool] = []
    real_seed = torch.manual_seed
    monkeypatch.setattr(torch, "manual_seed", lambda s: (seeds_under_lock.append(provider._lock.locked()),
                                                         real_seed(s))[1])
    out: dict[int, str] = {}
    threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, provider.generate_sync([reqs[i]], plain=True)[0].text))
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seeds_under_lock and all(seeds_under_lock)
    assert [out[i] for i in range(4)] == alone


def test_a_seeded_sample_on_the_plain_path_does_not_depend_on_its_batch(provider):
    """Sample i of every pass@k question shares seed i, so the runner batches them together: each
    must still be what its request gives alone (in one padded batch they drew from one stream, and a
    question's samples changed with `limit` and `model.batch_size`). The prefix engine gives the same."""
    sampling = SamplingParams(max_tokens=8, temperature=0.8, top_p=0.95, seed=1235)
    reqs = [GenerateRequest(prompt=p, sampling=sampling) for p in ("def add(a, b):\n", "def reverse(s):\n",
                                                                   "def is_even(n):\n")]
    alone = [provider.generate_sync([r], plain=True)[0].text for r in reqs]
    assert [r.text for r in provider.generate_sync(reqs, plain=True)] == alone
    assert [r.text for r in provider.generate_sync(reqs[::-1], plain=True)] == alone[::-1]
