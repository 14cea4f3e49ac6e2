"""The `hf` provider: transformers in-process, batched generation and exact loglikelihoods."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any, TypeVar

from engine.config.schema import ModelConfig
from engine.models.embedded import embedded_checkpoint_dir
from engine.models.identity import model_identity
from engine.types import (
    GenerateRequest,
    GenerateResponse,
    LoglikelihoodRequest,
    LoglikelihoodResponse,
    ModelIdentity,
    ProviderError,
    TokenLogprobsRequest,
    TokenLogprobsResponse,
    TokenUsage,
    truncate_at_stop,
)


def resolve_model_dir(cfg: ModelConfig) -> Path:
    if cfg.path is None:
        return embedded_checkpoint_dir()
    path = Path(cfg.path).expanduser()
    if not path.exists():
        raise ProviderError(
            f"model.path '{cfg.path}' does not exist. Fix: give a local Hugging Face checkpoint "
            "directory (config.json + weights), or leave model.path unset for the embedded SmolLM2.",
            kind="config",
        )
    missing = [what for what, globs in (("config.json", ("config.json",)),
                                        ("weights (*.safetensors or *.bin)", ("*.safetensors", "*.bin")),
                                        ("tokenizer (tokenizer.json or tokenizer.model)",
                                         ("tokenizer.json", "tokenizer.model", "vocab.json")))
               if not any(next(path.glob(g), None) for g in globs)]
    if missing:
        raise ProviderError(
            f"model.path '{cfg.path}' is not a Hugging Face checkpoint directory: it has no {', no '.join(missing)}. "
            "Fix: point model.path at the folder `save_pretrained` wrote (config.json, weights and tokenizer "
            "files), or leave model.path unset for the embedded SmolLM2.",
            kind="config",
        )
    return path


T = TypeVar("T")


class ModelThread(Executor):
    """One daemon thread that runs the submitted calls in order (`HFProvider._on_worker`).

    Not a ThreadPoolExecutor: Python joins its threads at exit, so a run stopped by Ctrl-C or
    SIGTERM waited for the batch in the model to finish (a long prompt's first forward step cannot
    be cut by the per-token cancel flag) before the process could end. A daemon thread is not
    waited for (docs/architecture.md, "Stopping a run")."""

    def __init__(self, name: str):
        self._calls: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None] = queue.SimpleQueue()
        self._running = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        fut: Future[T] = Future()
        self._calls.put((fut, lambda *a: fn(*a, **kwargs), args))
        return fut

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._calls.put(None)
        if wait:
            self._thread.join()

    @property
    def busy(self) -> bool:
        """A call is running (a cancelled batch still in the model)."""
        return self._running

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            fut, fn, args = call
            if not fut.set_running_or_notify_cancel():
                continue  # its caller was cancelled before it started
            self._running = True
            try:
                fut.set_result(fn(*args))
            except BaseException as err:  # noqa: BLE001 - handed to the awaiting caller
                fut.set_exception(err)
            finally:
                self._running = False


class HFProvider:
    """One model in this process; calls are serialized (the CPU is the bottleneck anyway)."""

    def __init__(self, cfg: ModelConfig):
        self.cfg = cfg
        self.model_dir = resolve_model_dir(cfg)
        self.identity: ModelIdentity = model_identity(cfg, self.model_dir)
        self.max_batch = cfg.batch_size
        self._lock = threading.Lock()
        self._tokenizer: Any = None
        self._model: Any = None
        self._flat: Any = None  # flat_forward.FlatLlama over the loaded weights, when the model supports it
        self._prefixes: Any = None  # hf_tree.PrefixCache: shared prefixes' keys and values across calls
        # (FlatLlama, LeanTokenizer) read without transformers (lean_llama.py); False: the checkpoint needs transformers
        self._lean: Any = None
        self._worker: ModelThread | None = None
        self._gen: Any = None  # inference.generation.GenerationEngine; False: generation_engine=plain or no flat forward
        self.token_budget = 4096  # new tokens per flat forward (bounds activations; ~100 MB at 135M)

    # Loaded on first use: a fully cached re-run never pays for torch weights.
    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer  # deferred: ~2 s, not needed by a cached run

            tok = AutoTokenizer.from_pretrained(self.model_dir, revision=self.cfg.revision)
            tok.padding_side = "left"
            if tok.pad_token_id is None:
                tok.pad_token = tok.eos_token
            self._tokenizer = tok
        return self._tokenizer

    @property
    def model(self):
        if self._model is None:
            import torch  # deferred: ~3 s, not needed by a cached run
            from transformers import AutoModelForCausalLM  # deferred: ~2 s, not needed by a cached run
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            hf_logging.set_verbosity_error()
            model: Any = AutoModelForCausalLM.from_pretrained(
                self.model_dir, revision=self.cfg.revision, dtype=getattr(torch, self.cfg.dtype)
            )
            self._model = model.to(self.cfg.device).eval()
        return self._model

    # -- loglikelihood -------------------------------------------------------------------------
    def loglikelihood_sync(self, requests: Sequence[LoglikelihoodRequest], plain: bool = False
                           ) -> list[LoglikelihoodResponse]:
        """`plain`: the padded transformers forward even when the flat one applies (tests compare them)."""
        # Deferred: the module imports torch (~3 s), which a fully cached run never needs.
        from engine.models.inference.hf_loglikelihood import flat_scorer, loglikelihood_batch

        with self._lock:
            if not plain and (lean := self._lean_scorer()):
                flat, tokenizer = lean
                return loglikelihood_batch(None, tokenizer, requests, self.cfg.max_length, flat=flat,
                                           cache=self._prefixes, token_budget=self.token_budget)
            model = self.model
            if self._prefixes is None and self.cfg.device == "cpu":
                self._flat, self._prefixes = flat_scorer(model)
            flat = None if plain else self._flat
            return loglikelihood_batch(model, self.tokenizer, requests, self.cfg.max_length, flat=flat,
                                       cache=self._prefixes, token_budget=self.token_budget)

    def _lean_scorer(self) -> Any:
        """(flat forward, tokenizer) read without transformers when the checkpoint allows it on CPU
        (engine/models/lean_llama.py), else None; loaded once."""
        if self._lean is None:
            self._lean = False
            if self.cfg.device == "cpu" and self._model is None:  # loaded weights are reused, never read twice
                from engine.models.inference.hf_loglikelihood import lean_scorer  # deferred: imports torch

                if (lean := lean_scorer(self.model_dir, self.cfg.dtype)) is not None:
                    self._lean, self._prefixes = lean[:2], lean[2]
        return self._lean or None

    async def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResponse]:
        return await self._on_worker(self.loglikelihood_sync, requests)

    def token_logprobs_sync(self, requests: Sequence[TokenLogprobsRequest]) -> list[TokenLogprobsResponse]:
        from engine.models.inference.hf_loglikelihood import token_logprobs_batch  # deferred: imports torch

        with self._lock:
            return token_logprobs_batch(self.model, self.tokenizer, requests, self.cfg.max_length)

    async def token_logprobs(self, requests: Sequence[TokenLogprobsRequest]) -> list[TokenLogprobsResponse]:
        """Prompt-token logprobs (OpenAI echo), for the model gateway of external evals."""
        return await self._on_worker(self.token_logprobs_sync, requests)

    # -- generation ----------------------------------------------------------------------------
    def render_prompt(self, request: GenerateRequest) -> str:
        if request.prompt is not None:
            return request.prompt
        messages = [m.model_dump(exclude_none=True) for m in request.messages or ()]
        tools = list(request.tools) or None
        return self.tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)

    def generate_sync(self, requests: Sequence[GenerateRequest], cancel: threading.Event | None = None,
                      plain: bool = False) -> list[GenerateResponse]:
        """`cancel`: set by `generate` when its caller is cancelled (Ctrl-C, SIGTERM); checked after every
        generated token, so a cancelled batch ends within one token step (docs/architecture.md,
        "Stopping a run"). While it is unset, the outputs are unchanged. `plain`: transformers'
        `generate` even when `model.generation_engine=prefix` (tests compare the two)."""
        if not plain and (engine := self._generation_engine()) is not None:
            futures, start = self._queue_generation(engine, requests, cancel or threading.Event())
            if start:
                self._serve_generation(engine)
            return [f.result() for f in futures]
        return self._generate_plain(requests, cancel)

    def _generation_engine(self) -> Any:
        """The prefix-reusing, in-flight batching engine (engine/models/inference/generation.py) when
        `model.generation_engine=prefix` and the model fits the flat forward, else None; built once."""
        if self._gen is None:
            gen: Any = False
            if self.cfg.generation_engine == "prefix" and self.cfg.device == "cpu":
                from engine.models.inference.generation import build_engine  # deferred: imports torch

                gen = build_engine(self.model, self.tokenizer, self.max_batch) or False
            self._gen = gen  # once, when decided: `generate` reads it from the event loop's thread
        return self._gen or None

    def _queue_generation(self, engine: Any, requests: Sequence[GenerateRequest], cancel: threading.Event
                          ) -> tuple[list[Future[GenerateResponse]], bool]:
        """One job per request on the engine, each settling its own future with its response; True when
        the caller must start the engine's serve (none is under way)."""
        from engine.models.inference.generation import GenJob  # deferred: imports torch

        futures: list[Future[GenerateResponse]] = []
        jobs = []
        for request in requests:
            fut: Future[GenerateResponse] = Future()
            futures.append(fut)
            jobs.append(GenJob(prompt=self._prompt_ids(request), sampling=request.sampling, cancel=cancel,
                               settle=self._settle(fut, request)))
        return futures, engine.add(jobs)

    def _prompt_ids(self, request: GenerateRequest) -> Callable[[], list[int]]:
        limit = max(1, self.cfg.max_length - request.sampling.max_tokens)  # as the plain path cuts it
        return lambda: list(self.tokenizer(self.render_prompt(request), add_special_tokens=False)["input_ids"])[-limit:]

    def _settle(self, fut: Future[GenerateResponse], request: GenerateRequest) -> Callable[[Any], None]:
        def settle(outcome: Any) -> None:
            if isinstance(outcome, BaseException):
                fut.set_exception(outcome)
                return
            sampling = request.sampling
            n_new = sum(1 for t in outcome.tokens if t != self.tokenizer.pad_token_id)  # as the plain path counts
            text, stopped = truncate_at_stop(outcome.text, sampling.stop)
            finish = "stop" if stopped or n_new < sampling.max_tokens else "length"
            fut.set_result(GenerateResponse(text=text, finish_reason=finish, usage=TokenUsage(
                prompt_tokens=outcome.prompt_tokens, completion_tokens=n_new)))
        return settle

    def _serve_generation(self, engine: Any) -> None:
        """Decode until the engine has nothing left (one serve at a time: `GenerationEngine.add`)."""
        with self._lock:
            engine.serve()

    def _generate_plain(self, requests: Sequence[GenerateRequest], cancel: threading.Event | None = None
                        ) -> list[GenerateResponse]:
        """transformers' `generate` over a left-padded batch: the reference path (`generation_engine=plain`)."""
        import torch  # deferred: see `model`

        sampling = requests[0].sampling
        seeded = sampling.temperature > 0 and sampling.seed is not None
        # The runner batches by sampling; a seeded sample is a function of its own request: in one
        # padded batch, rows of equal sampling (sample i of every question shares seed i) drew from one
        # stream, so a question's pass@k samples changed with `limit` and the batch size.
        if any(r.sampling != sampling for r in requests) or (seeded and len(requests) > 1):
            return [r for req in requests for r in self._generate_plain([req], cancel)]
        prompts = [self.render_prompt(r) for r in requests]
        limit = max(1, self.cfg.max_length - sampling.max_tokens)
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        ids, mask = enc["input_ids"][:, -limit:], enc["attention_mask"][:, -limit:]
        kwargs = {"max_new_tokens": sampling.max_tokens, "pad_token_id": self.tokenizer.pad_token_id}
        if sampling.temperature > 0:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if sampling.stop:
            kwargs["stop_strings"] = list(sampling.stop)
            kwargs["tokenizer"] = self.tokenizer
        if cancel is not None:
            kwargs["stopping_criteria"] = [_until(cancel)]
        with self._lock, torch.inference_mode():
            if seeded:
                # under the lock: seeded outside it, a concurrent caller's seeding or sampling could take
                # from this batch's stream
                torch.manual_seed(sampling.seed)
            out = self.model.generate(input_ids=ids.to(self.cfg.device), attention_mask=mask.to(self.cfg.device), **kwargs)
        if cancel is not None and cancel.is_set():
            raise ProviderError("the generation was cancelled", kind="cancelled")  # nobody awaits it any more
        responses = []
        for row, prompt_mask in zip(out, mask, strict=True):
            new = row[ids.shape[1] :]
            n_new = int((new != self.tokenizer.pad_token_id).sum())
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            text, stopped = truncate_at_stop(text, sampling.stop)
            finish = "stop" if stopped or n_new < sampling.max_tokens else "length"
            responses.append(
                GenerateResponse(
                    text=text,
                    finish_reason=finish,
                    usage=TokenUsage(prompt_tokens=int(prompt_mask.sum()), completion_tokens=n_new),
                )
            )
        return responses

    async def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResponse]:
        cancel = threading.Event()
        # Built once on the model thread; after that read here, not through the thread: a call queued
        # behind the engine's running serve would wait for every row to finish (no in-flight batching).
        engine = self._gen if self._gen is not None else await self._on_worker(self._generation_engine)
        if engine:
            # In-flight batching: these requests join the rows already decoding; a serve is scheduled
            # on the model thread only when none is under way.
            queued, start = self._queue_generation(engine, requests, cancel)
            futures = [asyncio.wrap_future(f) for f in queued]
            if start:
                self._worker_thread().submit(self._serve_generation, engine)
            try:
                return list(await asyncio.gather(*futures))
            except asyncio.CancelledError:
                cancel.set()  # the engine drops these rows at its next step
                raise
        try:
            return await self._on_worker(self.generate_sync, requests, cancel)
        except asyncio.CancelledError:
            # The worker thread cannot be cancelled from here: it stops at its next token instead of
            # generating on while the process waits for it at exit.
            cancel.set()
            raise

    async def warm(self, kinds: frozenset[str] | None = None) -> None:
        """Load what the coming requests need (in a thread) before the first one's timeout starts:
        for loglikelihoods alone, the lean flat forward when the checkpoint allows it; otherwise
        transformers' tokenizer and model. `kinds`: the request kinds to come (None: unknown)."""
        if kinds == frozenset({"loglikelihood"}) and await self._on_worker(self._lean_scorer):
            return
        await self._on_worker(lambda: (self.tokenizer, self.model))
        if kinds is None or "generate" in kinds:
            await self._on_worker(self._generation_engine)  # decides `in_flight` before any request is sent

    @property
    def in_flight(self) -> int:
        """How many generate requests to keep queued on the prefix engine (0: it is not in use). It
        batches requests as they come, so the runner sends them one at a time: each is cached and
        counted when it finishes, and a long one holds no batch of others (docs/architecture.md,
        "The generation path"). Twice the decode rows: a finished row's slot is taken at once."""
        return 2 * self.max_batch if self._gen else 0

    async def _on_worker(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn` on this provider's one worker thread. Why one: torch's OpenMP starts a thread team
        per calling thread, and the teams of idle pool threads keep spinning on the same 2 cores;
        `asyncio.to_thread` (a different pool thread per call) made scoring 25-40% slower."""
        return await asyncio.get_running_loop().run_in_executor(self._worker_thread(), fn, *args)

    def _worker_thread(self) -> ModelThread:
        if self._worker is None:
            self._worker = ModelThread("hf-provider")
        return self._worker

    async def aclose(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            # An idle thread is joined: one still alive when the interpreter exits (a Python API
            # user's script) leaves torch's thread pools running and the C++ runtime aborts the
            # process (SIGABRT, "terminate called without an active exception"). A busy one (a
            # cancelled batch) is left to die with the process, as stopping needs.
            worker.shutdown(wait=not worker.busy)


def _until(cancel: threading.Event) -> Any:
    """A transformers stopping criterion that ends every row once `cancel` is set."""
    import torch  # deferred: see `HFProvider.model`
    from transformers import StoppingCriteria  # deferred: see `HFProvider.model`

    class UntilCancelled(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)

    return UntilCancelled()
