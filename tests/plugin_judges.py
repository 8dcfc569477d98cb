"""Judges used by tests through the `plugin` judge kind (imported inside Ray actors)."""

from __future__ import annotations

import os
import time

from distill.judges.base import Judge, Judgement, MatchView
from distill.judges.random_judge import RandomJudge
from distill.judges.text_oracle import TextOracleJudge


class _Wrapped(Judge):
    """Delegates identity to ``self.inner``; subclasses change only how ``judge`` behaves."""

    inner: Judge

    @property
    def judge_id(self) -> str:
        return f"{type(self).__name__}/{self.inner.judge_id}"

    @property
    def prompt_version(self) -> str:
        return self.inner.prompt_version


class CrashOnceJudge(_Wrapped):
    """The random judge, except that the first actor to see ``marker`` deletes it and dies hard,
    as a GPU worker lost mid-round would."""

    payload_columns = ()

    def __init__(self, marker: str):
        self.marker = marker
        self.inner = RandomJudge()

    def judge(self, views: list[MatchView]) -> list[Judgement]:
        try:
            os.remove(self.marker)
        except FileNotFoundError:
            return self.inner.judge(views)
        os._exit(1)


class SlowJudge(_Wrapped):
    """The text oracle, slowed down so a test can kill a job mid-round."""

    payload_columns = ("title",)

    def __init__(self, seconds_per_batch: float = 1.0, temperature: float = 0.02):
        self.delay = seconds_per_batch
        self.inner = TextOracleJudge(temperature=temperature)

    def judge(self, views: list[MatchView]) -> list[Judgement]:
        time.sleep(self.delay)
        return self.inner.judge(views)


class PriceJudge(_Wrapped):
    """Asks for a catalog column a Candidate does not carry: the worker must refuse it up front."""

    payload_columns = ("title", "price")

    def __init__(self):
        self.inner = RandomJudge()

    def judge(self, views: list[MatchView]) -> list[Judgement]:
        return self.inner.judge(views)


def image_key(image: bytes) -> float:
    """A stable number per image: ``ImageBytesJudge`` prefers the image with the largest key."""
    import hashlib

    return int.from_bytes(hashlib.blake2b(image, digest_size=4).digest(), "little") / 2 ** 32


class ImageBytesJudge(Judge):
    """Reads every candidate's image bytes (as a VLM would) and prefers the largest ``image_key``,
    so a test knows each knockout's true winner from the catalog alone. Fails a view whose
    candidate arrived without its image."""

    payload_columns = ("image",)

    @property
    def judge_id(self) -> str:
        return "image-bytes"

    @property
    def prompt_version(self) -> str:
        return "none"

    def judge(self, views: list[MatchView]) -> list[Judgement]:
        import numpy as np

        from distill.judges.base import softmax

        out = []
        for v in views:
            if any(c.image is None for c in v.candidates):
                out.append(Judgement.failed("no image bytes"))
                continue
            out.append(Judgement(scores=softmax(np.array([image_key(c.image) for c in v.candidates]), 0.001)))
        return out


class FailsOnItemJudge(_Wrapped):
    """The random judge, except that every view showing ``item_id`` fails (as a VLM fails a match
    whose product photo will not decode), and scored views carry a label mass in their extras."""

    payload_columns = ()

    def __init__(self, item_id: str, label_mass: float = 0.75):
        self.item_id = item_id
        self.label_mass = label_mass
        self.inner = RandomJudge()

    def judge(self, views: list[MatchView]) -> list[Judgement]:
        out = []
        for v, j in zip(views, self.inner.judge(views)):
            if any(c.item_id == self.item_id for c in v.candidates):
                out.append(Judgement.failed(f"candidate {self.item_id}: unreadable image"))
            else:
                out.append(Judgement(scores=j.scores, extras={"label_mass": self.label_mass}))
        return out
