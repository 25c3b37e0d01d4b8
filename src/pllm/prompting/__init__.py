"""Input-level personalization: prompt styles, token budgets, profile summaries."""

from pllm.prompting.profile import ProfileSummarizer, SummaryConfig
from pllm.prompting.styles import PROMPT_STYLES, BuiltPrompt, PromptBuilder, PromptStyle, default_style, get_style

__all__ = ["PROMPT_STYLES", "BuiltPrompt", "PromptBuilder", "PromptStyle", "ProfileSummarizer", "SummaryConfig",
           "default_style", "get_style"]
