"""The committed-round store: where a tournament run's judgements live, crash-safe.

Layout under the run's output URI::

    state.json                         RunState; rewritten last on every commit
    staging/round-0003/<attempt>-<n>.parquet   judged matches as they arrive (paid for, not committed)
    rounds/round-0003.parquet          all matches of a committed round (MATCH_SCHEMA)
    rounds/survivors-0003.parquet      who goes on to round 4
    tournaments.parquet, eliminations.parquet, summary.json   written when every tournament is done

Two guarantees follow: a round is visible only once ``state.json`` lists it (atomic on any
filesystem), and a match judged before a crash is read back from staging on rerun instead of
being paid for again.
"""

from __future__ import annotations

import datetime as dt
import itertools

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field

from distill import storage
from distill.errors import UserError
from distill.schemas import MATCH_SCHEMA

SURVIVOR_SCHEMA = pa.schema([
    pa.field("tournament_id", pa.string(), nullable=False),
    pa.field("item_id", pa.string(), nullable=False),
])


class RunState(BaseModel):
    """What has been committed. ``fingerprint`` ties the output to the settings that made it."""

    fingerprint: str
    settings: dict = Field(default_factory=dict)
    committed_rounds: int = 0
    finished: bool = False
    updated_at: str = ""


class FingerprintMismatch(UserError, RuntimeError):
    """The output holds a run with other settings: a user error (exit 2), not a bug."""


class RoundStore:
    def __init__(self, root: str):
        self.root = root
        self._seq = itertools.count()

    # paths -----------------------------------------------------------------
    def _state_path(self) -> str:
        return storage.join(self.root, "state.json")

    def _staging_dir(self, r: int) -> str:
        return storage.join(self.root, "staging", f"round-{r:04d}")

    def _round_path(self, r: int) -> str:
        return storage.join(self.root, "rounds", f"round-{r:04d}.parquet")

    def _survivors_path(self, r: int) -> str:
        return storage.join(self.root, "rounds", f"survivors-{r:04d}.parquet")

    def path(self, name: str) -> str:
        return storage.join(self.root, name)

    # state -----------------------------------------------------------------
    def load_state(self) -> RunState | None:
        if not storage.exists(self._state_path()):
            return None
        return RunState.model_validate(storage.read_json(self._state_path()))

    def save_state(self, state: RunState) -> None:
        state.updated_at = dt.datetime.now(dt.timezone.utc).isoformat()
        storage.write_json_atomic(state.model_dump(), self._state_path())

    def open(self, fingerprint: str, settings: dict, overwrite: bool = False) -> RunState:
        """Resume the run at ``root`` or start one; refuse to mix runs with different settings."""
        state = self.load_state()
        if state is not None and state.fingerprint != fingerprint:
            if not overwrite:
                changed = sorted(k for k in set(settings) | set(state.settings)
                                 if settings.get(k) != state.settings.get(k))
                raise FingerprintMismatch(
                    f"{self.root!r} holds a tournament run with other settings (differs in: "
                    f"{', '.join(changed) or 'inputs'}). Use another output URI or overwrite=true.")
            storage.delete(self.root)
            state = None
        if state is None:
            state = RunState(fingerprint=fingerprint, settings=settings)
            self.save_state(state)
        return state

    # staging ---------------------------------------------------------------
    def stage(self, r: int, matches: pa.Table, attempt_id: str) -> None:
        name = f"{attempt_id}-{next(self._seq):06d}.parquet"
        storage.write_table_atomic(matches, storage.join(self._staging_dir(r), name), MATCH_SCHEMA)

    def _read_staging(self, r: int, columns: list[str] | None = None) -> pa.Table:
        files = storage.list_files(self._staging_dir(r), ".parquet")
        if not files:
            empty = MATCH_SCHEMA.empty_table()
            return empty.select(columns) if columns else empty
        return pa.concat_tables([storage.read_table(f, columns=columns, schema=MATCH_SCHEMA) for f in files])

    def staged(self, r: int) -> pa.Table:
        """Matches judged in round ``r`` but not yet committed, one row per match_key."""
        return first_per_key(self._read_staging(r))

    def staged_keys(self, r: int) -> set[str]:
        """The match keys already judged in round ``r``: what a resumed round skips.

        Reads the key column only; the whole rows are read once, at commit (``staged``).
        """
        return set(self._read_staging(r, ["match_key"])["match_key"].to_pylist())

    # commits ---------------------------------------------------------------
    def commit_round(self, state: RunState, r: int, matches: pa.Table, survivors: pa.Table) -> None:
        if r != state.committed_rounds:
            raise RuntimeError(f"committing round {r} but {state.committed_rounds} rounds are committed")
        storage.write_table_atomic(matches, self._round_path(r), MATCH_SCHEMA)
        storage.write_table_atomic(survivors, self._survivors_path(r), SURVIVOR_SCHEMA)
        state.committed_rounds = r + 1
        self.save_state(state)  # the commit point
        storage.delete(self._staging_dir(r))

    def survivors(self, r: int) -> pa.Table:
        return storage.read_table(self._survivors_path(r), schema=SURVIVOR_SCHEMA)

    def matches(self, state: RunState) -> pa.Table:
        """Every committed match, in round order."""
        tables = [storage.read_table(self._round_path(r), schema=MATCH_SCHEMA)
                  for r in range(state.committed_rounds)]
        return pa.concat_tables(tables) if tables else MATCH_SCHEMA.empty_table()


def first_per_key(table: pa.Table, key: str = "match_key") -> pa.Table:
    """Keep the first row of each key (a retried batch may have been staged twice)."""
    if table.num_rows == 0:
        return table
    idx = pa.array(range(table.num_rows))
    firsts = (pa.table({key: table[key], "_i": idx}).group_by(key, use_threads=False)
              .aggregate([("_i", "min")]))["_i_min"]
    return table.take(pc.sort_indices(firsts))
