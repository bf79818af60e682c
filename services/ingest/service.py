"""Parsing and validation, the one write path shared by the HTTP API and the raw-topic consumer.

A request body is parsed (:func:`parse_records`), its records validated one by one with
:mod:`shared.amazon` (:func:`validate`), and the valid ones stored with their outbox events in one
transaction (:func:`ingest`, through :mod:`services.ingest.store`); every rejected record is reported
with its index, field and reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from pydantic import ValidationError

from services.ingest import store
from services.ingest.schemas import RECORD_MODELS, IngestResult, Kind, Rejection
from shared.http import DomainError


class PayloadTooLarge(DomainError):
    status_code = 413
    code = "payload_too_large"


class BadBody(DomainError):
    status_code = 400
    code = "malformed_body"


class AllRejected(DomainError):
    status_code = 422
    code = "validation_error"


def validation_errors(exc: ValidationError) -> list[dict[str, str]]:
    """Pydantic errors as ``{"field", "message", "type"}`` with dotted field paths."""
    out = []
    for e in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in e.get("loc", ()))
        msg = str(e.get("msg", "invalid"))
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        out.append({"field": loc, "message": msg, "type": str(e.get("type", "value_error"))})
    return out


def validate(*, kind: Kind, records: Sequence[Any]) -> tuple[list[Any], list[Rejection]]:
    """Split records into valid models (in order) and rejections (with their index)."""
    model = RECORD_MODELS[kind]
    valid: list[Any] = []
    rejected: list[Rejection] = []
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            rejected.append(
                Rejection(
                    index=index,
                    errors=[{"field": "", "message": "record must be a JSON object", "type": "model_type"}],
                )
            )
            continue
        try:
            valid.append(model.model_validate(record))
        except ValidationError as exc:
            rejected.append(Rejection(index=index, errors=validation_errors(exc)))
    return valid, rejected


def parse_records(*, body: bytes, kind: Kind, max_batch: int) -> tuple[list[Any], bool]:
    """JSON body → (records, is_batch). One object, ``{"<kind>": [...]}`` or a bare list."""
    if not body.strip():
        raise BadBody("request body is empty; send a JSON object")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        reason = "body is not valid UTF-8" if "utf-8" in str(exc).lower() else "body is not valid JSON"
        raise BadBody(f"{reason}: {exc}") from exc
    if isinstance(doc, dict) and kind in doc and set(doc) == {kind}:
        records, batch = doc[kind], True
        if not isinstance(records, list):
            raise AllRejected(
                f'"{kind}" must be a list of objects',
                details=[
                    {
                        "index": None,
                        "errors": [{"field": kind, "message": "must be a list", "type": "list_type"}],
                    }
                ],
            )
    elif isinstance(doc, list):
        records, batch = doc, True
    elif isinstance(doc, dict):
        records, batch = [doc], False
    else:
        raise AllRejected(f'body must be a JSON object (one record) or {{"{kind}": [...]}}')
    if len(records) > max_batch:
        raise PayloadTooLarge(
            f"{len(records)} records in one request; the limit is {max_batch}", code="batch_too_large"
        )
    return records, batch


def ingest(*, database_url: str, kind: Kind, records: Sequence[Any]) -> IngestResult:
    """Validate ``records`` and store the valid ones (rows + outbox) in one transaction."""
    valid, rejected = validate(kind=kind, records=records)
    changed = store.write(database_url=database_url, kind=kind, models=valid) if valid else 0
    return IngestResult(accepted=len(valid), changed=changed, rejected=rejected)


def require_accepted(*, result: IngestResult, batch: bool) -> IngestResult:
    """``result`` when at least one record was stored; :class:`AllRejected` (every rejection listed) if none."""
    if result.rejected and result.accepted == 0:
        first = result.rejected[0]
        where = f"record {first.index}: " if batch else ""
        more = f" (and {len(result.rejected) - 1} more records)" if len(result.rejected) > 1 else ""
        raise AllRejected(f"{where}{first.summary()}{more}", details=[r.as_dict() for r in result.rejected])
    return result
