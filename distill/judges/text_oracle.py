"""The demo teacher: a pretrained sentence encoder reads persona and product *titles*.

This is the paper's "caption + text embedding" judge used as a teacher. It sees privileged
information (titles) that the student never sees (pixels only), and with no bias and no
noise its preferences are exactly the demo world's hidden utility, so label quality can be
measured against the truth. Bias and noise emulate a VLM judge's flaws on purpose.
"""

from __future__ import annotations

import numpy as np

from distill.judges.base import Judge, Judgement, MatchView, position_bias_logits, softmax
from distill.schemas import PERSONA_MAX_CHARS
from distill.text_encoder import shared_encoder


class TextOracleJudge(Judge):
    payload_columns = ("title",)

    def __init__(self, temperature: float, position_bias: float = 0.0, noise_std: float = 0.0,
                 model_path: str | None = None):
        if temperature <= 0:
            raise ValueError("temperature must be > 0")
        self.temperature = temperature
        self.position_bias = position_bias
        self.noise_std = noise_std
        self.encoder = shared_encoder(model_path)

    @property
    def judge_id(self) -> str:
        return (f"text_oracle/all-MiniLM-L6-v2/T={self.temperature:g}/bias={self.position_bias:g}"
                f"/noise={self.noise_std:g}")

    @property
    def prompt_version(self) -> str:
        return "title-cosine-v1"

    def judge(self, views: list[MatchView]) -> list[Judgement]:
        personas = [v.persona_text for v in views]
        titles: list[str] = []
        for v in views:
            for c in v.candidates:
                titles.append(c.title or "")
        p_emb = self.encoder.encode(personas)
        t_emb = self.encoder.encode(titles)
        out: list[Judgement] = []
        start = 0
        for i, v in enumerate(views):
            if len(v.persona_text) > PERSONA_MAX_CHARS:
                out.append(Judgement.failed(f"persona text has {len(v.persona_text)} characters; "
                                            f"the limit is {PERSONA_MAX_CHARS}"))
                start += v.k
                continue
            if any(not c.title for c in v.candidates):
                out.append(Judgement.failed("candidate without a title"))
                start += v.k
                continue
            utility = t_emb[start:start + v.k] @ p_emb[i]
            start += v.k
            logits = utility.astype(np.float64) + position_bias_logits(v.k, self.position_bias)
            if self.noise_std > 0:
                logits = logits + np.random.default_rng(v.seed).normal(0.0, self.noise_std, v.k)
            out.append(Judgement(scores=softmax(logits, self.temperature)))
        return out
