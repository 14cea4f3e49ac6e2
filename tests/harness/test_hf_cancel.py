"""The in-process model stops a cancelled generation (docs/architecture.md, "Stopping a run"): the
cancel flag is read after every generated token; while it is unset the outputs are unchanged."""

from __future__ import annotations

import asyncio
import threading

import pytest

from engine.types import ChatMessage, GenerateRequest, ProviderError, SamplingParams

pytestmark = pytest.mark.slow

QUESTIONS = ("What is the capital of France?", "Write a haiku about the sea.")


def _requests(max_tokens: int) -> list[GenerateRequest]:
    return [GenerateRequest(messages=(ChatMessage(role="user", content=q),),
                            sampling=SamplingParams(max_tokens=max_tokens, stop=("\n\n",))) for q in QUESTIONS]


def test_an_unset_cancel_flag_changes_no_output(smollm2_provider):
    plain = smollm2_provider.generate_sync(_requests(32))
    watched = smollm2_provider.generate_sync(_requests(32), threading.Event())
    assert [r.model_dump() for r in watched] == [r.model_dump() for r in plain]


def test_a_set_flag_ends_the_batch_at_its_next_token(smollm2_provider):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(ProviderError) as err:
        smollm2_provider.generate_sync(_requests(400), cancel)
    assert err.value.kind == "cancelled"


def test_cancelling_the_caller_sets_the_flag(smollm2_provider, monkeypatch):
    """`generate` awaited and cancelled: the call in the model thread sees its flag set."""
    seen: list[threading.Event] = []
    started = threading.Event()

    def fake_generate(requests, cancel):
        seen.append(cancel)
        started.set()
        cancel.wait(30)  # a generation that runs until it is told to stop
        raise ProviderError("the generation was cancelled", kind="cancelled")

    monkeypatch.setattr(smollm2_provider, "generate_sync", fake_generate)
    # transformers' generate (generation_engine=plain); the prefix engine's cancel: tests/test_generation_engine.py
    monkeypatch.setattr(smollm2_provider, "_gen", False)

    async def go() -> None:
        task = asyncio.create_task(smollm2_provider.generate(_requests(8)))
        await asyncio.to_thread(started.wait, 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    assert seen and seen[0].is_set()
