"""Synthetic Amazon Reviews 2023 data with planted user tastes (``recsys synth``).

Reviews and item metadata follow the raw 2023 schema exactly. Items belong to product families, each
with feature words and title patterns. Every user has 1-2 favourite families (and a few liked feature
words and one dislike inside them); they review mostly items of those families, rate them high and
say why in the text, with dislikes under negation ("not a fan of the ..."). Skew is realistic: most
users write one review, item popularity follows a power law, ratings lean to 5, and optional metadata
is missing at the rates the study measured. ``truth.json`` records what was planted, so quality tests
can check that a pipeline recovers it. The same seed gives byte-identical files.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Missing rates of optional item metadata measured in the study (Table 1, All Beauty).
MISSING_RATES = {"features": 0.8457, "price": 0.8428, "description": 0.8298, "store": 0.1007}
START_MS = 1_546_300_800_000  # 2019-01-01
END_MS = 1_693_526_400_000  # 2023-09-01
ID_CHARS = string.ascii_uppercase + string.digits


@dataclass(frozen=True)
class Family:
    name: str
    noun: str
    category: str
    likes: tuple[str, ...]  # feature words a fan praises
    dislikes: tuple[str, ...]  # what people complain about
    adjectives: tuple[str, ...]
    price: tuple[float, float]
    stores: tuple[str, ...]


FAMILIES: tuple[Family, ...] = (
    Family(
        "wigs",
        "wig",
        "All Beauty",
        ("lace front", "natural hairline", "heat resistant fiber", "soft curls", "long wavy hair", "bangs"),
        ("shedding", "tangling", "synthetic shine", "itchy cap"),
        ("Long", "Curly", "Glueless", "Body Wave", "Bob", "Ombre"),
        (15, 90),
        ("WigQueen", "Lulu Hair", "Nadula"),
    ),
    Family(
        "shampoo",
        "shampoo",
        "All Beauty",
        ("sulfate free", "tea tree oil", "argan oil", "volumizing formula", "color safe", "fresh scent"),
        ("dry scalp", "strong perfume", "greasy residue", "thin consistency"),
        ("Moisturizing", "Clarifying", "Biotin", "Anti Dandruff", "Keratin", "Herbal"),
        (6, 30),
        ("PureRoots", "Herbal Lane", "SalonPro"),
    ),
    Family(
        "nail_polish",
        "nail polish",
        "All Beauty",
        ("long lasting", "glossy finish", "quick dry", "gel effect", "chip resistant", "vibrant color"),
        ("chipping", "streaky application", "strong smell", "thick formula"),
        ("Gel", "Glitter", "Matte", "Nude", "Neon", "Pastel"),
        (4, 20),
        ("NailJoy", "Gloss & Co", "Polished"),
    ),
    Family(
        "lipstick",
        "lipstick",
        "All Beauty",
        ("matte finish", "long wear", "hydrating", "bold red", "creamy texture", "transfer proof"),
        ("drying lips", "patchy color", "waxy taste", "fading fast"),
        ("Velvet", "Liquid", "Satin", "Nude", "Berry", "Classic"),
        (5, 35),
        ("LipLab", "Rouge House", "Kissable"),
    ),
    Family(
        "sunscreen",
        "sunscreen",
        "All Beauty",
        ("spf 50", "reef safe", "non greasy", "water resistant", "mineral zinc", "lightweight lotion"),
        ("white cast", "sticky feel", "stinging eyes", "breakouts"),
        ("Mineral", "Sport", "Daily", "Tinted", "Kids", "Sheer"),
        (8, 40),
        ("SunSafe", "BeachDay", "DermaShield"),
    ),
    Family(
        "perfume",
        "perfume",
        "Premium Beauty",
        ("floral notes", "vanilla", "long lasting scent", "citrus", "musk", "elegant bottle"),
        ("alcohol smell", "fades quickly", "too sweet", "leaky sprayer"),
        ("Eau de Parfum", "Floral", "Oriental", "Fresh", "Intense", "Mini"),
        (25, 150),
        ("Maison Lumiere", "Scentique", "Aroma Atelier"),
    ),
    Family(
        "face_serum",
        "face serum",
        "Premium Beauty",
        ("vitamin c", "hyaluronic acid", "brightening", "fine lines", "fragrance free", "niacinamide"),
        ("irritation", "pilling", "sticky residue", "oxidized smell"),
        ("Vitamin C", "Retinol", "Hydrating", "Night", "Peptide", "Glow"),
        (12, 80),
        ("GlowLab", "DermaPure", "Skinsmith"),
    ),
    Family(
        "hair_dryer",
        "hair dryer",
        "All Beauty",
        ("ionic technology", "fast drying", "lightweight", "diffuser attachment", "low noise", "cool shot"),
        ("overheating", "loud motor", "heavy handle", "short cord"),
        ("Ionic", "Travel", "Professional", "Compact", "Ceramic", "Salon"),
        (20, 120),
        ("BlowPro", "AirStyle", "Tourmaline"),
    ),
)

LIKE_TEMPLATES = (
    "I love the {f}.",
    "The {f} is exactly what I wanted.",
    "Really happy with the {f}.",
    "Great {f}, would buy again.",
    "The {f} works so well for me.",
)
DISLIKE_TEMPLATES = (
    "Not a fan of the {d} though.",
    "I do not like the {d}.",
    "The only downside is the {d}.",
    "No {d} would make it perfect.",
    "I can't stand the {d}.",
)
NEUTRAL = (
    "Arrived on time.",
    "Packaging was fine.",
    "Good value for the price.",
    "Does the job.",
    "Bought this as a gift.",
    "Would recommend to friends.",
)
TITLES = {
    5: ("Love it!", "Five stars", "Perfect", "Exactly as described", "My new favorite"),
    4: ("Very good", "Pretty nice", "Happy with it", "Good quality"),
    3: ("It's okay", "Average", "Decent but not great"),
    2: ("Disappointed", "Not for me", "Meh"),
    1: ("Terrible", "Waste of money", "Do not buy"),
}
FAVOURITE_RATINGS = np.array([0.01, 0.02, 0.07, 0.25, 0.65])  # P(1..5 stars) inside a favourite family
OTHER_RATINGS = np.array([0.12, 0.18, 0.30, 0.25, 0.15])


def _ident(rng: np.random.Generator, prefix: str, length: int) -> str:
    return prefix + "".join(ID_CHARS[i] for i in rng.integers(0, len(ID_CHARS), length - len(prefix)))


def _unique_ids(rng: np.random.Generator, n: int, prefix: str, length: int) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        ident = _ident(rng, prefix, length)
        if ident not in seen:
            seen.add(ident)
            out.append(ident)
    return out


def _reviews_per_user(rng: np.random.Generator, n: int) -> np.ndarray:
    """Most users write one review; the rest follow a heavy tail (capped at 40)."""
    counts = np.ones(n, dtype=int)
    more = rng.random(n) >= 0.55
    counts[more] = np.minimum(1 + rng.zipf(1.9, more.sum()), 40)
    return counts


def _make_items(rng: np.random.Generator, n_items: int) -> tuple[list[dict[str, Any]], list[int]]:
    asins = _unique_ids(rng, n_items, "B0", 10)
    items, family_of = [], []
    for idx, asin in enumerate(asins):
        fi = idx % len(FAMILIES) if idx < len(FAMILIES) else int(rng.integers(0, len(FAMILIES)))
        fam = FAMILIES[fi]
        feats = [str(x) for x in rng.choice(fam.likes, size=3, replace=False)]
        adj = str(rng.choice(fam.adjectives))
        store = str(rng.choice(fam.stores))
        title = f"{store} {adj} {fam.noun.title()} with {feats[0].title()} and {feats[1].title()}"
        if rng.random() < 0.4:
            title += f", {int(rng.integers(1, 4))} Pack"
        price = round(float(rng.uniform(*fam.price)), 2)
        item = {
            "main_category": fam.category,
            "title": title,
            "average_rating": None,  # filled from the generated reviews
            "rating_number": None,
            "features": [f"{f.capitalize()} for everyday use" for f in feats],
            "description": [f"This {adj.lower()} {fam.noun} offers {feats[0]}, {feats[1]} and {feats[2]}."],
            "price": price,
            "images": [
                {
                    "thumb": f"https://example.invalid/{asin}_t.jpg",
                    "large": f"https://example.invalid/{asin}.jpg",
                    "variant": "MAIN",
                    "hi_res": None,
                }
            ],
            "videos": [],
            "store": store,
            "categories": [],
            "details": {
                "Brand": store,
                "Item Form": fam.noun.title(),
                "Date First Available": "January 1, 2021",
            },
            "parent_asin": asin,
            "bought_together": None,
        }
        for key, rate in MISSING_RATES.items():
            if rng.random() < rate:
                item[key] = None if key in ("price", "store") else []
        items.append(item)
        family_of.append(fi)
    return items, family_of


def _review_text(
    rng: np.random.Generator, *, rating: int, fam: Family, likes: list[str], dislike: str | None
) -> str:
    parts: list[str] = []
    if rating >= 4:
        for f in rng.choice(likes, size=min(len(likes), int(rng.integers(1, 3))), replace=False):
            parts.append(str(rng.choice(LIKE_TEMPLATES)).format(f=f))
        if dislike and rng.random() < 0.5:
            parts.append(str(rng.choice(DISLIKE_TEMPLATES)).format(d=dislike))
    elif rating == 3:
        parts.append(f"The {rng.choice(fam.likes)} is fine.")
        parts.append(str(rng.choice(DISLIKE_TEMPLATES)).format(d=rng.choice(fam.dislikes)))
    else:
        parts.append(f"This {fam.noun} was a letdown: {rng.choice(fam.dislikes)} from day one.")
        parts.append(str(rng.choice(DISLIKE_TEMPLATES)).format(d=dislike or rng.choice(fam.dislikes)))
    if rng.random() < 0.5:
        parts.append(str(rng.choice(NEUTRAL)))
    return " ".join(parts)


def generate(
    *, users: int = 1000, items: int = 500, seed: int = 42
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Return ``(reviews, meta, truth)``; deterministic for a seed."""
    if users < 1 or items < len(FAMILIES):
        raise ValueError(f"need at least 1 user and {len(FAMILIES)} items")
    rng = np.random.default_rng(seed)
    meta, family_of = _make_items(rng, items)
    by_family: list[list[int]] = [
        [i for i, f in enumerate(family_of) if f == fi] for fi in range(len(FAMILIES))
    ]
    # Power-law popularity inside each family (a shuffled Zipf rank per item).
    weights: list[np.ndarray] = []
    for members in by_family:
        ranks = rng.permutation(len(members)) + 1
        w = 1.0 / ranks.astype(float) ** 1.1
        weights.append(w / w.sum())
    family_pop = np.array([len(m) for m in by_family], dtype=float) ** 1.0
    family_pop /= family_pop.sum()

    user_ids = _unique_ids(rng, users, "A", 28)
    counts = _reviews_per_user(rng, users)
    reviews: list[dict[str, Any]] = []
    truth_users: dict[str, Any] = {}
    for uid, n in zip(user_ids, counts, strict=True):
        n_fav = 1 if rng.random() < 0.6 else 2
        favs = [int(x) for x in rng.choice(len(FAMILIES), size=n_fav, replace=False, p=family_pop)]
        likes = {fi: [str(x) for x in rng.choice(FAMILIES[fi].likes, size=2, replace=False)] for fi in favs}
        dislikes = {fi: str(rng.choice(FAMILIES[fi].dislikes)) for fi in favs}
        truth_users[uid] = {
            "families": [FAMILIES[fi].name for fi in favs],
            "likes": [f for fi in favs for f in likes[fi]],
            "dislikes": [dislikes[fi] for fi in favs],
        }
        times = np.sort(rng.integers(START_MS, END_MS, int(n)))
        seen: set[int] = set()
        for ts in times:
            fav = rng.random() < 0.85
            fi = int(rng.choice(favs)) if fav else int(rng.integers(0, len(FAMILIES)))
            fav = fi in favs
            members = by_family[fi]
            idx = members[int(rng.choice(len(members), p=weights[fi]))]
            if idx in seen:  # one review per item per user
                idx = next((m for m in members if m not in seen), idx)
                if idx in seen:
                    continue
            seen.add(idx)
            fam = FAMILIES[fi]
            rating = int(rng.choice(5, p=FAVOURITE_RATINGS if fav else OTHER_RATINGS)) + 1
            text = _review_text(
                rng,
                rating=rating,
                fam=fam,
                likes=likes.get(fi, list(fam.likes[:2])),
                dislike=dislikes.get(fi),
            )
            asin = meta[idx]["parent_asin"]
            helpful = 0 if rng.random() < 0.73 else int(min(rng.geometric(0.35), 500))
            reviews.append(
                {
                    "rating": float(rating),
                    "title": str(rng.choice(TITLES[rating])),
                    "text": text,
                    "images": []
                    if rng.random() < 0.95
                    else [
                        {
                            "small_image_url": f"https://example.invalid/r/{asin}_{int(ts)}.jpg",
                            "medium_image_url": f"https://example.invalid/r/{asin}_{int(ts)}_m.jpg",
                            "large_image_url": f"https://example.invalid/r/{asin}_{int(ts)}_l.jpg",
                            "attachment_type": "IMAGE",
                        }
                    ],
                    "asin": asin if rng.random() < 0.7 else _ident(rng, "B0", 10),
                    "parent_asin": asin,
                    "user_id": uid,
                    "timestamp": int(ts),
                    "helpful_vote": helpful,
                    "verified_purchase": bool(rng.random() < 0.9),
                }
            )
    reviews.sort(key=lambda r: (r["timestamp"], r["user_id"]))

    per_item: dict[str, list[float]] = {}
    for r in reviews:
        per_item.setdefault(r["parent_asin"], []).append(r["rating"])
    for item in meta:
        ratings = per_item.get(item["parent_asin"], [])
        # Metadata counts the whole catalogue's reviews, more than this sample holds.
        extra = int(rng.integers(0, 50))
        base = float(np.mean(ratings)) if ratings else float(rng.uniform(3.0, 5.0))
        item["rating_number"] = len(ratings) + extra
        item["average_rating"] = round(min(5.0, max(1.0, base + float(rng.normal(0, 0.1)))), 1)

    truth = {
        "seed": seed,
        "families": {
            f.name: {
                "noun": f.noun,
                "category": f.category,
                "likes": list(f.likes),
                "dislikes": list(f.dislikes),
            }
            for f in FAMILIES
        },
        "items": {m["parent_asin"]: FAMILIES[fi].name for m, fi in zip(meta, family_of, strict=True)},
        "users": truth_users,
    }
    return reviews, meta, truth


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def write(out: Path, *, users: int, items: int, seed: int) -> dict[str, Any]:
    """Write ``reviews.jsonl``, ``meta.jsonl`` and ``truth.json`` under ``out``; returns counts."""
    reviews, meta, truth = generate(users=users, items=items, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    _write_jsonl(out / "reviews.jsonl", reviews)
    _write_jsonl(out / "meta.jsonl", meta)
    (out / "truth.json").write_text(json.dumps(truth, indent=1, sort_keys=True), encoding="utf-8")
    return {"reviews": len(reviews), "items": len(meta), "users": len({r["user_id"] for r in reviews})}


def main(users: int = 1000, items: int = 500, seed: int = 42, out: Path | str = Path("data/synth")) -> int:
    """``recsys synth``: write the files and report what was written."""
    import typer

    try:
        counts = write(Path(out), users=users, items=items, seed=seed)
    except ValueError as exc:
        typer.echo(f"synth: {exc}", err=True)
        return 2
    typer.echo(
        f"wrote {counts['reviews']} reviews by {counts['users']} users on {counts['items']} items "
        f"to {out} (reviews.jsonl, meta.jsonl, truth.json)"
    )
    return 0
