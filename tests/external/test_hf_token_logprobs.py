"""The hf provider's prompt-token logprobs (the gateway's echo path) agree with its
LoglikelihoodRequest results within 1e-4, on real HellaSwag rows and the real SmolLM2."""

from __future__ import annotations

import pytest

from engine.config.compose import compose_task
from engine.config.schema import ModelConfig
from engine.models.hf import HFProvider
from engine.models.inference.hf_loglikelihood import encode_pair
from engine.tasks import build_task
from engine.types import TokenLogprobsRequest


@pytest.mark.slow
def test_token_logprobs_sum_to_the_loglikelihood_of_each_continuation() -> None:
    task = build_task(compose_task("hellaswag:rc"))
    requests = [task.build_request(i) for i in task.load_instances()[:3]]
    provider = HFProvider(ModelConfig(name="smollm2", batch_size=4))
    native = provider.loglikelihood_sync(requests)
    echo, ctxlens = [], []
    for req in requests:
        for cont in req.continuations:
            ctx, toks = encode_pair(provider.tokenizer, req.context, cont, 2048)  # lm-eval's split, same tokenizer
            echo.append(TokenLogprobsRequest(tokens=tuple(ctx + toks)))
            ctxlens.append(len(ctx))
    out = provider.token_logprobs_sync(echo)
    got = [sum(o.logprobs[n:]) for o, n in zip(out, ctxlens, strict=True)]  # type: ignore[arg-type]
    want = [lp for r in native for lp in r.logprobs]
    assert got == pytest.approx(want, abs=1e-4)
    for o in out:  # a greedy token's logprob equals the best one bit for bit (lm-eval compares with ==)
        assert all(lp <= top for lp, top in zip(o.logprobs[1:], o.top_logprobs[1:], strict=True))  # type: ignore[operator]
        assert o.text == provider.tokenizer.decode(list(o.tokens)) and len(o.token_texts) == len(o.tokens)
