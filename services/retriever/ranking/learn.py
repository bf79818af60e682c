"""Learning to rank the candidates on the validation target: a LightGBM LambdaRank model or a blend.

The training data is one query per validation user (their held-out next item is the one relevant
candidate; a user whose target no source lists has nothing to learn from, but still counts as a miss
when a model is scored). Every model is scored the same way: candidates sorted by the model's score,
ties by popularity then ``parent_asin``; NDCG@k of the target's position over all validation users.

Why LightGBM: a maintained, fast gradient-boosting library with a LambdaRank objective that optimises
NDCG directly, handles unnormalised and missing-as-zero features, and predicts 500 rows in well
under a millisecond.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.retriever.ranking.features import UserCandidates
from services.retriever.sources.tuning import WEIGHT_GRID, ascend

LGBM_PARAMS: dict[str, Any] = {
    "objective": "lambdarank",
    "metric": "ndcg",
    "eval_at": [10],
    "learning_rate": 0.05,
    # small, strongly regularised trees: a few hundred validation users on the small catalogues
    # (cross-fit NDCG@10 of one LambdaRank booster with 15 leaves / 20 rows per leaf / L2 1 / all features
    # -> 4 / 200 / 20 / 70%: magazines 0.222 -> 0.234, multicategory 0.138 -> 0.164, gift cards
    # 0.192 -> 0.247)
    "num_leaves": 4,
    "min_data_in_leaf": 200,
    "feature_fraction": 0.7,
    "bagging_fraction": 0.9,
    "bagging_freq": 1,
    "lambda_l2": 20.0,
    "lambdarank_truncation_level": 20,
    "deterministic": True,
    "force_row_wise": True,
    "num_threads": 2,
    "verbosity": -1,
    "seed": 13,
}


MARGIN_SE = 1.0  # standard errors the blend or the ranker must beat the ensemble by (see :func:`select_model`)
BAGS = 5  # boosters per LambdaRank model (see :class:`LambdaRanker`)


@dataclass
class Queries:
    """Validation users stacked: one matrix, a group id per row, each group's target row (-1: absent)."""

    matrix: np.ndarray
    group: np.ndarray  # group index of each row
    tie: np.ndarray  # tie-break key of each row (smaller first): popularity rank, then asin
    target: np.ndarray  # per group: the global row of the target, -1 when no candidate is the target
    sizes: np.ndarray  # rows per group

    @classmethod
    def stack(cls, users: Sequence[UserCandidates], targets: Sequence[str], n_features: int) -> Queries:
        mats, groups, ties, tgt, sizes = [], [], [], [], []
        offset = 0
        for g, (uc, t) in enumerate(zip(users, targets, strict=True)):
            n = len(uc.asins)
            mats.append(uc.matrix.reshape(n, n_features))
            groups.append(np.full(n, g, dtype=np.int64))
            # by popularity (descending) then asin (asins are already sorted): a stable argsort
            order = np.argsort(-uc.popularity, kind="stable")
            rank = np.empty(n, dtype=np.int64)
            rank[order] = np.arange(n)
            ties.append(rank)
            try:
                tgt.append(offset + uc.asins.index(t))
            except ValueError:
                tgt.append(-1)
            sizes.append(n)
            offset += n
        return cls(
            matrix=np.vstack(mats) if mats else np.zeros((0, n_features)),
            group=np.concatenate(groups) if groups else np.zeros(0, dtype=np.int64),
            tie=np.concatenate(ties) if ties else np.zeros(0, dtype=np.int64),
            target=np.asarray(tgt, dtype=np.int64), sizes=np.asarray(sizes, dtype=np.int64))

    def subset(self, groups: np.ndarray) -> Queries:
        """The queries of ``groups`` (sorted group indices), renumbered."""
        keep = np.isin(self.group, groups)
        new_id = np.full(len(self.sizes), -1, dtype=np.int64)
        new_id[groups] = np.arange(len(groups))
        rows = np.flatnonzero(keep)
        new_row = np.full(len(self.group), -1, dtype=np.int64)
        new_row[rows] = np.arange(len(rows))
        tgt = self.target[groups]
        return Queries(matrix=self.matrix[rows], group=new_id[self.group[rows]], tie=self.tie[rows],
                       target=np.where(tgt >= 0, new_row[np.maximum(tgt, 0)], -1), sizes=self.sizes[groups])

    def __len__(self) -> int:
        return len(self.sizes)


