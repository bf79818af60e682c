"""The one SparkSession per process, from settings (local[*] by default, a cluster in production)."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from services.als.config import AlsSettings
from shared.logging import get_logger

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = get_logger(__name__)
_lock = threading.Lock()
_session: SparkSession | None = None


def get_spark(settings: AlsSettings) -> SparkSession:
    """Build (once) or return the process-wide SparkSession; the checkpoint directory is ALWAYS set.

    Without a checkpoint directory ALS lineage grows with every iteration and 15+ iterations die with
    a StackOverflowError; ``checkpointInterval`` on the estimator cuts it.
    """
    global _session
    from pyspark.sql import SparkSession

    with _lock:
        if _session is not None and _session.sparkContext._jsc is not None:  # not stopped
            _ensure_checkpoint_dir(_session, settings)
            return _session
        # The driver's Python must be the one running us (a venv), also for executors in local mode.
        os.environ.setdefault("PYSPARK_PYTHON", _python())
        builder = (
            SparkSession.builder.master(settings.SPARK_MASTER)
            .appName("recsys-als")
            .config("spark.driver.memory", settings.SPARK_DRIVER_MEMORY)
            .config("spark.sql.shuffle.partitions", str(settings.SPARK_SHUFFLE_PARTITIONS))
            .config("spark.default.parallelism", str(settings.SPARK_SHUFFLE_PARTITIONS))
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .config("spark.driver.extraJavaOptions", "-Xss16m")  # deep ALS plans: belt and braces
            .config("spark.sql.adaptive.enabled", "true")
        )
        for key, value in settings.SPARK_CONF.items():
            builder = builder.config(key, value)
        spark = builder.getOrCreate()
        spark.sparkContext.setLogLevel("WARN")
        _ensure_checkpoint_dir(spark, settings)
        _session = spark
        log.info(
            "spark session started",
            extra={"master": settings.SPARK_MASTER, "checkpoint_dir": settings.checkpoint_dir()},
        )
        return spark


def _ensure_checkpoint_dir(spark: SparkSession, settings: AlsSettings) -> None:
    target = settings.checkpoint_dir()
    if "://" not in target:
        Path(target).mkdir(parents=True, exist_ok=True)
    if spark.sparkContext.getCheckpointDir() is None:
        spark.sparkContext.setCheckpointDir(target)


def _python() -> str:
    import sys

    return sys.executable


def stop_spark() -> None:
    """Stop the process-wide session (tests, CLI exit)."""
    global _session
    with _lock:
        if _session is not None:
            _session.stop()
            _session = None
