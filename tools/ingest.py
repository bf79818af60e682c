"""``recsys ingest``: stream Amazon Reviews 2023 ``.jsonl``/``.jsonl.gz`` files through the ingest API.

Items go first (so consumers of reviews.v1 find their item), then reviews, in batches bounded by
count and by bytes. Connection errors and 5xx are retried with backoff; a 413 splits the batch.
Exit code is non-zero only when the service cannot be reached; rejected records are reported.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import typer
from tqdm import tqdm

from shared.amazon import iter_jsonl
from shared.config import get_settings

MAX_BATCH_BYTES = 4 * 1024 * 1024  # well under the service's default 8 MiB body limit
RETRIES = 6
SHOW_REJECTIONS = 5


class Unreachable(RuntimeError):
    """The ingest service did not answer (connection refused, timeouts, 5xx) after every retry."""


@dataclass
class Tally:
    accepted: int = 0
    rejected: int = 0
    examples: list[str] = field(default_factory=list)

    def reject(self, where: str, reason: str) -> None:
        self.rejected += 1
        if len(self.examples) < SHOW_REJECTIONS:
            self.examples.append(f"{where}: {reason}")


def _batches(path: Path, *, batch_size: int, tally: Tally) -> Iterator[list[tuple[int, bytes]]]:
    """Yield lists of (line number, encoded record), bounded by count and bytes; bad lines are tallied."""
    batch: list[tuple[int, bytes]] = []
    size = 0
    for line_no, obj, err in iter_jsonl(path):
        if err is not None or obj is None:
            tally.reject(f"{path.name}:{line_no}", err or "empty")
            continue
        try:
            raw = orjson.dumps(obj)
        except TypeError as exc:  # orjson.JSONEncodeError: e.g. nested deeper than it recurses (254)
            tally.reject(f"{path.name}:{line_no}", f"cannot be re-encoded as JSON: {exc}")
            continue
        if batch and (len(batch) >= batch_size or size + len(raw) > MAX_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append((line_no, raw))
        size += len(raw) + 1
    if batch:
        yield batch


def _count_lines(path: Path) -> int | None:
    if path.suffix == ".gz":
        return None  # counting would mean decompressing twice
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


class IngestClient:
    def __init__(self, *, url: str, api_key: str | None, timeout_s: float = 120.0) -> None:
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self.http.close()

    def _post(self, kind: str, body: bytes) -> httpx.Response:
        delay = 0.5
        for attempt in range(RETRIES):
            try:
                resp = self.http.post(f"/v1/{kind}", content=body)
                if resp.status_code < 500:
                    return resp
                problem = f"HTTP {resp.status_code}: {resp.text[:200]}"
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if attempt == RETRIES - 1:
                raise Unreachable(f"{self.http.base_url}/v1/{kind}: {problem}")
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
        raise AssertionError("unreachable")

    def send(self, kind: str, batch: list[tuple[int, bytes]], *, path: Path, tally: Tally) -> None:
        body = b'{"' + kind.encode() + b'":[' + b",".join(raw for _, raw in batch) + b"]}"
        resp = self._post(kind, body)
        if resp.status_code == 413 and len(batch) > 1:
            half = len(batch) // 2
            self.send(kind, batch[:half], path=path, tally=tally)
            self.send(kind, batch[half:], path=path, tally=tally)
            return
        doc: Any = _json(resp)
        if resp.status_code in (200, 201, 202):
            tally.accepted += int(doc.get("accepted", 0))
            for rej in doc.get("rejected", []):
                tally.reject(f"{path.name}:{batch[rej['index']][0]}", _summary(rej))
            return
        if resp.status_code == 422 and isinstance(doc.get("error", {}).get("details"), list):
            for rej in doc["error"]["details"]:
                idx = rej.get("index")
                where = f"{path.name}:{batch[idx][0]}" if isinstance(idx, int) else path.name
                tally.reject(where, _summary(rej))
            return
        if resp.status_code in (401, 403):
            raise Unreachable(f"not authorized ({resp.status_code}): pass --api-key or set RECSYS_API_KEY")
        message = doc.get("error", {}).get("message") if isinstance(doc, dict) else None
        for line_no, _ in batch:
            tally.reject(f"{path.name}:{line_no}", f"HTTP {resp.status_code}: {message or resp.text[:200]}")


def _json(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return {}


def _summary(rejection: dict[str, Any]) -> str:
    return "; ".join(
        f"{e.get('field') or '<record>'}: {e.get('message')}" for e in rejection.get("errors", [])
    )


def ingest_file(client: IngestClient, *, kind: str, path: Path, batch_size: int) -> Tally:
    tally = Tally()
    with tqdm(
        total=_count_lines(path), unit=" rec", desc=f"{kind:8s} {path.name}", dynamic_ncols=True
    ) as bar:
        for batch in _batches(path, batch_size=batch_size, tally=tally):
            client.send(kind, batch, path=path, tally=tally)
            bar.update(len(batch))
    return tally


def main(
    reviews: Path | None = None,
    meta: Path | None = None,
    url: str | None = None,
    batch_size: int = 500,
    api_key: str | None = None,
) -> int:
    """Stream the files (items first, then reviews); 0 unless the service is unreachable."""
    if reviews is None and meta is None:
        typer.echo("nothing to ingest: pass --reviews and/or --meta", err=True)
        return 2
    for p in (meta, reviews):
        if p is not None and not Path(p).is_file():
            typer.echo(f"no such file: {p}", err=True)
            return 2
    settings = get_settings()
    url = url or settings.INGEST_URL
    api_key = api_key or (settings.API_KEYS[0] if settings.API_KEYS else None)
    client = IngestClient(url=url, api_key=api_key)
    started = time.monotonic()
    try:
        for kind, path in (("items", meta), ("reviews", reviews)):
            if path is None:
                continue
            tally = ingest_file(client, kind=kind, path=Path(path), batch_size=max(1, batch_size))
            typer.echo(f"{kind}: {tally.accepted} accepted, {tally.rejected} rejected ({path})")
            for example in tally.examples:
                typer.echo(f"  rejected {example}")
    except Unreachable as exc:
        typer.echo(f"ingest service unreachable: {exc}", err=True)
        return 1
    finally:
        client.close()
    typer.echo(f"done in {time.monotonic() - started:.1f}s")
    return 0