def positions(q: Queries, scores: np.ndarray) -> np.ndarray:
    """0-based position of each group's target under ``scores`` (a large number when absent)."""
    n_groups = len(q.sizes)
    out = np.full(n_groups, np.iinfo(np.int64).max // 4, dtype=np.int64)
    has = q.target >= 0
    if not has.any() or scores.size == 0:
        return out
    t_rows = np.where(has, q.target, 0)
    st = scores[t_rows][q.group]
    tt = q.tie[t_rows][q.group]
    better = (scores > st) | ((scores == st) & (q.tie < tt))
    before = np.bincount(q.group, weights=better.astype(np.float64), minlength=n_groups).astype(np.int64)
    out[has] = before[has]
    return out


def ndcg_at(q: Queries, scores: np.ndarray, k: int) -> float:
    if len(q) == 0:
        return 0.0
    pos = positions(q, scores)
    gains = np.where(pos < k, 1.0 / np.log2(np.minimum(pos, k) + 2.0), 0.0)
    return float(gains.mean())


def query_gains(q: Queries, scores: np.ndarray, k: int) -> np.ndarray:
    """Each query's NDCG@k (one relevant item: ``1 / log2(position + 2)`` inside the top ``k``, else 0)."""
    pos = positions(q, scores)
    return np.where(pos < k, 1.0 / np.log2(np.minimum(pos, k) + 2.0), 0.0)


def hit_at(q: Queries, scores: np.ndarray, k: int) -> float:
    return float((positions(q, scores) < k).mean()) if len(q) else 0.0


@dataclass
class BlendModel:
    """``score = norm_columns @ weights`` (the first ``len(weights)`` feature columns)."""

    weights: np.ndarray
    kind: str = "blend"

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        n = len(self.weights)
        return matrix[:, :n] @ self.weights if matrix.size else np.zeros(len(matrix))

    def describe(self, names: Sequence[str]) -> dict[str, Any]:
        return {"kind": self.kind, "weights": {n: round(float(w), 4) for n, w in zip(names, self.weights, strict=True)}}


def coordinate_ascent(q: Queries, *, n_sources: int, k: int, grid: Sequence[float] = WEIGHT_GRID,
                      rounds: int = 3) -> tuple[BlendModel, float]:
    """The blend of the first ``n_sources`` (norm) columns by :func:`tuning.ascend` on ``q``'s NDCG@k:
    never worse on ``q`` than its best single source."""
    norm = q.matrix[:, :n_sources]
    res = ascend(lambda w: ndcg_at(q, norm @ w, k), n_sources=n_sources, grid=grid, rounds=rounds)
    return BlendModel(weights=res.weights), res.score


@dataclass
class LambdaRanker:
    """LightGBM LambdaRank boosters over the feature columns: the mean of their scores (several
    boosters differing only in their row and feature sampling seeds: less variance on small data)."""

    booster: Any
    feature_names: list[str] = field(default_factory=list)
    kind: str = "lambdarank"
    others: list[Any] = field(default_factory=list)

    @property
    def boosters(self) -> list[Any]:
        return [self.booster, *self.others]

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        if len(matrix) == 0:
            return np.zeros(0)
        total = np.zeros(len(matrix))
        for b in self.boosters:
            total += np.asarray(b.predict(matrix, num_threads=1), dtype=np.float64)
        return total / len(self.boosters)

    def describe(self, names: Sequence[str]) -> dict[str, Any]:
        gain = np.zeros(len(self.feature_names))
        for b in self.boosters:
            gain += np.asarray(b.feature_importance(importance_type="gain"), dtype=np.float64)
        top = sorted(zip(self.feature_names, gain, strict=True), key=lambda t: -t[1])[:8]
        return {"kind": self.kind, "trees": int(self.booster.num_trees()), "bags": len(self.boosters),
                "top_features": {n: round(float(g), 2) for n, g in top}}


@dataclass
class EnsembleModel:
    """The blend and the LambdaRank model together: the sum of their scores, each standardised by its
    mean and spread over the training rows (order within a query is all that matters)."""

    blend: BlendModel
    ranker: LambdaRanker
    scale: tuple[float, float, float, float]  # blend mean, blend std, ranker mean, ranker std
    kind: str = "ensemble"

    @classmethod
    def of(cls, blend: BlendModel, ranker: LambdaRanker, matrix: np.ndarray) -> EnsembleModel:
        b, r = blend.predict(matrix), ranker.predict(matrix)
        return cls(blend, ranker, (float(b.mean()), float(b.std()) or 1.0, float(r.mean()), float(r.std()) or 1.0))

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        mb, sb, mr, sr = self.scale
        return (self.blend.predict(matrix) - mb) / sb + (self.ranker.predict(matrix) - mr) / sr

    def describe(self, names: Sequence[str]) -> dict[str, Any]:
        return {"kind": self.kind, "blend": self.blend.describe(names), "lambdarank": self.ranker.describe(names)}


def _train_rows(q: Queries) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, labels and group sizes of the queries that have their target among the candidates."""
    has = np.flatnonzero(q.target >= 0)
    keep = np.isin(q.group, has)
    labels = np.zeros(len(q.group))
    labels[q.target[has]] = 1.0
    return q.matrix[keep], labels[keep], q.sizes[has]


def train_lambdarank(q: Queries, *, feature_names: Sequence[str], rounds: int = 150,
                     params: dict[str, Any] | None = None, valid: Queries | None = None,
                     bags: int | None = None) -> tuple[LambdaRanker, int]:
    """Fit on ``q`` (stopping early on ``valid`` when given); returns the model and its tree count."""
    import lightgbm as lgb

    x, y, sizes = _train_rows(q)
    p = {**LGBM_PARAMS, **(params or {})}
    p["min_data_in_leaf"] = max(1, min(int(p["min_data_in_leaf"]), max(1, len(x) // 50)))
    train = lgb.Dataset(x, y, group=sizes, feature_name=list(feature_names), free_raw_data=False)
    callbacks: list[Any] = []
    valid_sets = []
    if valid is not None:
        vx, vy, vs = _train_rows(valid)
        if len(vs):
            valid_sets = [lgb.Dataset(vx, vy, group=vs, reference=train)]
            callbacks = [lgb.early_stopping(20, verbose=False)]
    booster = lgb.train(p, train, num_boost_round=rounds, valid_sets=valid_sets or None, callbacks=callbacks)
    best = int(booster.best_iteration or rounds) if valid_sets else rounds
    others = []
    for b in range(1, max(1, BAGS if bags is None else bags)):  # the same trees count, other sampling seeds
        seeded = {**p, "seed": int(p["seed"]) + 1000 * b}
        others.append(lgb.train(seeded, train, num_boost_round=best))
    return LambdaRanker(booster=booster, feature_names=list(feature_names), others=others), best


@dataclass
class Selection:
    """What the cross-fit measured and which model won."""

    chosen: str
    cross_fit_ndcg: dict[str, float]
    in_sample_ndcg: dict[str, float]
    trees: int = 0
    cross_fit_hit: dict[str, float] = field(default_factory=dict)  # HR@k of the same out-of-fold scores
    folds: int = 2
    # the chosen kind's scores of every row of the queries by the model that did not train on it
    # (in-sample scores when there was no cross-fit): what the diversity choice is measured on
    out_of_fold: np.ndarray | None = None
    # each challenger's mean gain per query over the choice before it, and its standard error
    margins: dict[str, float] = field(default_factory=dict)


def choose_model(gains: dict[str, np.ndarray], *, margin_se: float = MARGIN_SE) -> tuple[str, dict[str, float]]:
    """The model to serve from each model's per-query validation gains (``blend``, ``lambdarank``,
    ``ensemble``, the same queries in the same order): the ensemble (the blend and the ranker averaged)
    unless the blend or the ranker alone beats it by more than ``margin_se`` standard errors of the
    paired per-query difference (when both do, the larger mean gain). A few hundred validation users
    rarely tell the three apart; when they cannot, the average of two models is the choice with the
    least variance, and a choice made on their noise is not (docs/evaluation.md, seventh pass).
    Returns the choice and each challenger's mean gain over the ensemble with its standard error."""
    margins: dict[str, float] = {}
    wins: dict[str, float] = {}
    base = np.asarray(gains["ensemble"], dtype=np.float64)
    for n in ("blend", "lambdarank"):
        diff = np.asarray(gains[n], dtype=np.float64) - base
        se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
        margins[f"{n}-ensemble"] = round(float(diff.mean()), 6)
        margins[f"{n}-ensemble:se"] = round(se, 6)
        if diff.mean() > margin_se * se + 1e-12:
            wins[n] = float(diff.mean())
    return (max(wins, key=lambda n: wins[n]) if wins else "ensemble"), margins


