"""Settings of the ALS service (training job, retraining trigger, HTTP API)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field

from shared.config import CommonSettings


class AlsSettings(CommonSettings):
    """``RECSYS_ALS_*`` / ``RECSYS_SPARK_*``; every default runs offline on a laptop."""

    # Spark (local[*] embedded; k8s://https://... or yarn in production).
    SPARK_MASTER: str = Field("local[*]", description="Spark master URL")
    SPARK_DRIVER_MEMORY: str = "2g"
    SPARK_SHUFFLE_PARTITIONS: int = Field(8, description="small locally; ~2-3x executor cores on a cluster")
    SPARK_CONF: dict[str, str] = Field(
        default_factory=dict, description="extra Spark conf (JSON), e.g. spark.kubernetes.container.image"
    )
    SPARK_CHECKPOINT_DIR: str = Field(
        "", description="empty = HOME/spark-checkpoints; shared storage on a cluster"
    )
    ALS_CV_GRID: dict[str, list[int | float]] = Field(
        default_factory=dict, description='override the --cv grid (JSON), e.g. {"rank": [5, 10]}'
    )

    # Model hyper-parameters (defaults; the last --cv best overrides them when stored).
    ALS_RANK: int = 10
    ALS_MAX_ITER: int = 10
    ALS_REG_PARAM: float = 0.1
    ALS_BIAS_REG: float = Field(5.0, description="L2 shrinkage of user/item biases (pseudo-counts)")
    ALS_IMPLICIT_ALPHA: float = Field(10.0, description="confidence scale of the implicit model")
    ALS_CHECKPOINT_INTERVAL: int = Field(2, description="iterations between lineage-cutting checkpoints")
    ALS_NUM_BLOCKS: int = Field(0, description="user/item blocks; 0 = Spark default parallelism")
    ALS_SEED: int = 42
    ALS_TOP_N: int = Field(50, description="recommendations stored per user")
    ALS_SPLIT: str = Field("leave-last-out", description="leave-last-out | global-time")
    ALS_TEST_FRACTION: float = Field(0.1, description="global-time split: newest fraction held out")
    ALS_REFIT_ON_ALL: bool = Field(True, description="after evaluation, refit on every rating for serving")
    ALS_PROMOTION_TOLERANCE: float = Field(0.0, description="relative slack when comparing to the live model")
    ALS_MIN_RATINGS: int = Field(10, description="refuse to train on fewer ratings")
    ALS_FACTOR_GATE: bool = Field(
        True,
        description="explicit model: keep the ALS factors only when they lower the validation RMSE of the "
        "user+item bias baseline (a leave-last-out split of the training part); otherwise serve the biases",
    )
    ALS_NEIGHBOURS: bool = Field(
        True,
        description="the training run also computes per-item co-review neighbours and transitions in Spark "
        "and stores them with the model version (the retriever serves its co-review / transition sources "
        "from them)",
    )
    ALS_NEIGHBOURS_TOP: int = Field(100, ge=1, description="co-review neighbours kept per item")
    ALS_NEIGHBOURS_WINDOWS: list[int] = Field(
        default_factory=lambda: [1, 2], description="transition windows (steps apart) stored, JSON"
    )
    ALS_NEIGHBOURS_TRANSITIONS_TOP: int = Field(
        0, ge=0, description="transitions kept per item and direction; 0 = all (they grow linearly)"
    )
    ALS_RATINGS_PARQUET: str = Field("", description="read ratings from this Parquet path instead of the DB")

    # Retraining.
    ALS_RETRAIN_INTERVAL_S: int = Field(6 * 3600, description="Celery beat period; 0 disables")
    ALS_RETRAIN_AFTER_N_REVIEWS: int = Field(
        1000, description="trigger a training after this many new reviews"
    )
    ALS_TRAIN_EXECUTOR: str = Field("celery", description="celery | thread (POST /v1/models/train)")
    ALS_LOCK_TTL_S: int = Field(600, description="training lease; renewed while the run is alive")
    ALS_TRIGGER_GROUP: str = "als-trigger"
    ALS_TRIGGER_QUEUED_TTL_S: float = Field(
        3600.0, gt=0, description="a queued retraining that has not started after this long is queued again"
    )
    # ALS_SERVING_KIND (the kind served when a request names none) is in CommonSettings: the retriever reads it too.

    def checkpoint_dir(self) -> str:
        return self.SPARK_CHECKPOINT_DIR or str((self.HOME / "spark-checkpoints").resolve())

    def artifacts_dir(self) -> Path:
        return self.HOME / "als"

    def default_params(self) -> dict[str, Any]:
        return {
            "rank": self.ALS_RANK,
            "maxIter": self.ALS_MAX_ITER,
            "regParam": self.ALS_REG_PARAM,
            "biasReg": self.ALS_BIAS_REG,
            "alpha": self.ALS_IMPLICIT_ALPHA,
            "checkpointInterval": self.ALS_CHECKPOINT_INTERVAL,
            "numBlocks": self.ALS_NUM_BLOCKS,
            "seed": self.ALS_SEED,
        }


@lru_cache
def get_settings() -> AlsSettings:
    return AlsSettings()

