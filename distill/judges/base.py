"""The judge protocol: one persona, k candidates in a shown order -> a distribution over the k.

A judge is built once per actor (one per GPU for a VLM) and then fed *batches* of match views,
because every real teacher (vLLM, an API, the text oracle) is far cheaper per item in batches.
A judge never parses free text and never picks a winner: it returns scores, and the tournament
engine decides (argmax or a seeded draw), averages position-permuted views, and records calls.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields

import numpy as np


@dataclass(frozen=True)
class Candidate:
    """What a judge may look at for one product. ``image`` is encoded bytes (PNG/JPEG/WebP)."""

    item_id: str
    title: str | None = None
    image: bytes | None = None


# the catalog columns a judge may name in ``payload_columns``: what a Candidate carries besides its id
CANDIDATE_FIELDS = frozenset(f.name for f in fields(Candidate)) - {"item_id"}


@dataclass(frozen=True)
class MatchView:
    """One teacher call: a persona and candidates *in the order shown*.

    ``seed`` is derived from the match and view, so any sampling inside the judge (noise,
    vLLM's sampling seed) is reproducible wherever the view is judged.
    """

    persona_text: str
    candidates: tuple[Candidate, ...]
    seed: int

    @property
    def k(self) -> int:
        return len(self.candidates)


@dataclass
class Judgement:
    """The judge's answer to one view: ``scores`` (k probabilities, shown order) or an ``error``."""

    scores: np.ndarray | None
    error: str | None = None
    extras: dict[str, float] = field(default_factory=dict)

    @staticmethod
    def failed(reason: str) -> "Judgement":
        return Judgement(scores=None, error=reason)


class Judge(ABC):
    """Scores batches of match views. Subclasses set the class attributes below.

    ``payload_columns`` names the catalog columns the judge needs (``title`` for the text
    oracle, ``image`` for a VLM; any of CANDIDATE_FIELDS); the engine ships only those to the
    judge actors.
    """

    payload_columns: tuple[str, ...] = ()

    @property
    @abstractmethod
    def judge_id(self) -> str:
        """Identifies the judge *and* its settings: judgements are reused only under the same id."""

    @property
    @abstractmethod
    def prompt_version(self) -> str:
        """Version of the prompt/scoring recipe recorded with every match."""

    @abstractmethod
    def judge(self, views: list[MatchView]) -> list[Judgement]:
        """One judgement per view, same order. Must not raise for one bad view: return
        ``Judgement.failed(reason)`` for it so the rest of the batch stands."""


def softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Numerically stable softmax with a temperature (> 0)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max()
    p = np.exp(z)
    return (p / p.sum()).astype(np.float32)


def position_bias_logits(k: int, strength: float) -> np.ndarray:
    """A VLM-like preference for earlier positions: +strength for the first shown candidate,
    falling linearly to 0 for the last (added to utilities before the softmax)."""
    if k <= 1 or strength == 0.0:
        return np.zeros(k, dtype=np.float64)
    return strength * (1.0 - np.arange(k, dtype=np.float64) / (k - 1))
