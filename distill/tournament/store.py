"""The committed-round store: where a tournament run's inputs, judgements and survivors live, crash-safe.

The run is split into *blocks* of tournaments (personas), fixed when the run starts; every
round, one Ray task per block plans, judges, stages and finishes that block (``blocks.py``), so
nothing grows in the driver with personas x candidates. Layout under the run's output URI::

    state.json                                   RunState; rewritten last on every commit
    inputs/block-00012.parquet                   the block's tournaments (BLOCK_SCHEMA: candidates in ``alive``)
    payload/...                                  the candidates' judge columns, read by id (``payload.py``)
    staging/round-0003/block-00012/<attempt>-<uuid>.parquet   judged matches as they arrive (paid for, not committed)
    rounds/round-0003-00012.parquet              all matches of block 12 in round 3 (MATCH_SCHEMA)
    rounds/survivors-0003-00012.parquet          who in block 12 goes on to round 4 (BLOCK_SCHEMA)
    tournaments.parquet, eliminations/, summary.json   written when every tournament is done

Two guarantees follow: a round is visible only once ``state.json`` lists it (atomic on any
filesystem; a block's round files written before a crash are simply rewritten, identically, from
staging), and a match judged before a crash is read back from staging on rerun instead of being
paid for again.
"""

from __future__ import annotations

import datetime as dt
import uuid

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field

from distill import storage
from distill.errors import UserError
from distill.schemas import MATCH_SCHEMA

# One row per tournament: its persona and the candidates still alive (all of them in inputs/).
BLOCK_SCHEMA = pa.schema([
    pa.field("tournament_id", pa.string(), nullable=False),
    pa.field("persona_id", pa.string(), nullable=False),
    pa.field("persona_text", pa.string(), nullable=False),
    pa.field("alive", pa.list_(pa.string()), nullable=False),
])


class RunState(BaseModel):
    """What has been committed. ``fingerprint`` ties the output to the settings that made it."""

    fingerprint: str
    settings: dict = Field(default_factory=dict)
    n_blocks: int = Field(0, description="Blocks of tournaments under inputs/ (0 = inputs not written yet).")
    committed_rounds: int = 0
    open_tournaments: int | None = Field(None, description="Tournaments with > 1 candidate left after the last commit.")
    entering: int | None = Field(None, description="Candidates alive in open tournaments (sizes the next round's pool).")
    finished: bool = False
    updated_at: str = ""


class FingerprintMismatch(UserError, RuntimeError):
    """The output holds a run with other settings: a user error (exit 2), not a bug."""


class RoundStore:
    """Paths and atomic reads/writes of one run; picklable, so block tasks use it too."""

    def __init__(self, root: str):
        self.root = root

    # paths -----------------------------------------------------------------
    def _state_path(self) -> str:
        return storage.join(self.root, "state.json")

    def path(self, *names: str) -> str:
        return storage.join(self.root, *names)

    def input_path(self, b: int) -> str:
        return self.path("inputs", f"block-{b:05d}.parquet")

    def staging_dir(self, r: int, b: int | None = None) -> str:
        d = self.path("staging", f"round-{r:04d}")
        return d if b is None else storage.join(d, f"block-{b:05d}")

    def round_path(self, r: int, b: int) -> str:
        return self.path("rounds", f"round-{r:04d}-{b:05d}.parquet")

    def survivors_path(self, r: int, b: int) -> str:
        return self.path("rounds", f"survivors-{r:04d}-{b:05d}.parquet")

    def eliminations_dir(self) -> str:
        return self.path("eliminations")

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

    # inputs and survivors ----------------------------------------------------
    def write_input(self, b: int, table: pa.Table) -> None:
        storage.write_table_atomic(table, self.input_path(b), BLOCK_SCHEMA)

    def alive(self, r: int, b: int) -> pa.Table:
        """Block ``b``'s tournaments entering round ``r`` (the inputs for round 0)."""
        uri = self.input_path(b) if r == 0 else self.survivors_path(r - 1, b)
        return storage.read_table(uri, schema=BLOCK_SCHEMA)

    # staging ---------------------------------------------------------------
    def stage(self, r: int, b: int, matches: pa.Table, attempt_id: str) -> None:
        name = f"{attempt_id}-{uuid.uuid4().hex[:12]}.parquet"
        storage.write_table_atomic(matches, storage.join(self.staging_dir(r, b), name), MATCH_SCHEMA)

    def _read_staging(self, r: int, b: int, columns: list[str] | None = None) -> pa.Table:
        files = storage.list_files(self.staging_dir(r, b), ".parquet")
        if not files:
            empty = MATCH_SCHEMA.empty_table()
            return empty.select(columns) if columns else empty
        return pa.concat_tables([storage.read_table(f, columns=columns, schema=MATCH_SCHEMA) for f in files])

    def staged(self, r: int, b: int) -> pa.Table:
        """Matches of block ``b`` judged in round ``r`` but not yet committed, one row per match_key."""
        return first_per_key(self._read_staging(r, b))

    def staged_keys(self, r: int, b: int) -> pa.Array:
        """The match keys already judged in round ``r`` of block ``b``: what a resumed round skips."""
        return self._read_staging(r, b, ["match_key"])["match_key"].combine_chunks()

    # block results (written by block tasks, visible once the round commits) ---------------
    def write_round(self, r: int, b: int, matches: pa.Table, survivors: pa.Table) -> None:
        storage.write_table_atomic(matches, self.round_path(r, b), MATCH_SCHEMA)
        storage.write_table_atomic(survivors, self.survivors_path(r, b), BLOCK_SCHEMA)

    def commit_round(self, state: RunState, r: int, open_tournaments: int, entering: int) -> None:
        """Every block wrote round ``r``: make it visible (``state.json`` is the commit point)."""
        if r != state.committed_rounds:
            raise RuntimeError(f"committing round {r} but {state.committed_rounds} rounds are committed")
        state.committed_rounds = r + 1
        state.open_tournaments, state.entering = open_tournaments, entering
        self.save_state(state)
        storage.delete(self.staging_dir(r))

    def block_matches(self, state: RunState, b: int) -> pa.Table:
        tables = [storage.read_table(self.round_path(r, b), schema=MATCH_SCHEMA)
                  for r in range(state.committed_rounds)]
        return pa.concat_tables(tables) if tables else MATCH_SCHEMA.empty_table()

    def final_survivors(self, state: RunState, b: int) -> pa.Table:
        return self.alive(state.committed_rounds, b)

    def matches(self, state: RunState) -> pa.Table:
        """Every committed match, in round order then block order (reads them all: small runs only)."""
        tables = [storage.read_table(self.round_path(r, b), schema=MATCH_SCHEMA)
                  for r in range(state.committed_rounds) for b in range(state.n_blocks)]
        return pa.concat_tables(tables) if tables else MATCH_SCHEMA.empty_table()


def first_per_key(table: pa.Table, key: str = "match_key") -> pa.Table:
    """Keep the first row of each key (a retried batch may have been staged twice)."""
    if table.num_rows == 0:
        return table
    idx = pa.array(range(table.num_rows))
    firsts = (pa.table({key: table[key], "_i": idx}).group_by(key, use_threads=False)
              .aggregate([("_i", "min")]))["_i_min"]
    return table.take(pc.sort_indices(firsts))
