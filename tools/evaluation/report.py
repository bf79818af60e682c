"""report.md (tables like the study's Table 2 plus accuracy, beyond-accuracy, explanation and cost
tables), PNG charts and the three per-user case studies."""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.logging import get_logger
from tools.evaluation.context import EvalContext

if TYPE_CHECKING:
    from tools.evaluation.run import StrategyRun

log = get_logger(__name__)

PERCENT = {"cold_start_ratio", "avg_specificity", "avg_cos_sim", "ad_dup_ratio", "catalog_coverage",
           "unique_reason_ratio", "feature_mention_ratio", "grounding_ratio"}
LABELS = {
    "cold_start_ratio": "Cold Start Ratio", "avg_specificity": "Average Specificity Score",
    "avg_cos_sim": "AvgCosSim", "ad_dup_ratio": "AdDupRatio", "avg_rating": "AvgRating",
    "rmse": "RMSE", "mae": "MAE", "catalog_coverage": "Catalog coverage",
    "intra_list_diversity": "Intra-list diversity", "novelty": "Novelty (bits)",
    "unique_reason_ratio": "Unique-reason ratio", "feature_mention_ratio": "Feature-mention ratio",
    "grounding_ratio": "Grounding ratio", "seconds_per_user": "Seconds per user", "n_users": "Users",
}


def label(key: str) -> str:
    if "@" in key:
        name, k = key.split("@")
        names = {"hit_rate": "HitRate", "recall": "Recall", "ndcg": "NDCG", "map": "MAP"}
        return names.get(name, name) + f"@{k}"
    return LABELS.get(key, key)


def fmt(key: str, value: Any) -> str:
    if value is None:
        return "–"
    if key == "n_users":
        return str(int(value))
    if key in PERCENT:
        return f"{100 * float(value):.1f}%"
    if key == "seconds_per_user":
        v = float(value)
        return f"{v:.3f}" if v >= 0.001 else f"{v * 1000:.3f} ms"
    return f"{float(value):.4f}" if abs(float(value)) < 10 else f"{float(value):.2f}"


def table(payload: dict[str, Any], rows: Sequence[tuple[str, str]], *, title_col: str = "Metric") -> str:
    """Markdown table: one row per (group, metric key), one column per strategy; '–' = not applicable."""
    strategies = list(payload["strategies"])
    lines = [f"| {title_col} | " + " | ".join(strategies) + " |", "|---" * (len(strategies) + 1) + "|"]
    for group, key in rows:
        cells = [fmt(key, payload["strategies"][s][group].get(key)) for s in strategies]
        suffix = {"overall": "", "cold": " (cold)", "warm": " (non-cold)"}[group]
        name = label(key) + suffix
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _best(payload: dict[str, Any], key: str, *, higher: bool = True) -> tuple[str, float] | None:
    vals = [(s, b["overall"][key]) for s, b in payload["strategies"].items() if key in b["overall"]]
    if not vals:
        return None
    return max(vals, key=lambda t: t[1]) if higher else min(vals, key=lambda t: t[1])


def reading(payload: dict[str, Any]) -> list[str]:
    """Plain statements derived from the numbers (no adjectives the numbers do not support)."""
    k = payload["k"]
    out: list[str] = []
    n, cold = payload["n_users"], payload["n_cold_users"]
    out.append(f"{cold} of {n} evaluated users ({100 * cold / max(1, n):.0f}%) have no training history "
               "(cold start by the split).")
    for key in (f"recall@{k}", f"ndcg@{k}"):
        best = _best(payload, key)
        pop = payload["strategies"].get("popular", {}).get("overall", {}).get(key)
        if best:
            msg = f"Best {label(key)}: {best[0]} ({best[1]:.4f})"
            if pop is not None and best[0] != "popular":
                msg += f"; popular scores {pop:.4f}"
            out.append(msg + ".")
    best = _best(payload, "rmse", higher=False)
    if best:
        out.append(f"Lowest RMSE: {best[0]} ({best[1]:.4f}).")
    for s, b in payload["strategies"].items():
        hits = b["overall"].get(f"hit_rate@{k}")
        if hits is not None and hits == 0:
            out.append(f"{s}: no held-out item was recovered in the top {k}.")
    if payload["n_users"] < 100:
        one = 1 / max(1, payload["n_users"])
        out.append(f"With {payload['n_users']} users one hit moves HitRate by {one:.3f}: differences of a "
                   "few hits are noise.")
    for name, err in payload.get("failed", {}).items():
        out.append(f"{name} did not run: {err}")
    out.extend(payload.get("notes", []))
    return out


# ------------------------------------------------------------------------------------------ charts

