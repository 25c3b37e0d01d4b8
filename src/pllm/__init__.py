"""pllm: personalized large language models.

Input-level (retrieval, profile and soft prompting), model-level (per-user adapters) and
objective-level (personalized alignment) personalization, with LaMP-style evaluation and serving.
"""

__version__ = "0.1.0"