def select_model(q: Queries, *, names: Sequence[str], feature_names: Sequence[str], k: int,
                 min_queries: int = 100, folds: int = 2, seed: int = 13,
                 query_user: Sequence[str] | None = None, margin_se: float | None = None,
                 ) -> tuple[Any, Selection]:
    """Cross-fit the blend, the ranker and their ensemble over ``folds`` user folds and keep the ensemble
    unless the blend or the ranker alone beats it by more than ``margin_se`` (default :data:`MARGIN_SE`)
    standard errors of the paired per-query NDCG@k difference (the blend when there are fewer than
    ``min_queries`` users with a reachable target); refit it on all of ``q``."""
    n_src = len(names)
    norm = q.matrix[:, :n_src]
    singles = {n: ndcg_at(q, norm[:, j], k) for j, n in enumerate(names)}
    blend, blend_score = coordinate_ascent(q, n_sources=n_src, k=k)
    in_sample = {**{f"single:{n}": round(s, 6) for n, s in singles.items()}, "blend": round(blend_score, 6)}
    reachable = int((q.target >= 0).sum())
    if reachable < min_queries or len(q) < 2 * folds:
        return blend, Selection("blend", {}, in_sample, folds=0, out_of_fold=blend.predict(q.matrix))
    # folds of users (a user's queries of every validation round stay in one fold)
    keys = list(query_user) if query_user is not None else [str(i) for i in range(len(q))]
    distinct = sorted(set(keys))
    user_fold = dict(zip(distinct, np.random.default_rng(seed).permutation(len(distinct)) % folds, strict=True))
    fold_of = np.asarray([user_fold[u] for u in keys])
    trees: list[int] = []
    oof = {n: np.zeros(len(q.group)) for n in ("blend", "lambdarank", "ensemble")}
    best_single = int(np.argmax([singles[n] for n in names]))
    for f in range(folds):
        test_g = np.flatnonzero(fold_of == f)
        train_g = np.flatnonzero(fold_of != f)
        qt, qv = q.subset(train_g), q.subset(test_g)
        b, _ = coordinate_ascent(qt, n_sources=n_src, k=k)
        # early stopping on a slice of the training fold, never on the fold being scored
        inner = np.random.default_rng(seed + f).permutation(len(qt)) % 5 == 0
        model, n_trees = train_lambdarank(qt.subset(np.flatnonzero(~inner)), feature_names=feature_names,
                                          valid=qt.subset(np.flatnonzero(inner)))
        trees.append(n_trees)
        ens = EnsembleModel.of(b, model, qt.matrix)
        rows = np.flatnonzero(np.isin(q.group, test_g))  # qv's rows, in the same order
        for n, m in (("blend", b), ("lambdarank", model), ("ensemble", ens)):
            oof[n][rows] = m.predict(qv.matrix)
    scores_of = {"single:" + names[best_single]: norm[:, best_single], **oof}
    gains = {n: query_gains(q, sc, k) for n, sc in scores_of.items()}
    cross = {n: round(float(g.mean()), 6) for n, g in gains.items()}
    # HR@k of the same out-of-fold scores, reported beside the NDCG@k the choice is made on (a model
    # chosen on NDCG can place fewer targets in the top k than the one it beat)
    cross_hit = {n: round(hit_at(q, sc, k), 6) for n, sc in scores_of.items()}
    n_trees = max(10, int(round(float(np.mean(trees)))))
    chosen, margins = choose_model(gains, margin_se=MARGIN_SE if margin_se is None else margin_se)
    if chosen == "blend":
        return blend, Selection("blend", cross, in_sample, folds=folds, out_of_fold=oof["blend"], margins=margins,
                               cross_fit_hit=cross_hit)
    ranker, _ = train_lambdarank(q, feature_names=feature_names, rounds=n_trees)
    model_out: LambdaRanker | EnsembleModel = ranker if chosen == "lambdarank" else EnsembleModel.of(
        blend, ranker, q.matrix)
    in_sample[chosen] = round(ndcg_at(q, model_out.predict(q.matrix), k), 6)
    return model_out, Selection(chosen, cross, in_sample, trees=n_trees, folds=folds, out_of_fold=oof[chosen],
                                margins=margins, cross_fit_hit=cross_hit)
