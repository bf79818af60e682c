"""The process types of a deployment: HTTP services, Kafka consumers and Celery workers.

One registry, read by the CLI (``recsys serve|consume|worker``) and the local stack (``recsys up``).
"""

from __future__ import annotations

# HTTP services: name -> (module with create_app(), default port)
HTTP_SERVICES: dict[str, tuple[str, int]] = {
    "gateway": ("services.gateway.app", 8000),
    "ingest": ("services.ingest.app", 8001),
    "retriever": ("services.retriever.app", 8002),
    "explainer": ("services.explainer.app", 8003),
    "als": ("services.als.app", 8004),
    "dashboard": ("services.dashboard.app", 8005),
}
# Long-running consumers: name -> "module:function" that reads its service's settings and runs until SIGTERM.
CONSUMERS: dict[str, str] = {
    "ingest-raw": "services.ingest.raw_consumer:run",
    "retriever-indexer": "services.retriever.indexer:run",
    "profiler-trigger": "services.profiler.trigger:run",
    "als-trigger": "services.als.trigger:run",
}
# Celery workers: name -> module holding `celery_app`, and its queue.
WORKERS: dict[str, tuple[str, str]] = {
    "profiler": ("services.profiler.tasks", "profiler"),
    "als": ("services.als.tasks", "als"),
    # the explainer's LLM: requests' jobs and profile events' jobs, taken in turn
    "explainer": ("services.explainer.tasks", "explainer,explainer-precompute"),
}
