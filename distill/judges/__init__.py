"""Teachers that score k-way matches: the protocol, the demo's text oracle, and their configs."""

from distill.judges.base import Candidate, Judge, Judgement, MatchView
from distill.judges.config import JudgeConfig, PluginJudgeConfig, RandomJudgeConfig, TextOracleConfig
from distill.judges.api import APIJudgeConfig
from distill.judges.vlm import VLMJudgeConfig

__all__ = ["Candidate", "Judge", "Judgement", "MatchView", "JudgeConfig", "TextOracleConfig",
           "RandomJudgeConfig", "PluginJudgeConfig", "VLMJudgeConfig", "APIJudgeConfig"]
