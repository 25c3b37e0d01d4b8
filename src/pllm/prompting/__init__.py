"""Input-level personalization: prompt styles (chat among them), token budgets, profile summaries."""

from pllm.prompting.chat import MEMORY_SPEC, ChatStyle, chat_question
from pllm.prompting.profile import ProfileSummarizer, SummaryConfig
from pllm.prompting.styles import PROMPT_STYLES, BuiltPrompt, PromptBuilder, PromptStyle, default_style, get_style

__all__ = ["MEMORY_SPEC", "PROMPT_STYLES", "BuiltPrompt", "ChatStyle", "PromptBuilder", "PromptStyle",
           "ProfileSummarizer", "SummaryConfig", "chat_question", "default_style", "get_style"]
