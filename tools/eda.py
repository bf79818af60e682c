"""The study's exploratory data analysis (``recsys eda``): Markdown report + PNG plots.

Reproduces section 3.2 of the study: counts, rating distribution, review length, reviews per user and
per item, verified vs not, helpful votes, the item-metadata missing-value table, the category and
price split, and the most frequent title words. Works on raw files where optional fields are absent.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shared.amazon import iter_jsonl
from shared.text import is_content, tokens

META_COLUMNS = [
    "main_category",
    "title",
    "average_rating",
    "rating_number",
    "features",
    "description",
    "price",
    "images",
    "videos",
    "store",
    "categories",
    "details",
    "parent_asin",
    "bought_together",
    "subtitle",
    "author",
]
LENGTH_BUCKETS = [
    (0, 50, "Short (<50)"),
    (50, 200, "Medium (50-200)"),
    (200, 1000, "Long (200-1000)"),
    (1000, float("inf"), "Very long (>1000)"),
]


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip() or value.strip().lower() in ("none", "null", "nan")
    if isinstance(value, list | dict | tuple):
        return len(value) == 0
    if isinstance(value, float):
        return bool(np.isnan(value))
    return False


def _price(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, str):
        try:
            return float(value.strip().lstrip("$").replace(",", ""))
        except ValueError:
            return None
    return None


def _records(path: Path) -> tuple[list[dict[str, Any]], int]:
    rows, bad = [], 0
    for _, obj, err in iter_jsonl(path):
        if err is None and obj is not None:
            rows.append(obj)
        else:
            bad += 1
    return rows, bad


def _num(s: pd.Series) -> pd.Series:
    return pd.to_numeric(s, errors="coerce")


def review_stats(reviews: list[dict[str, Any]]) -> dict[str, Any]:
    df = pd.DataFrame(reviews)
    for col in ("rating", "text", "user_id", "parent_asin", "helpful_vote", "verified_purchase"):
        if col not in df:
            df[col] = None
    df["rating"] = _num(df["rating"])
    df["length"] = df["text"].map(lambda t: len(t) if isinstance(t, str) else 0)
    per_user = df.groupby("user_id").size() if df["user_id"].notna().any() else pd.Series(dtype=int)
    per_item = df.groupby("parent_asin").size() if df["parent_asin"].notna().any() else pd.Series(dtype=int)
    helpful = _num(df["helpful_vote"]).dropna()
    verified = df[df["verified_purchase"].map(lambda v: isinstance(v, bool))]
    buckets = {
        label: int(((df["length"] >= lo) & (df["length"] < hi)).sum()) for lo, hi, label in LENGTH_BUCKETS
    }
    return {
        "n_reviews": len(df),
        "n_users": int(df["user_id"].nunique()),
        "n_items": int(df["parent_asin"].nunique()),
        "max_reviews_per_item": int(per_item.max()) if len(per_item) else 0,
        "max_reviews_per_user": int(per_user.max()) if len(per_user) else 0,
        "share_users_one_review": float((per_user == 1).mean()) if len(per_user) else 0.0,
        "mean_rating": float(df["rating"].mean()) if df["rating"].notna().any() else None,
        "ratings": {
            int(k): int(v) for k, v in df["rating"].dropna().round().value_counts().sort_index().items()
        },
        "length_mean": float(df["length"].mean()) if len(df) else 0.0,
        "length_min": int(df["length"].min()) if len(df) else 0,
        "length_max": int(df["length"].max()) if len(df) else 0,
        "length_buckets": buckets,
        "verified": {
            str(bool(k)).lower(): {"count": int(len(g)), "mean_rating": float(g["rating"].mean())}
            for k, g in verified.groupby("verified_purchase")
        },
        "helpful": (
            {
                "n": int(len(helpful)),
                "mean": float(helpful.mean()),
                "share_zero": float((helpful == 0).mean()),
                "share_over_5": float((helpful > 5).mean()),
            }
            if len(helpful)
            else None
        ),
        "_per_user": per_user,
        "_per_item": per_item,
        "_lengths": df["length"],
        "_df": df,
    }


def meta_stats(meta: list[dict[str, Any]], review_df: pd.DataFrame) -> dict[str, Any]:
    total = len(meta)
    missing: list[dict[str, Any]] = []
    for col in META_COLUMNS:
        n = sum(1 for m in meta if _is_missing(m.get(col)))
        missing.append(
            {"column": col, "missing": n, "total": total, "rate": 100.0 * n / total if total else 0.0}
        )
    missing.sort(key=lambda r: (-float(r["rate"]), str(r["column"])))

    df = pd.DataFrame(
        {
            "parent_asin": [m.get("parent_asin") for m in meta],
            "main_category": [
                m.get("main_category") if not _is_missing(m.get("main_category")) else "(missing)"
                for m in meta
            ],
            "average_rating": [_num(pd.Series([m.get("average_rating")])).iloc[0] for m in meta],
            "price": [_price(m.get("price")) for m in meta],
        }
    )
    if df["average_rating"].isna().all() and len(review_df) and "parent_asin" in review_df:
        # No rating in the metadata: derive each item's average from the reviews.
        derived = review_df.groupby("parent_asin")["rating"].mean()
        df["average_rating"] = df["parent_asin"].map(derived)
    cats: list[dict[str, Any]] = []
    for cat, g in df.groupby("main_category"):
        cats.append(
            {
                "category": str(cat),
                "items": int(len(g)),
                "mean_rating": float(g["average_rating"].mean())
                if g["average_rating"].notna().any()
                else None,
                "priced": int(g["price"].notna().sum()),
                "mean_price": float(g["price"].mean()) if g["price"].notna().any() else None,
            }
        )
    cats.sort(key=lambda c: -int(c["items"]))
    prices = df["price"].dropna()
    words: Counter[str] = Counter()
    for m in meta:
        title = m.get("title")
        if isinstance(title, str):
            words.update(
                w for w in tokens(title) if is_content(w)
            )
    return {
        "n_items": total,
        "missing": missing,
        "categories": cats,
        "price": (
            {
                "n": int(len(prices)),
                "mean": float(prices.mean()),
                "median": float(prices.median()),
                "min": float(prices.min()),
                "max": float(prices.max()),
            }
            if len(prices)
            else None
        ),
        "top_words": words.most_common(20),
        "_prices": prices,
    }


def _plots(out: Path, rs: dict[str, Any], ms: dict[str, Any]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: list[tuple[str, str]] = []

    def save(fig: Any, name: str, caption: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        made.append((name, caption))

    fig, ax = plt.subplots(figsize=(6, 4))
    stars = [1, 2, 3, 4, 5]
    ax.bar(stars, [rs["ratings"].get(s, 0) for s in stars], color="#4c72b0")
    ax.set(xlabel="rating", ylabel="reviews", title="Distribution of user ratings")
    save(fig, "ratings.png", "Distribution of user ratings")

    fig, ax = plt.subplots(figsize=(6, 4))
    lengths = rs["_lengths"]
    ax.hist(
        lengths.clip(upper=max(1, int(np.percentile(lengths, 99))) if len(lengths) else 1),
        bins=50,
        color="#55a868",
    )
    ax.set(
        xlabel="review text length (characters, clipped at p99)",
        ylabel="reviews",
        title="Distribution of review text lengths",
    )
    save(fig, "review_length.png", "Distribution of review text lengths")

    for key, name, label in (
        ("_per_user", "reviews_per_user.png", "user"),
        ("_per_item", "reviews_per_item.png", "item"),
    ):
        fig, ax = plt.subplots(figsize=(6, 4))
        counts = rs[key]
        if len(counts):
            vc = counts.value_counts().sort_index()
            ax.bar(vc.index, vc.values, color="#c44e52")
            ax.set_yscale("log")
        ax.set(
            xlabel=f"reviews per {label}", ylabel=f"{label}s (log)", title=f"Number of reviews per {label}"
        )
        save(fig, name, f"Number of reviews per {label}")

    if ms["top_words"]:
        fig, ax = plt.subplots(figsize=(7, 5))
        words, counts = zip(*ms["top_words"], strict=True)
        ax.barh(list(reversed(words)), list(reversed(counts)), color="#8172b2")
        ax.set(xlabel="titles containing the word (occurrences)", title="Top 20 words in product titles")
        save(fig, "title_words.png", "Top 20 most frequent words in product titles")

    if len(ms["_prices"]):
        fig, ax = plt.subplots(figsize=(6, 4))
        prices = ms["_prices"]
        ax.hist(prices.clip(upper=float(np.percentile(prices, 99))), bins=40, color="#937860")
        ax.set(xlabel="price (USD, clipped at p99)", ylabel="items", title="Distribution of item prices")
        save(fig, "prices.png", "Distribution of item prices (items that have one)")
    return made


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def render(
    rs: dict[str, Any],
    ms: dict[str, Any],
    plots: list[tuple[str, str]],
    *,
    bad_lines: int,
    sources: tuple[Path, Path],
) -> str:
    n = rs["n_reviews"] or 1
    lines = ["# Exploratory data analysis", "", f"Reviews: `{sources[0]}`  ", f"Metadata: `{sources[1]}`", ""]
    if bad_lines:
        lines += [f"{bad_lines} lines were not valid JSON objects and were skipped.", ""]
    lines += [
        "## User reviews",
        "",
        f"- {_fmt(rs['n_reviews'])} reviews from {_fmt(rs['n_users'])} unique users on "
        f"{_fmt(rs['n_items'])} distinct products.",
        f"- The most reviewed product received {_fmt(rs['max_reviews_per_item'])} reviews; the top reviewer "
        f"wrote {_fmt(rs['max_reviews_per_user'])}. "
        f"{rs['share_users_one_review']:.0%} of users wrote one review.",
        f"- Mean rating {_fmt(rs['mean_rating'])}.",
        f"- Review text length: mean {_fmt(rs['length_mean'], 0)} characters, range "
        f"{_fmt(rs['length_min'])} to {_fmt(rs['length_max'])}.",
        "",
        "| rating | reviews | share |",
        "|---:|---:|---:|",
    ]
    lines += [
        f"| {s} | {_fmt(rs['ratings'].get(s, 0))} | {rs['ratings'].get(s, 0) / n:.1%} |" for s in range(1, 6)
    ]
    lines += ["", "| text length | reviews | share |", "|---|---:|---:|"]
    lines += [f"| {k} | {_fmt(v)} | {v / n:.1%} |" for k, v in rs["length_buckets"].items()]
    lines += ["", "### Verified purchases", ""]
    if rs["verified"]:
        lines += ["| verified | reviews | mean rating |", "|---|---:|---:|"]
        lines += [
            f"| {k} | {_fmt(v['count'])} | {_fmt(v['mean_rating'])} |" for k, v in rs["verified"].items()
        ]
    else:
        lines.append("No `verified_purchase` field in this file.")
    lines += ["", "### Helpful votes", ""]
    h = rs["helpful"]
    lines.append(
        f"Mean {_fmt(h['mean'])} helpful votes per review; {h['share_zero']:.0%} have none and "
        f"{h['share_over_5']:.0%} have more than five."
        if h
        else "No `helpful_vote` field in this file."
    )
    lines += [
        "",
        "## Item metadata",
        "",
        f"{_fmt(ms['n_items'])} items.",
        "",
        "### Missing values",
        "",
        "| column | missing | total | missing rate (%) |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {r['column']} | {_fmt(r['missing'])} | {_fmt(r['total'])} | {r['rate']:.2f} |"
        for r in ms["missing"]
    ]
    lines += [
        "",
        "### Category and price split",
        "",
        "| main_category | items | mean rating | items with price | mean price |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {c['category']} | {_fmt(c['items'])} | {_fmt(c['mean_rating'])} | {_fmt(c['priced'])} | "
        f"{'$' + _fmt(c['mean_price']) if c['mean_price'] is not None else 'n/a'} |"
        for c in ms["categories"]
    ]
    p = ms["price"]
    lines += [
        "",
        (
            f"Prices: {_fmt(p['n'])} items have one; mean ${_fmt(p['mean'])}, median ${_fmt(p['median'])}, "
            f"range ${_fmt(p['min'])} to ${_fmt(p['max'])}."
            if p
            else "No item has a usable price."
        ),
    ]
    lines += ["", "### Top 20 words in product titles", "", "| word | count |", "|---|---:|"]
    lines += [f"| {w} | {_fmt(c)} |" for w, c in ms["top_words"]]
    lines += ["", "## Figures", ""]
    lines += [f"![{caption}]({name})  \n*{caption}*\n" for name, caption in plots]
    return "\n".join(lines) + "\n"


def run(*, reviews: Path, meta: Path, out: Path) -> dict[str, Any]:
    """Compute the EDA, write ``out/eda.md`` and the PNGs; returns the figures (without frames)."""
    review_rows, bad_r = _records(reviews)
    meta_rows, bad_m = _records(meta)
    rs = review_stats(review_rows)
    ms = meta_stats(meta_rows, rs["_df"])
    out.mkdir(parents=True, exist_ok=True)
    plots = _plots(out, rs, ms)
    (out / "eda.md").write_text(
        render(rs, ms, plots, bad_lines=bad_r + bad_m, sources=(reviews, meta)), encoding="utf-8"
    )
    return {
        k: v
        for k, v in {**rs, **{f"meta_{k}": v for k, v in ms.items()}}.items()
        if "_" != k[0] and not k.startswith("meta__")
    }


def main(reviews: Path, meta: Path, out: Path) -> int:
    """``recsys eda``."""
    import typer

    for p in (reviews, meta):
        if not Path(p).is_file():
            typer.echo(f"no such file: {p}", err=True)
            return 2
    run(reviews=Path(reviews), meta=Path(meta), out=Path(out))
    typer.echo(f"wrote {Path(out) / 'eda.md'} and plots")
    return 0
