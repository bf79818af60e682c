"""Domain vocabulary: the top-K 1–3-grams of the catalog's item titles and descriptions.

The study (section 4.3, "Top-K ngrams", K=200) uses it to ground LLM profiles and to score them with
the Average Specificity Score. Definitions used here, precisely:

* **Tokens** and *content* tokens: ``shared.text.tokens`` / ``shared.text.is_content`` (the project's
  one tokenizer and stop-word list).
* **Candidate n-grams**: 1-, 2- and 3-grams of consecutive content tokens. N-grams never cross a stop
  word, a number or punctuation, so "skin care for dry skin" yields "skin care" and "dry skin", not
  "care dry".
* **Ranking**: by document frequency (number of texts an n-gram occurs in, so one long description
  cannot dominate), ties broken by longer n-gram first, then alphabetically (deterministic).
* **Specificity of a term**: a profile term is *specific* when its token sequence contains some
  vocabulary n-gram as a contiguous sub-sequence (``"lightweight moisturizer"`` is specific when
  ``"moisturizer"`` is in the vocabulary). ``specificity(terms, vocab)`` is the share of non-empty
  terms that are specific (0.0 for no terms); the study's *Average Specificity Score* is its mean
  over non-cold-start users.

The vocabulary of the stored catalog is cached in a JSON file under ``HOME/vocab/`` keyed by a
catalog fingerprint (item count + latest update), so it is rebuilt exactly when the catalog changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from shared.logging import get_logger
from shared.text import is_content, sanitize_untrusted, tokens

log = get_logger(__name__)

DEFAULT_K = 200
MAX_N = 3
_SPLIT = re.compile(r"[^\w\s']|_")  # punctuation ends a phrase


def phrases(text: str) -> list[list[str]]:
    """Runs of consecutive content tokens (split at punctuation, stop words and numbers)."""
    runs: list[list[str]] = []
    for segment in _SPLIT.split(text.lower()):
        run: list[str] = []
        for tok in tokens(segment):
            if is_content(tok):
                run.append(tok)
            elif run:
                runs.append(run)
                run = []
        if run:
            runs.append(run)
    return runs


def ngrams(text: str, max_n: int = MAX_N) -> set[str]:
    """The distinct candidate 1..max_n-grams of ``text``."""
    found: set[str] = set()
    for run in phrases(text):
        for n in range(1, max_n + 1):
            for i in range(len(run) - n + 1):
                found.add(" ".join(run[i : i + n]))
    return found


def build_vocabulary(texts: Iterable[str], k: int = DEFAULT_K) -> list[str]:
    """Top-``k`` 1–3-grams of ``texts`` by document frequency (see the module docstring)."""
    df: Counter[str] = Counter()
    for text in texts:
        if text:
            df.update(ngrams(text))
    ranked = sorted(df.items(), key=lambda kv: (-kv[1], -kv[0].count(" "), kv[0]))
    return [term for term, _ in ranked[:k]]


def _contains(haystack: Sequence[str], needle: Sequence[str]) -> bool:
    n = len(needle)
    return any(list(haystack[i : i + n]) == list(needle) for i in range(len(haystack) - n + 1))


def is_specific(term: str, vocab: Iterable[str]) -> bool:
    """True when ``term`` contains (or is) a vocabulary n-gram, token-wise."""
    toks = tokens(term)
    return bool(toks) and any(_contains(toks, tokens(v)) for v in vocab)


def specificity(terms: Iterable[str], vocab: Iterable[str]) -> float:
    """Share of non-empty ``terms`` that are specific to the vocabulary (0.0 when there are none)."""
    vocab_list = list(vocab)
    clean = [t for t in terms if tokens(t)]
    if not clean:
        return 0.0
    return sum(is_specific(t, vocab_list) for t in clean) / len(clean)


def find_vocab_terms(text: str, vocab: Iterable[str]) -> list[str]:
    """Vocabulary n-grams occurring in ``text`` (token-wise), longest first, without ones covered by a
    longer match (``"dry skin"`` found → ``"skin"`` is not reported separately)."""
    toks = tokens(text)
    found = [v for v in sorted(set(vocab), key=lambda v: (-len(v.split()), v)) if _contains(toks, tokens(v))]
    kept: list[str] = []
    for term in found:
        if not any(_contains(tokens(longer), tokens(term)) for longer in kept):
            kept.append(term)
    return kept


# --------------------------------------------------------------------------- catalog cache


def item_vocab_text(title: str | None, description: Iterable[Any] | None) -> str:
    """The text of one item that feeds the vocabulary: title and description (the study's choice),
    sanitised (``shared.text.sanitize_untrusted``: no HTML, links or instruction-like sentences)."""
    desc = " ".join(str(d) for d in (description or []) if d)
    return sanitize_untrusted(f"{title or ''}. {desc}").strip()


_mem: dict[str, tuple[float, str, list[str]]] = {}
_mem_lock = threading.Lock()


def catalog_fingerprint(database_url: str) -> str:
    from sqlalchemy import func, select

    from shared.db import session_scope
    from shared.models import Item

    with session_scope(database_url) as s:
        count, latest = s.execute(select(func.count(Item.parent_asin), func.max(Item.updated_at))).one()
    return hashlib.sha1(f"{count}|{latest}".encode()).hexdigest()[:16]


def _catalog_texts(database_url: str) -> list[str]:
    from sqlalchemy import select

    from shared.db import session_scope
    from shared.models import Item

    with session_scope(database_url) as s:
        rows = s.execute(select(Item.title, Item.description)).all()
    return [item_vocab_text(t, d) for t, d in rows]


def catalog_vocabulary(
    *, database_url: str, home: Path, k: int = DEFAULT_K, ttl_s: float = 60.0
) -> list[str]:
    """The vocabulary of the stored catalog, rebuilt when its fingerprint changes.

    Cached in memory for ``ttl_s`` (one fingerprint query per ``ttl_s``) and on disk as
    ``HOME/vocab/<fingerprint>-k<k>.json`` so every worker process shares one build.
    """
    cache_key = f"{database_url}|{k}"
    now = time.monotonic()
    with _mem_lock:
        hit = _mem.get(cache_key)
        if hit and now - hit[0] < ttl_s:
            return hit[2]
    fp = catalog_fingerprint(database_url)
    vocab: list[str] | None = hit[2] if hit and hit[1] == fp else None
    if vocab is None:
        path = Path(home) / "vocab" / f"{fp}-k{k}.json"
        vocab = _read(path)
        if vocab is None:
            started = time.monotonic()
            vocab = build_vocabulary(_catalog_texts(database_url), k=k)
            _write(path, vocab)
            log.info(
                "vocabulary built",
                extra={
                    "fingerprint": fp,
                    "terms": len(vocab),
                    "build_s": round(time.monotonic() - started, 2),
                },
            )
    with _mem_lock:
        _mem[cache_key] = (now, fp, vocab)
    return vocab


def _read(path: Path) -> list[str] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return [str(t) for t in data["terms"]] if isinstance(data, dict) and "terms" in data else None


def _write(path: Path, vocab: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"terms": vocab}))
    os.replace(tmp, path)  # atomic: concurrent workers never read half a file
