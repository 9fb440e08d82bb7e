"""Trial records of a local run as an append-only JSON-lines file: one full snapshot per change.

Appending whole snapshots keeps a crash harmless: the last complete line of each trial wins and
a half-written final line is ignored, so a restarted run sees exactly what was recorded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import ValidationError

from kubenas.api.records import TrialRecord


class RecordLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[str, TrialRecord] = {}

    def load(self) -> dict[str, TrialRecord]:
        self.records = {}
        if self.path.exists():
            text = self.path.read_text(encoding="utf-8")
            if text and not text.endswith("\n"):
                with self.path.open("a", encoding="utf-8") as f:
                    f.write("\n")  # seal a line cut short by a kill, so appends stay whole
            for line in text.splitlines():
                try:
                    record = TrialRecord.model_validate(json.loads(line))
                except (json.JSONDecodeError, ValidationError):
                    continue  # a line cut short by a kill
                self.records[record.name] = record
        return self.records

    def put(self, record: TrialRecord) -> None:
        if self.records.get(record.name) == record:
            return
        self.records[record.name] = record
        with self.path.open("a", encoding="utf-8") as f:
            f.write(record.model_dump_json() + "\n")
            f.flush()
            os.fsync(f.fileno())
