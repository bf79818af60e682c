"""From review histories to profiles: the profile result and the LLM flow, with the extractive fallback.

Pure functions (no DB, no broker): offline evaluation calls :func:`profile_from_reviews` or
:func:`profiles_from_histories` directly. The LLM's output is never trusted:

1. JSON profile: parsed, repaired and normalised by :mod:`services.profiler.repair`;
2. grounding (:func:`services.profiler.structured.ground`): a term is kept only if every content word
   of it (stemmed) occurs in the user's sanitised reviews / item titles or in the domain vocabulary
   (products and interests: item titles or vocabulary) and it carries no markup, link or
   instruction-like phrase — invented and injected terms are dropped (the extractive fallback passes
   the same step);
3. summary (:mod:`services.profiler.summary`): split into sentences, list markers and preambles
   removed, exactly three kept; missing ones are completed from the extractive summary
   (``summary_source="mixed"``);
4. one retry (slightly warmer sampling) for users whose output was unusable, then the extractive
   profiler (:mod:`services.profiler.extractive`), ``source="extractive"``.
Users without usable review text are ``status="cold_start"`` with no terms and no summary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.profiler.extractive import extractive_profile
from services.profiler.history import History, build_history
from services.profiler.prompts import PROFILE_SCHEMA, PROMPT_VERSION, SYSTEM, profile_prompt, summary_prompt
from services.profiler.repair import parse_json_object, profile_from_json
from services.profiler.structured import StructuredProfile, ground, usable_profile
from services.profiler.summary import clean_sentences, three_sentences
from shared.llm import LLM
from shared.logging import get_logger
from shared.text import profile_text

log = get_logger(__name__)

RETRY_TEMPERATURE = 0.4


@dataclass
class ProfileResult:
    user_id: str
    status: str  # ready | cold_start
    source: str  # llm | extractive (of the structured profile)
    summary_source: str  # llm | mixed | extractive
    profile: StructuredProfile
    summary: str
    model_name: str
    prompt_version: str = PROMPT_VERSION
    n_reviews: int = 0
    last_review_ts: int | None = None
    dropped_terms: list[str] = field(default_factory=list)
    error: str | None = None

    def text(self) -> str:
        """The text embedded for retrieval (``shared.text.profile_text``: no dislikes)."""
        p = self.profile
        return profile_text(
            summary=self.summary,
            preferred_products=p.preferred_products,
            liked_features=p.liked_features,
            potential_interests=p.potential_interests,
        )


def _safe_generate(llm: LLM | None, prompts: list[str], **kwargs: Any) -> tuple[list[str | None], str | None]:
    """The LLM's outputs, or Nones plus the error when it failed (never raises)."""
    if llm is None or not prompts:
        return [None] * len(prompts), ("no llm" if llm is None else None)
    try:
        out = llm.generate(prompts, system=SYSTEM, **kwargs)
    except Exception as exc:  # LLMUnavailable, LLMTimeout, or a broken backend: fall back, loudly
        log.warning(
            "llm generation failed", extra={"error": f"{type(exc).__name__}: {exc}", "n": len(prompts)}
        )
        return [None] * len(prompts), f"{type(exc).__name__}: {exc}"
    if not isinstance(out, list) or len(out) != len(prompts):
        return [None] * len(prompts), "llm returned the wrong number of outputs"
    return [o if isinstance(o, str) else None for o in out], None


