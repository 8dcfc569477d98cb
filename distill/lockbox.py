"""The lockbox: the test split is read only for a final verdict, and every reading is counted.

A test set that is looked at while recipes are still being chosen stops being a test set: the
recipe that happened to separate on it ships. So the distillation job reports on validation by
default, and reads the test split (personas x catalog, held-out motifs included) only with
``eval.final=true``. Each such opening is appended to a counter file kept *beside* the run
outputs, ``<runs folder>/lockbox/<setting key>.json``, keyed by the setting: the dataset (or demo
world), the test sample, the evaluation tournament and the teacher. Every run on that setting
shares the count, whatever its recipe, so the report says how many times this test set has been
opened before, and a reader can discount a verdict that needed many openings.

The count is read-modify-written without a lock: two final runs opening at the same instant may
record one opening between them. That undercounts only races, never a sequence of runs.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone

from pydantic import BaseModel, Field

from distill import storage


class LockboxOpening(BaseModel):
    """One reading of the test split."""

    at: str = Field(description="UTC ISO-8601 time of the opening")
    output: str = Field(description="the run that opened it")
    run: dict = Field(default_factory=dict, description="what the run compared (arms, seeds): for the record")


class LockboxRecord(BaseModel):
    """``<runs>/lockbox/<key>.json``: the setting and every opening so far."""

    key: str
    setting: dict
    openings: list[LockboxOpening] = Field(default_factory=list)


class LockboxStatus(BaseModel):
    """What a report records about the lockbox."""

    key: str
    path: str
    opened: int = Field(description="openings of this setting's test split, this one included")
    opened_by_this_run: int = Field(description="of those, by this run's output")


def test_setting(root: str | None, world: BaseModel, ev: BaseModel, judge: BaseModel) -> dict:
    """What identifies one lockbox: the data (dataset root, or the demo world's config), the test
    sample (personas, catalog subsample), and how its winners are labelled (tournament, teacher)."""
    data = {"root": root} if root else {"world": world.model_dump(mode="json")}
    return {**data, "test_personas": ev.test_personas, "test_max_candidates": ev.test_max_candidates,
            "tournament": ev.tournament.model_dump(mode="json"), "judge": judge.model_dump(mode="json")}


def setting_key(setting: dict) -> str:
    """A short stable digest of the setting that identifies one test set."""
    return hashlib.blake2b(json.dumps(setting, sort_keys=True).encode(), digest_size=6).hexdigest()


def record_path(output: str, key: str) -> str:
    """Beside the run outputs: the run folder's parent gets a ``lockbox/`` folder."""
    parent = output.rstrip("/").rsplit("/", 1)[0] if "/" in output.rstrip("/") else "."
    return storage.join(parent, "lockbox", f"{key}.json")


def read_record(output: str, setting: dict) -> LockboxRecord:
    key = setting_key(setting)
    path = record_path(output, key)
    if storage.exists(path):
        return LockboxRecord.model_validate(storage.read_json(path))
    return LockboxRecord(key=key, setting=setting)


def open_lockbox(output: str, setting: dict, run: dict | None = None) -> LockboxStatus:
    """Count one opening of the setting's test split by ``output`` and return the status."""
    record = read_record(output, setting)
    record.openings.append(LockboxOpening(at=datetime.now(timezone.utc).isoformat(), output=output, run=run or {}))
    path = record_path(output, record.key)
    storage.write_json_atomic(record.model_dump(mode="json"), path)
    return status(record, output, path)


def status(record: LockboxRecord, output: str, path: str) -> LockboxStatus:
    return LockboxStatus(key=record.key, path=path, opened=len(record.openings),
                         opened_by_this_run=sum(o.output == output for o in record.openings))
