"""One persona length limit (``distill.schemas.PERSONA_MAX_CHARS``) for ingest and every judge.

The endpoint imports the same constant (tested in tests/test_serving.py); here the other users
of it: a persona one character over is refused by ingest and fails its view in each judge, one
exactly at the limit passes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill.ingest import IngestConfig, IngestError, ingest
from distill.judges.base import Candidate, MatchView
from distill.judges.vlm import PromptTemplate, ViewError
from distill.schemas import PERSONA_MAX_CHARS


def _persona_file(tmp_path: Path, n_chars: int) -> Path:
    p = tmp_path / "p.jsonl"
    p.write_text(json.dumps({"persona_id": "long", "text": "x" * n_chars}) + "\n")
    return p


def test_ingest_refuses_a_persona_over_the_shared_limit(tmp_path: Path) -> None:
    ok = IngestConfig(personas_file=str(_persona_file(tmp_path, PERSONA_MAX_CHARS)),
                      output=str(tmp_path / "ok"), progress=False)
    assert sum(ingest(ok).persona_counts.values()) == 1
    bad = IngestConfig(personas_file=str(_persona_file(tmp_path, PERSONA_MAX_CHARS + 1)),
                       output=str(tmp_path / "bad"), progress=False)
    with pytest.raises(IngestError, match=f"line 1: text: String should have at most {PERSONA_MAX_CHARS}"):
        ingest(bad)


def test_prompt_judges_fail_the_view_of_an_over_long_persona() -> None:
    t = PromptTemplate.load("persona_choice_v1")
    assert "x" * PERSONA_MAX_CHARS in t.text_parts("x" * PERSONA_MAX_CHARS, 2)[0]
    with pytest.raises(ViewError, match=f"limit is {PERSONA_MAX_CHARS}"):
        t.text_parts("x" * (PERSONA_MAX_CHARS + 1), 2)


def test_text_oracle_fails_the_view_of_an_over_long_persona() -> None:
    from distill.judges.text_oracle import TextOracleJudge

    judge = TextOracleJudge(temperature=0.05)
    cands = (Candidate("a", title="red mug"), Candidate("b", title="blue cap"))
    ok, bad = judge.judge([MatchView("y" * PERSONA_MAX_CHARS, cands, 1),
                           MatchView("y" * (PERSONA_MAX_CHARS + 1), cands, 2)])
    assert ok.scores is not None and ok.error is None
    assert bad.scores is None and f"limit is {PERSONA_MAX_CHARS}" in (bad.error or "")