def profiles_from_histories(
    histories: Sequence[History],
    *,
    llm: LLM | None,
    vocab: Sequence[str],
    max_terms: int = 8,
    max_new_tokens: int = 200,
    summary_tokens: int = 160,
) -> list[ProfileResult]:
    """Profiles for several users, generated in one batch per step (JSON profile, then summary)."""
    model_name = getattr(llm, "name", "none") if llm is not None else "none"
    results: list[ProfileResult | None] = [None] * len(histories)
    live: list[int] = []
    for i, h in enumerate(histories):
        if h.usable:
            live.append(i)
        else:
            results[i] = ProfileResult(
                user_id=h.user_id,
                status="cold_start",
                source="extractive",
                summary_source="extractive",
                profile=StructuredProfile(),
                summary="",
                model_name=model_name,
                n_reviews=h.n_reviews,
                last_review_ts=h.last_review_ts,
            )
    blocks = {i: histories[i].render() for i in live}
    errors: dict[int, str] = {}

    # Structured profile: generate → parse → ground; one warmer retry for the unusable ones.
    profiles: dict[int, tuple[StructuredProfile, list[str]]] = {}
    todo = list(live)
    for attempt, temperature in enumerate((0.0, RETRY_TEMPERATURE)):
        if not todo or llm is None:
            break
        outs, err = _safe_generate(
            llm,
            [profile_prompt(blocks[i]) for i in todo],
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            json_schema=PROFILE_SCHEMA,
        )
        failed = []
        for i, raw in zip(todo, outs, strict=True):
            data = parse_json_object(raw)
            if data is not None:
                prof, dropped = ground(
                    profile_from_json(data, max_terms=max_terms),
                    evidence=histories[i].evidence,
                    vocab=vocab,
                    item_evidence=histories[i].item_evidence,
                )
                if usable_profile(prof):
                    profiles[i] = (prof, dropped)
                    continue
                errors[i] = f"profile unusable after grounding (attempt {attempt + 1})"
            else:
                errors[i] = err or f"no JSON object in the output (attempt {attempt + 1})"
            failed.append(i)
        todo = failed

    # Summary: generate → clean; one retry for users with no usable sentence.
    summaries: dict[int, list[str]] = {}
    todo = list(live)
    for temperature in (0.0, RETRY_TEMPERATURE):
        if not todo or llm is None:
            break
        outs, _ = _safe_generate(
            llm,
            [summary_prompt(blocks[i]) for i in todo],
            max_new_tokens=summary_tokens,
            temperature=temperature,
        )
        failed = []
        for i, raw in zip(todo, outs, strict=True):
            sentences = clean_sentences(raw)
            if sentences:
                summaries[i] = sentences
            else:
                failed.append(i)
        todo = failed

    for i in live:
        h = histories[i]
        fallback_profile, fallback_sentences = extractive_profile(h, vocab, max_terms=max_terms)
        if i in profiles:
            prof, dropped = profiles[i]
            source = "llm"
        else:  # the extractive profile passes the same validation step as the LLM's
            prof, dropped = ground(
                fallback_profile, evidence=h.evidence, vocab=vocab, item_evidence=h.item_evidence
            )
            source = "extractive"
        summary, summary_source = three_sentences(summaries.get(i, []), fallback_sentences)
        results[i] = ProfileResult(
            user_id=h.user_id,
            status="ready",
            source=source,
            summary_source=summary_source,
            profile=prof,
            summary=summary,
            model_name=model_name if (source == "llm" or summary_source != "extractive") else "none",
            n_reviews=h.n_reviews,
            last_review_ts=h.last_review_ts,
            dropped_terms=dropped,
            error=errors.get(i) if source == "extractive" else None,
        )
    return [r for r in results if r is not None]


def profile_from_reviews(
    reviews: Sequence[Any],
    item_titles: Mapping[str, str],
    *,
    llm: LLM | None,
    vocab: Sequence[str],
    user_id: str = "",
    budget_chars: int = 3000,
    max_terms: int = 8,
) -> ProfileResult:
    """One user's profile from raw review dicts (Amazon schema) and ``{parent_asin: title}``."""
    uid = user_id or (
        str(reviews[0].get("user_id", "")) if reviews and isinstance(reviews[0], Mapping) else ""
    )
    history = build_history(uid, reviews, item_titles, budget_chars=budget_chars)
    return profiles_from_histories([history], llm=llm, vocab=vocab, max_terms=max_terms)[0]