def write_charts(payload: dict[str, Any], out: Path) -> list[str]:
    """metrics_per_strategy.png and cost_vs_quality.png; returns the file names written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib missing: no charts (install the 'analysis' extra)")
        return []
    k = payload["k"]
    strategies = list(payload["strategies"])
    if not strategies:
        return []
    written = []
    keys = [f"hit_rate@{k}", f"ndcg@{k}", f"map@{k}", "catalog_coverage", "intra_list_diversity",
            "avg_cos_sim", "ad_dup_ratio", "unique_reason_ratio", "grounding_ratio"]
    keys = [key for key in keys if any(key in payload["strategies"][s]["overall"] for s in strategies)]
    fig, ax = plt.subplots(figsize=(max(8, 1.2 * len(keys) * len(strategies) / 3), 4.5))
    width = 0.8 / len(strategies)
    for n, s in enumerate(strategies):
        vals = [payload["strategies"][s]["overall"].get(key, math.nan) for key in keys]
        ax.bar([x + n * width for x in range(len(keys))], vals, width, label=s)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(keys))], [label(key) for key in keys], rotation=30,
                  ha="right")
    ax.set_ylabel("value (0-1)")
    ax.set_title(f"Metrics per strategy ({payload['n_users']} users, {payload['split']})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "metrics_per_strategy.png", dpi=110)
    plt.close(fig)
    written.append("metrics_per_strategy.png")

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    quality = f"ndcg@{k}"
    for s in strategies:
        o = payload["strategies"][s]["overall"]
        if "seconds_per_user" in o and quality in o:
            x = max(o["seconds_per_user"], 1e-6)
            ax.scatter([x], [o[quality]], s=60)
            ax.annotate(s, (x, o[quality]), textcoords="offset points", xytext=(6, 4))
    ax.set_xscale("log")
    ax.set_xlabel("seconds per user (log scale, online stages)")
    ax.set_ylabel(label(quality))
    ax.set_title("Cost vs quality")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "cost_vs_quality.png", dpi=110)
    plt.close(fig)
    written.append("cost_vs_quality.png")
    return written


# ------------------------------------------------------------------------------------ case studies

def pick_case_users(ctx: EvalContext, users: Sequence[str], n: int = 3) -> list[str]:
    """Deterministic: the warm user with the longest history, the warm user with the median history,
    and a cold user when there is one (else the next warm user)."""
    warm = sorted((u for u in users if not ctx.split.is_cold(u)),
                  key=lambda u: (-len(ctx.split.history(u)), u))
    cold = sorted(u for u in users if ctx.split.is_cold(u))
    picks: list[str] = []
    if warm:
        picks.append(warm[0])
        mid = warm[len(warm) // 2]
        if mid not in picks:
            picks.append(mid)
    if cold:
        picks.append(cold[0])
    for u in warm:
        if len(picks) >= n:
            break
        if u not in picks:
            picks.append(u)
    return picks[:n]


def _short(text: str, n: int = 90) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def case_studies(ctx: EvalContext, runs: Sequence[StrategyRun], users: Sequence[str]) -> str:
    lines: list[str] = []
    cat = ctx.catalog
    by_strategy = {r.name: {rec.user_id: rec for rec in r.recs} for r in runs if not r.error}
    for user in pick_case_users(ctx, users):
        hist = ctx.split.history(user)
        held = [t.parent_asin for t in ctx.split.test.get(user, [])]
        state = f"{len(hist)} reviews in history" if hist else "cold start"
        lines.append(f"### User `{user}` ({state})\n")
        if hist:
            lines.append("History (oldest first, last 10):\n")
            for i in hist[-10:]:
                lines.append(f"- {i.rating:.0f}★ {_short(cat.title(i.parent_asin) or i.parent_asin)}"
                             + (f" — “{_short(i.text, 120)}”" if i.text else ""))
            lines.append("")
        shown = ", ".join(f"{_short(cat.title(a) or a, 70)} (`{a}`)" for a in held)
        lines.append(f"Held out: {shown}\n")
        prof = ctx.profiles.get(user)
        if prof is not None:
            if prof.cold:
                lines.append("Profile: none (cold start)\n")
            else:
                if prof.structured:
                    for key, vals in prof.structured.items():
                        if vals:
                            lines.append(f"- {key.replace('_', ' ')}: {', '.join(vals)}")
                if prof.summary:
                    lines.append(f"\nSummary ({prof.source}): {_short(prof.summary, 500)}")
                lines.append("")
        for name, recs in by_strategy.items():
            rec = recs.get(user)
            if rec is None:
                continue
            lines.append(f"**{name}**{' (served as cold start)' if rec.cold else ''}:\n")
            for n, a in enumerate(rec.items[: ctx.k], start=1):
                reason = (rec.reasons or [None] * len(rec.items))[n - 1] if rec.reasons else None
                hit = " **← held-out item**" if a in held else ""
                lines.append(f"{n}. {_short(cat.title(a) or a, 70)} (`{a}`){hit}"
                             + (f" — _{_short(reason, 160)}_" if reason else ""))
            lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ report

def write_report(ctx: EvalContext, runs: Sequence[StrategyRun], payload: dict[str, Any], users: Sequence[str],
                 *, out: Path) -> None:
    k = payload["k"]
    charts = write_charts(payload, out)
    cases = case_studies(ctx, runs, users)
    (out / "case_studies.md").write_text("# Case studies\n\n" + cases + "\n")
    inputs = ctx.cache.get("inputs", {})
    parts = [
        "# Offline evaluation\n",
        f"- Split: **{payload['split']}**, k = {k}, seed = {payload['seed']}",
        f"- Users evaluated: {payload['n_users']} ({payload['n_cold_users']} cold start, "
        f"{payload['n_warm_users']} with history); catalogue: {payload['n_items']} items; "
        f"training reviews: {payload['n_train_reviews']}",
        f"- Embedding model: {payload.get('embedding_model') or 'none'}; "
        f"total time {payload['seconds_total']:.1f} s",
    ]
    for name, rep in inputs.items():
        if rep.get("skipped"):
            parts.append(f"- {name}: {rep['read']} valid lines read, {rep['skipped']} skipped "
                         f"(e.g. {'; '.join(rep.get('reasons', [])[:2])})")
    if payload["strategies"]:
        parts += [
            "\n## The study's metrics (as in its Table 2)\n",
            table(payload, [("overall", "cold_start_ratio"), ("overall", "avg_specificity"),
                            ("overall", "avg_cos_sim"), ("overall", "ad_dup_ratio"),
                            ("overall", "avg_rating"),
                            ("cold", "ad_dup_ratio"), ("cold", "avg_rating"),
                            ("warm", "ad_dup_ratio"), ("warm", "avg_rating")]),
            "\n## Accuracy\n",
            table(payload, [("overall", f"hit_rate@{k}"), ("overall", f"recall@{k}"),
                            ("overall", f"ndcg@{k}"), ("overall", f"map@{k}"),
                            ("overall", "rmse"), ("overall", "mae"),
                            ("warm", f"recall@{k}"), ("warm", f"ndcg@{k}"),
                            ("cold", f"recall@{k}"), ("cold", f"ndcg@{k}")]),
            "\n## Beyond accuracy\n",
            table(payload, [("overall", "catalog_coverage"), ("overall", "intra_list_diversity"),
                            ("overall", "novelty"), ("overall", "avg_rating")]),
            "\n## Explanations\n",
            table(payload, [("overall", "unique_reason_ratio"), ("overall", "feature_mention_ratio"),
                            ("overall", "grounding_ratio"), ("overall", "ad_dup_ratio")]),
            "\n## Cost\n",
            _cost_table(payload),
        ]
    if charts:
        parts.append("\n## Charts\n")
        parts += [f"![{c}]({c})" for c in charts]
    parts.append("\n## Reading\n")
    parts += [f"- {line}" for line in reading(payload)]
    if payload.get("params"):
        parts.append("\n## Parameters\n")
        for name, params in payload["params"].items():
            parts.append(f"- **{name}**: `{json.dumps(params, default=str)[:1500]}`")
        if ctx.cache.get("profile_model"):
            parts.append(f"- profiles: {ctx.cache['profile_model']}")
    parts += ["\n## Definitions\n",
              "Every metric is defined in `tools/evaluation/metrics.py`; '–' means the metric does not "
              "apply (absent from metrics.json). Groups: cold = no training history in the split. "
              "AdDupRatio = 1 − distinct/total reasons pooled over the group (lower is better); AvgCosSim "
              "is over users with a profile only.",
              "\n## Case studies\n", cases]
    (out / "report.md").write_text("\n".join(parts) + "\n")


def _cost_table(payload: dict[str, Any]) -> str:
    lines = ["| Strategy | fit (s) | seconds per user | stages (s/user) |", "|---|---|---|---|"]
    for s, block in payload["strategies"].items():
        cost = payload.get("costs", {}).get(s, {})
        stages = ", ".join(f"{n} {v:.4f}" for n, v in cost.get("stage_seconds_per_user", {}).items())
        lines.append(f"| {s} | {cost.get('fit_seconds', 0):.2f} | "
                     f"{fmt('seconds_per_user', block['overall'].get('seconds_per_user'))} | {stages} |")
    return "\n".join(lines)
