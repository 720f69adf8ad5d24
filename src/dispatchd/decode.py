"""Request bodies into validated records: one record, a JSON array or NDJSON, all or nothing."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from .constants import NDJSON
from .http_errors import ApiError
from .models import RECORD, RECORDS, Record

MAX_DETAILS = 100


def decode_records(body: bytes, content_type: str, max_batch: int) -> list[Record]:
    """Validate a whole request body (one record, an array, or NDJSON); all or nothing."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "bad_encoding", f"body is not valid UTF-8: {exc}") from None
    if content_type == NDJSON:
        return _decode_ndjson(body, max_batch)
    is_array = body.lstrip()[:1] == b"["
    try:
        records = RECORDS.validate_json(body) if is_array else [RECORD.validate_json(body)]
    except ValidationError as exc:
        raise _validation_error(exc, array=is_array) from None
    _check_count(len(records), max_batch)
    return records


def _decode_ndjson(body: bytes, max_batch: int) -> list[Record]:
    lines = [line for line in body.split(b"\n") if line.strip()]
    _check_count(len(lines), max_batch)
    records, details = [], []
    for index, line in enumerate(lines):
        try:
            records.append(RECORD.validate_json(line))
        except ValidationError as exc:
            if _is_json_error(exc):
                raise ApiError(400, "bad_json", f"record {index} is not valid JSON", [
                    {"index": index, "message": exc.errors()[0]["msg"]}
                ]) from None
            details.extend(_details(exc, index))
    if details:
        raise _invalid(details)
    return records


def _check_count(count: int, max_batch: int) -> None:
    if count > max_batch:
        raise ApiError(
            422, "too_many_records",
            f"{count} records in one request; server.max_batch is {max_batch}",
        )


def _is_json_error(exc: ValidationError) -> bool:
    return any(e["type"] == "json_invalid" for e in exc.errors())


def _validation_error(exc: ValidationError, array: bool) -> ApiError:
    if _is_json_error(exc):
        msg = exc.errors()[0]["msg"]
        return ApiError(400, "bad_json", f"body is not valid JSON: {msg}")
    details = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = list(error["loc"])
        index = loc.pop(0) if array and loc and isinstance(loc[0], int) else 0
        details.append(_detail(index, loc, error["msg"], error["type"]))
    return _invalid(details)


def _details(exc: ValidationError, index: int) -> list[dict[str, Any]]:
    return [
        _detail(index, list(e["loc"]), e["msg"], e["type"])
        for e in exc.errors(include_url=False, include_input=False)
    ]


def _detail(index: Any, loc: list[Any], message: str, kind: str) -> dict[str, Any]:
    return {"index": index, "field": ".".join(str(p) for p in loc), "message": message, "type": kind}


def _invalid(details: list[dict[str, Any]]) -> ApiError:
    first = details[0]
    where = f"record {first['index']}" + (f", field {first['field']}" if first["field"] else "")
    return ApiError(
        422, "validation_failed", f"{len(details)} problem(s); first: {where}: {first['message']}",
        details[:MAX_DETAILS],
    )
