"""The extractive profiler: a deterministic profile and summary without an LLM.

Vocabulary terms found in the reviews: products from the titles of items rated 4+ (of any item when
none is); a term is disliked when a negation precedes it within three tokens, when the review has
two stars or fewer, or when a complaint word appears in a review of three stars or fewer; liked
otherwise in a 4+ review. Potential interests are vocabulary n-grams that share a word with the
terms used but that the user has not written about. Three template sentences summarise it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from services.profiler.history import History
from services.profiler.repair import profile_from_json
from services.profiler.structured import StructuredProfile
from services.profiler.summary import split_sentences
from shared.text import content_stems, tokens
from shared.vocab import build_vocabulary, find_vocab_terms

NEGATIONS = frozenset(
    "not no never dont didnt doesnt isnt wasnt wont cant couldnt without nor lack lacks".split()
)
NEGATIVE_WORDS = frozenset(
    "hate hated disappointed disappointing terrible awful worst horrible broke broken returned return "
    "refund useless waste poor cheap flimsy irritated irritation rash itchy sticky greasy leaked".split()
)


def _polarity(rating: float, sentence_tokens: list[str], start: int) -> int:
    window = sentence_tokens[max(0, start - 3) : start]
    if any(t in NEGATIONS for t in window):
        return -1
    if rating <= 3 and any(t in NEGATIVE_WORDS for t in sentence_tokens):
        return -1
    if rating >= 4:
        return 1
    if rating <= 2:
        return -1
    return 0


def _occurrences(sentence_tokens: list[str], term: str) -> list[int]:
    needle = tokens(term)
    n = len(needle)
    return [i for i in range(len(sentence_tokens) - n + 1) if sentence_tokens[i : i + n] == needle]


def extractive_profile(
    history: History, vocab: Sequence[str], *, max_terms: int = 8
) -> tuple[StructuredProfile, list[str]]:
    """Deterministic profile and three summary sentences from vocabulary terms in the reviews."""
    entries = history.all_entries
    if not vocab:  # no catalog yet: the user's own words are the vocabulary
        vocab = build_vocabulary([f"{e.item_title}. {e.title}. {e.text}" for e in entries], k=50)
    products: Counter[str] = Counter()
    likes: Counter[str] = Counter()
    dislikes: Counter[str] = Counter()
    for e in entries:
        if e.rating >= 4:
            products.update(find_vocab_terms(e.item_title, vocab))
        for sentence in split_sentences(f"{e.title}. {e.text}"):
            toks = tokens(sentence)
            for term in find_vocab_terms(sentence, vocab):
                for start in _occurrences(toks, term)[:1]:
                    polarity = _polarity(e.rating, toks, start)
                    if polarity > 0:
                        likes[term] += 1
                    elif polarity < 0:
                        dislikes[term] += 1
    if not products:  # nothing rated 4+: what they bought at all
        for e in entries:
            products.update(find_vocab_terms(e.item_title, vocab))
    rank = {v: i for i, v in enumerate(vocab)}

    def top(counter: Counter[str], exclude: set[str]) -> list[str]:
        items = [t for t in counter if t not in exclude and counter[t] > 0]
        return sorted(items, key=lambda t: (-counter[t], rank.get(t, len(rank)), t))[:max_terms]

    preferred = top(products, set())
    liked = top(Counter({t: c - dislikes[t] for t, c in likes.items()}), set(preferred))
    disliked = top(Counter({t: c - likes[t] for t, c in dislikes.items()}), set(preferred) | set(liked))
    used = set(content_stems(" ".join(preferred + liked + disliked)))
    seen = set(content_stems(history.evidence))
    related = [v for v in vocab if set(content_stems(v)) & used and not set(content_stems(v)) <= seen]
    profile = profile_from_json(
        {
            "preferred_products": preferred,
            "liked_features": liked,
            "dislikes": disliked,
            "potential_interests": related,
        },
        max_terms=max_terms,
    )

    ratings = [e.rating for e in entries]
    avg = sum(ratings) / len(ratings) if ratings else 0.0
    n = len(entries)
    s1 = (
        f"This customer mostly buys {_join(profile.preferred_products[:3])} "
        f"({n} review{'s' if n != 1 else ''}, average rating {avg:.1f} out of 5)."
        if profile.preferred_products
        else f"This customer has reviewed {n} product{'s' if n != 1 else ''} "
        f"with an average rating of {avg:.1f} out of 5."
    )
    if profile.liked_features:
        s2 = f"They value {_join(profile.liked_features[:3])}"
        s2 += f" and dislike {_join(profile.dislikes[:2])}." if profile.dislikes else "."
    elif profile.dislikes:
        s2 = f"They complain about {_join(profile.dislikes[:3])}."
    else:
        s2 = "Their reviews do not name clear priorities yet."
    nxt = profile.potential_interests[:2] or profile.preferred_products[:2]
    s3 = (
        f"They are likely to buy {_join(nxt)} next."
        if nxt
        else "Their next purchase is likely similar to what they already bought."
    )
    return profile, [s1, s2, s3]


def _join(terms: Sequence[str]) -> str:
    terms = list(terms)
    return terms[0] if len(terms) == 1 else ", ".join(terms[:-1]) + " and " + terms[-1]
