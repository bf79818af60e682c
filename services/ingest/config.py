"""Ingest service settings (``RECSYS_*`` env vars); defaults run offline."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from shared.config import CommonSettings
from shared.outbox import OutboxRelay


class IngestSettings(CommonSettings):
    """Limits of the write API, the outbox relay and the raw-topic consumer."""

    INGEST_MAX_BODY_BYTES: int = Field(
        default=8 * 1024 * 1024, description="request bodies above this get 413"
    )
    INGEST_MAX_BATCH: int = Field(default=5_000, description="records per request above this get 413")
    RELAY_ENABLED: bool = Field(default=True, description="run the outbox relay thread inside this process")
    RELAY_BATCH: int = Field(
        default=100, ge=1, description="outbox rows claimed and published per round: at most this many are "
        "resent after a crash between the broker's acks and the commit"
    )
    RELAY_INTERVAL_S: float = Field(default=0.2, description="sleep between rounds when the outbox is empty")
    RELAY_MAX_BACKOFF_S: float = Field(
        default=30.0, description="cap of the retry backoff while the broker is down"
    )
    RELAY_FLUSH_TIMEOUT_S: float = Field(
        default=15.0, description="wait this long for the broker to ack a round"
    )
    RAW_GROUP_ID: str = Field(default="ingest-raw", description="consumer group of the raw-topic consumer")
    DLQ_MAX_RAW_CHARS: int = Field(default=100_000, description="raw record text kept in a dead letter")

    def outbox_relay(self, *, name: str) -> OutboxRelay:
        """The outbox relay with this service's RELAY_* knobs (the ingest processes run it)."""
        return OutboxRelay(
            settings=self,
            name=name,
            batch=self.RELAY_BATCH,
            interval_s=self.RELAY_INTERVAL_S,
            max_backoff_s=self.RELAY_MAX_BACKOFF_S,
            flush_timeout_s=self.RELAY_FLUSH_TIMEOUT_S,
        )


@lru_cache
def get_settings() -> IngestSettings:
    return IngestSettings()
