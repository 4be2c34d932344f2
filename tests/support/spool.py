"""Usage rows and the spool files of processes that died, for the spool and console tests."""

from __future__ import annotations

import json
from pathlib import Path

from core.usage.records import UsageRecord, encode


def good(user_id: int = 7, **changes: object) -> UsageRecord:
    """A fresh attempt (each with its own attempt_id; dataclasses.replace would copy it)."""
    fields = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15} | changes
    return UsageRecord(None, user_id, "openai", "gpt-4o-mini", "extraction", "success", **fields)  # type: ignore[arg-type]


def spool_line(record: UsageRecord) -> bytes:
    """The line a router's writer appends for `record` (no reservation)."""
    return json.dumps(encode(record, None)).encode() + b"\n"


def plant(orphan: Path, data: bytes) -> None:
    """Leave a dead process's spool file, whole at once (a live writer's thread may be
    looking for orphans: it must not find one half written)."""
    orphan.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    unnamed = orphan.with_suffix(".new")
    unnamed.write_bytes(data)
    unnamed.rename(orphan)
