"""Dataset builders (public raw data -> LaMP-format task folders) and downloads of that raw data."""

from pllm.data.base import BUILDERS, DOWNLOADS, BuildConfig, BuildResult, DatasetBuilder, build_dataset

__all__ = ["BUILDERS", "DOWNLOADS", "BuildConfig", "BuildResult", "DatasetBuilder", "build_dataset"]

# Built-in builders register on import.
from pllm.data import movielens as _movielens  # noqa: E402,F401
from pllm.data import movielens_genre as _movielens_genre  # noqa: E402,F401
from pllm.data import persona_chat as _persona_chat  # noqa: E402,F401
from pllm.data import persona_memory as _persona_memory  # noqa: E402,F401
