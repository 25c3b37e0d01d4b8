"""Personalized LLM-as-judge: pairwise, profile-aware, both orders asked, ties reported."""

from pllm.judge.judge import (
           Judge,
           JudgeConfig,
           JudgeSummary,
           Verdict,
           Vote,
           aggregate,
           parse_choice,
           summarize_verdicts,
)
from pllm.judge.metric import RECORD_METRICS, JudgeMetric

__all__ = ["RECORD_METRICS", "Judge", "JudgeConfig", "JudgeMetric", "JudgeSummary", "Verdict", "Vote", "aggregate",
           "parse_choice", "summarize_verdicts"]
