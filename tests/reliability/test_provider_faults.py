"""The litellm provider and the runner core against the fault server, in-process (fast).

Each fault must become a `ProviderError` whose kind names it, transient where a retry can help,
carrying the server's Retry-After; the core must then turn transient faults into right answers
(each question gets its own sum back) and permanent ones into errors, never into a wrong score.
The same table through `python -m engine` is tests/reliability/test_fault_table.py.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest

from engine.config.schema import HarnessConfig, ModelConfig
from engine.models.litellm_provider import LiteLLMProvider, _litellm
from engine.runner.cache import ResultCache
from engine.runner.core import RunnerCore
from engine.runner.work import WorkItem, check_response
from engine.types import ChatMessage, GenerateRequest, GenerateResponse, ProviderError
from tests.reliability.fault_server import Fault, FaultServer

HANG_TIMEOUT_S = 2.0  # the client timeout under `hang`; the server hangs far longer


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    _litellm()  # imported up front: seconds on a busy machine, which no request timeout should count
    with FaultServer() as srv:
        yield srv


def _provider(srv: FaultServer, timeout_s: float = 10.0, lean: bool | None = None) -> LiteLLMProvider:
    return LiteLLMProvider(ModelConfig(provider="litellm", name="openai/faulty", api_base=srv.base_url,
                                       timeout_s=timeout_s), lean=lean)


def _request(a: int, b: int, chat: bool) -> GenerateRequest:
    q = f"What is {a}+{b}?"
    if chat:
        return GenerateRequest(messages=(ChatMessage(role="user", content=q),))
    return GenerateRequest(prompt=f"Question: {q}\nAnswer:")


async def _one(srv: FaultServer, fault: Fault, chat: bool, lean: bool | None = None) -> GenerateResponse | ProviderError:
    srv.set_fault(fault)
    provider = _provider(srv, timeout_s=HANG_TIMEOUT_S, lean=lean)
    req = _request(2, 3, chat)
    try:
        [resp] = await provider.generate([req])
        check_response(req, resp, local=False)  # the core's own check (empty output)
        return resp
    except ProviderError as err:
        return err
    finally:
        await provider.aclose()


# fault → (kind, transient, retry_after)
ERRORS = {
    "rate_limit": ("RateLimitError", True, 2.0),
    "server_error": ("InternalServerError", True, None),
    "unavailable": ("ServiceUnavailableError", True, 2.0),
    "reset": ("connection_error", True, None),
    "hang": ("timeout", True, None),
    "malformed": ("malformed_response", True, None),
    "empty_choices": ("empty_response", True, None),
    "empty_content": ("empty_response", True, None),
    "bad_gateway": ("BadGatewayError", True, None),
    "html": ("malformed_response", True, None),
    "error_body": ("APIError", True, None),
    "wrong_shape": ("malformed_response", True, None),
    "bad_usage": ("malformed_response", True, None),
    "truncated": ("connection_error", True, None),
}


@pytest.mark.parametrize("chat", [True, False], ids=["chat", "completions"])
@pytest.mark.parametrize("kind", sorted(ERRORS))
def test_each_fault_is_a_typed_provider_error(server, kind, chat):
    expected_kind, transient, retry_after = ERRORS[kind]
    got = asyncio.run(_one(server, Fault(kind=kind, retry_after=2.0), chat))
    assert isinstance(got, ProviderError), got
    assert (got.kind, got.transient, got.retry_after) == (expected_kind, transient, retry_after), str(got)
    assert server.log[-1].endpoint == ("chat" if chat else "completions")


# where litellm's own client classifies a fault otherwise (it reads a 200 error body as a bad request)
LITELLM_KINDS = {("error_body", True): ("BadRequestError", False), ("error_body", False): ("empty_response", True)}


@pytest.mark.parametrize("chat", [True, False], ids=["chat", "completions"])
@pytest.mark.parametrize("kind", sorted(set(ERRORS) - {"hang"}))  # hang: the same client timeout, slow
def test_litellms_own_client_types_each_fault_too(server, kind, chat):
    """`model.client=litellm` (any API litellm translates): a broken response is a typed error as
    well, never an exception the run cannot name (a wrong-typed field used to escape as pydantic's)."""
    got = asyncio.run(_one(server, Fault(kind=kind, retry_after=2.0), chat, lean=False))
    assert isinstance(got, ProviderError), got
    assert (got.kind, got.transient) == LITELLM_KINDS.get((kind, chat), ERRORS[kind][:2]), str(got)
    assert got.retry_after == ERRORS[kind][2], got.retry_after  # the server's Retry-After, read as the lean path reads it


@pytest.mark.parametrize("chat", [True, False], ids=["chat", "completions"])
def test_a_healthy_server_answers_each_question(server, chat):
    got = asyncio.run(_one(server, Fault(), chat))
    assert isinstance(got, GenerateResponse) and got.text == "5"


def _core(provider: LiteLLMProvider, **harness: float) -> RunnerCore:
    h = HarnessConfig(concurrency=20, max_retries=3, retry_backoff_s=0.01, request_timeout_s=10.0)
    return RunnerCore(provider, h.model_copy(update=harness), ResultCache(None), progress=False)


async def _run_core(srv: FaultServer, fault: Fault, n: int = 10, **harness: float):
    srv.set_fault(fault)
    provider = _provider(srv)
    items = [WorkItem(key=f"q{i}", request=_request(10 + i, 3 * i + 7, chat=True)) for i in range(n)]
    try:
        return await _core(provider, **harness).run(items)
    finally:
        await provider.aclose()


TRANSIENT = [
    Fault(kind="rate_limit", times=2),
    Fault(kind="server_error", times=2),
    Fault(kind="unavailable", times=2),
    Fault(kind="reset", times=2),
    Fault(kind="hang", times=1),
    Fault(kind="malformed", times=2),
    Fault(kind="empty_choices", times=2),
    Fault(kind="empty_content", times=2),
]


@pytest.mark.parametrize("fault", TRANSIENT, ids=[f.kind for f in TRANSIENT])
def test_the_core_retries_transient_faults_into_right_answers(server, fault):
    timeout = HANG_TIMEOUT_S if fault.kind == "hang" else 10.0
    outcomes = asyncio.run(_run_core(server, fault, request_timeout_s=timeout))
    assert len(outcomes) == 10
    for i in range(10):
        o = outcomes[f"q{i}"]
        assert o.error is None and isinstance(o.response, GenerateResponse), o.error
        assert o.response.text == str(10 + i + 3 * i + 7)  # its own sum, not a neighbour's
        assert o.attempts == (fault.times or 0) + 1
    per_question = {h.key: h.attempt for h in server.log}
    assert set(per_question.values()) == {(fault.times or 0) + 1}


def test_the_core_waits_for_retry_after(server):
    outcomes = asyncio.run(_run_core(server, Fault(kind="rate_limit", times=1, retry_after=1.0), n=3))
    assert all(o.error is None and o.attempts == 2 for o in outcomes.values())
    first = {h.key: h.at for h in server.log if h.attempt == 1}
    second = {h.key: h.at for h in server.log if h.attempt == 2}
    assert set(first) == set(second) and len(first) == 3
    assert all(second[k] - first[k] >= 1.0 for k in first), {k: second[k] - first[k] for k in first}


def test_a_permanent_fault_is_an_error_after_every_retry(server):
    outcomes = asyncio.run(_run_core(server, Fault(kind="empty_choices"), n=4))
    for o in outcomes.values():
        assert o.response is None and o.error is not None
        assert (o.error.kind, o.error.attempts) == ("empty_response", 4)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_probe_refuses_an_unreachable_server_at_once():
    port = _closed_port()
    provider = LiteLLMProvider(ModelConfig(provider="litellm", name="openai/x", api_base=f"http://127.0.0.1:{port}/v1"))
    t0 = time.monotonic()
    with pytest.raises(ProviderError) as info:
        asyncio.run(provider.probe())
    assert time.monotonic() - t0 < 4
    err = info.value
    assert err.kind == "config" and f"127.0.0.1:{port}" in str(err) and "Fix:" in str(err)
    assert "\n" not in str(err)


@pytest.mark.parametrize("base", ["127.0.0.1:8000/v1", "http://127.0.0.1:notaport/v1", "ftp://host/v1"])
def test_the_probe_refuses_a_malformed_api_base(base):
    provider = LiteLLMProvider(ModelConfig(provider="litellm", name="openai/x", api_base=base))
    with pytest.raises(ProviderError) as info:
        asyncio.run(provider.probe())
    assert info.value.kind == "config" and "http://127.0.0.1:8000/v1" in str(info.value)


def test_the_probe_passes_a_listening_server_and_a_hosted_api(server):
    asyncio.run(_provider(server).probe())
    asyncio.run(LiteLLMProvider(ModelConfig(provider="litellm", name="openai/gpt-4o-mini")).probe())
