"""``recsys ingest``: files → HTTP API in batches; counts accepted and rejected; unreachable → non-zero."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from services.ingest.app import create_app
from services.ingest.config import IngestSettings
from shared.broker import free_port
from shared.config import CommonSettings
from shared.db import session_scope
from shared.models import Item, Review
from tests.utils.records import live_server, review
from tests.utils.settings import service_settings
from tools import ingest as ingest_client
from tools.synth import write


@pytest.fixture(scope="module")
def ingest_settings(settings: CommonSettings) -> IngestSettings:
    return service_settings(IngestSettings, settings, API_KEYS=[])


@pytest.fixture(scope="module")
def live_url(ingest_settings: IngestSettings) -> Iterator[str]:
    with live_server(create_app(ingest_settings.model_copy(update={"RELAY_ENABLED": False}))) as url:
        yield url


def test_ingest_files_through_the_api(
    live_url: str, ingest_settings: IngestSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    counts = write(tmp_path, users=60, items=40, seed=99)
    # A gzipped reviews file with one broken line and one invalid record appended.
    lines = (tmp_path / "reviews.jsonl").read_text().splitlines()
    lines += ["{broken", json.dumps(review(rating=11))]
    gz = tmp_path / "reviews.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")

    code = ingest_client.main(reviews=gz, meta=tmp_path / "meta.jsonl", url=live_url, batch_size=25)
    assert code == 0
    out = capsys.readouterr().out
    assert f"items: {counts['items']} accepted, 0 rejected" in out
    assert f"reviews: {counts['reviews']} accepted, 2 rejected" in out
    assert "rating: Input should be less than or equal to 5" in out
    users = {json.loads(line)["user_id"] for line in lines[:-2]}
    with session_scope(ingest_settings.database_url) as s:
        stored = s.scalar(select(func.count()).select_from(Review).where(Review.user_id.in_(users)))
        items = s.scalar(
            select(func.count())
            .select_from(Item)
            .where(
                Item.parent_asin.in_([json.loads(x)["parent_asin"] for x in (tmp_path / "meta.jsonl").open()])
            )
        )
    assert stored == counts["reviews"]
    assert items == counts["items"]


def test_unreachable_service_exits_non_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest_client, "RETRIES", 2)
    write(tmp_path, users=5, items=10, seed=1)
    code = ingest_client.main(
        reviews=tmp_path / "reviews.jsonl", meta=None, url=f"http://127.0.0.1:{free_port()}"
    )
    assert code == 1


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    assert ingest_client.main(reviews=tmp_path / "nope.jsonl") == 2
    assert ingest_client.main() == 2
