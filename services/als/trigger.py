"""``recsys consume als-trigger``: ask for a retraining once N new reviews are in the database.

New reviews are counted by identity, in the database: the reviews whose row id is above the
watermark stored in one ``als_state`` row (a review is one row, whatever its events did). So a
replayed batch, a duplicate event or a recreated topic (offsets restarting at 0 after a broker
restart) count nothing twice and lose nothing; reviews.v1 events only wake the trigger up, and an
idle check counts what arrived while nothing was consumed.

Trainings are coalesced: at most one runs (the training lease) and one is queued. The queued run's
id is kept in the state until the task takes the lease (``run_training`` clears it), and no other
run is queued meanwhile; while a training runs, the due count waits for the lease to be released.
A queued run that never started within ``ALS_TRIGGER_QUEUED_TTL_S`` (a lost message) is replaced.
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
        self._update()

    def check(self) -> None:
        """Idle callback: count what arrived meanwhile; fire once the running training released the lease."""
        if time.monotonic() - self._last_check >= self.idle_check_s:
            self._last_check = time.monotonic()
            self._update()

    def _update(self) -> None:
        with session_scope(self.settings.database_url) as s:
            state = store.get_state(s, STATE_KEY, for_update=True)
            watermark = int(state.get("watermark", 0))
            newest = store.newest_review_id(s)
            pending = store.count_reviews_after(s, watermark) if newest > watermark else 0
            if pending == state.get("pending") and pending < self.settings.ALS_RETRAIN_AFTER_N_REVIEWS:
                return
            state["pending"] = pending
            if pending >= self.settings.ALS_RETRAIN_AFTER_N_REVIEWS:
                self._maybe_enqueue(state, pending=pending, newest=newest)
            store.put_state(s, STATE_KEY, state)

    def _maybe_enqueue(self, state: dict[str, Any], *, pending: int, newest: int) -> None:
        queued, queued_at = state.get("queued_run_id"), float(state.get("queued_at") or 0)
        if queued and time.time() - queued_at < self.settings.ALS_TRIGGER_QUEUED_TTL_S:
            log.info("retraining due; one is already queued", extra={"queued": queued, "pending": pending})
            return
        holder = store.lease_holder(self.settings.database_url)
        if holder is not None:
            log.info("retraining due; a training is running", extra={"holder": holder, "pending": pending})
            return
        run_id = uuid.uuid4().hex
        # Enqueue before the commit: a failed commit means at most one extra training.
        self.enqueue(run_id)
        state.update(
            watermark=newest, pending=0, counted=int(state.get("counted", 0)) + pending,
            queued_run_id=run_id, queued_at=time.time(), last_run_id=run_id, last_enqueued_at=time.time(),
            enqueued=int(state.get("enqueued", 0)) + 1,
        )
        log.info("retraining requested", extra={"run_id": run_id, "after_reviews": pending})


def mark_started(settings: AlsSettings, run_id: str) -> None:
    """Called by a training that took the lease: the queued run (if it is this one) is no longer queued."""
    with session_scope(settings.database_url) as s:
        state = store.get_state(s, STATE_KEY, for_update=True)
        if state.get("queued_run_id") == run_id:
            state.update(queued_run_id=None, queued_at=None)
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
