"""``recsys consume als-trigger``: count new reviews on reviews.v1 and ask for a retraining after N.

The count and the last counted offset per partition live in one ``als_state`` row, updated in
the same transaction, so a replayed batch (crash before the Kafka commit) is not counted twice.
When the count reaches ``ALS_RETRAIN_AFTER_N_REVIEWS`` and no training holds the lease, one
``als.train`` task is enqueued and the count restarts; while a training runs the count is kept
and re-checked on idle polls, so no burst of reviews is forgotten.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from kafka.consumer.fetcher import ConsumerRecord

from services.als import store
from services.als.config import AlsSettings, get_settings
from shared.db import session_scope
from shared.events import REVIEWS
from shared.kafka import ConsumerLoop
from shared.logging import get_logger

log = get_logger(__name__)

STATE_KEY = "retrain_trigger"
Enqueue = Callable[[str], Any]  # run_id -> anything; raises when the request could not be queued


class RetrainTrigger:
    """The consumer's handler (``handle``) and its idle check (``check``)."""

    def __init__(
        self, settings: AlsSettings, *, enqueue: Enqueue | None = None, idle_check_s: float = 30.0
    ) -> None:
        self.settings = settings
        self.enqueue = enqueue or self._celery_enqueue
        self.idle_check_s = idle_check_s
        self._last_check = time.monotonic()

    def _celery_enqueue(self, run_id: str) -> None:
        from services.als.tasks import enqueue_training

        enqueue_training(self.settings, run_id=run_id)

    def handle(self, records: list[ConsumerRecord]) -> None:
        self._update(records)

    def check(self) -> None:
        """Idle callback: fire a pending trigger once the running training has released the lease."""
        if time.monotonic() - self._last_check >= self.idle_check_s:
            self._last_check = time.monotonic()
            self._update([])

    def _update(self, records: list[ConsumerRecord]) -> None:
        with session_scope(self.settings.database_url) as s:
            state = store.get_state(s, STATE_KEY, for_update=True)
            offsets: dict[str, int] = dict(state.get("offsets", {}))
            new = 0
            for r in records:
                key = f"{r.topic}:{r.partition}"
                if r.offset > offsets.get(key, -1):
                    new += 1
                    offsets[key] = r.offset
            pending = int(state.get("pending", 0)) + new
            if not new and pending < self.settings.ALS_RETRAIN_AFTER_N_REVIEWS:
                return
            state.update(offsets=offsets, pending=pending, counted=int(state.get("counted", 0)) + new)
            if pending >= self.settings.ALS_RETRAIN_AFTER_N_REVIEWS:
                holder = store.lease_holder(self.settings.database_url)
                if holder is None:
                    run_id = uuid.uuid4().hex
                    # Enqueue before the commit: a failed commit means at most one extra training.
                    self.enqueue(run_id)
                    state.update(pending=0, last_run_id=run_id, last_enqueued_at=time.time())
                    log.info("retraining requested", extra={"run_id": run_id, "after_reviews": pending})
                else:
                    log.info(
                        "retraining due; a training is running", extra={"holder": holder, "pending": pending}
                    )
            store.put_state(s, STATE_KEY, state)


def run(*, settings: AlsSettings | None = None) -> int:
    """Consume reviews.v1 until SIGTERM."""
    settings = settings or get_settings()
    trigger = RetrainTrigger(settings)
    loop = ConsumerLoop(
        settings=settings,
        topics=[REVIEWS],
        group_id=settings.ALS_TRIGGER_GROUP,
        handler=trigger.handle,
        name="als-trigger",
        idle_callback=trigger.check,
    )
    loop.install_signal_handlers()
    loop.run()
    return 0
