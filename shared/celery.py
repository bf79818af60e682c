"""What the project's Celery workers (profiler, explainer) share: the reliability settings and the
warm-up hook."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def reliable_conf(*, broker_url: str, visibility_timeout_s: int, time_limit_s: int) -> dict[str, Any]:
    """Late acknowledgement, redelivery of a job whose worker died, one job prefetched, JSON only.

    Redelivery options are Redis-transport options; the SQLAlchemy transport (embedded mode) passes
    transport options to create_engine, which rejects them."""
    return {
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": time_limit_s,
        "task_soft_time_limit": max(5, time_limit_s - 30),
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "task_ignore_result": True,  # the effect of a job is what it stores; nobody waits on results
        "broker_transport_options": ({
            "visibility_timeout": visibility_timeout_s,
            # sweep for abandoned jobs often enough that a short visibility timeout means fast recovery
            "unacked_restore_interval": max(1, min(10, visibility_timeout_s // 2)),
            "unacked_restore_throttle": 1,
        } if broker_url.startswith(("redis", "rediss")) else {}),
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
    }


def at_worker_start(warm_up: Callable[[], None]) -> None:
    """Run ``warm_up`` (load the models) in the process that runs the jobs, when it starts: each child
    of a prefork pool, or the main process of a solo pool."""
    from celery.signals import worker_init, worker_process_init

    def child(**_: Any) -> None:
        warm_up()

    def solo(sender: Any = None, **_: Any) -> None:
        if "solo" in str(getattr(sender, "pool_cls", "")).lower():
            warm_up()

    worker_process_init.connect(child, weak=False)
    worker_init.connect(solo, weak=False)
