"""Recommendation as a personalization application: the `movielens-rec` candidate-ranking task,
classic and LLM rankers behind one registry, ranking metrics with bootstrap intervals, and reports."""

from pllm.rec.data import (
    REC_SPEC,
    MovieLensRecBuilder,
    RecBuildConfig,
    check_rec_question,
    ensure_task,
    rec_crowd,
    target_index,
)
from pllm.rec.hybrid import RecordedRanker, StackConfig, StackedRanker, Stacker, fit_stacker
from pllm.rec.metrics import bootstrap_ranking, mrr, ndcg_at_k, rank_of_target, recall_at_k
from pllm.rec.rankers import (
    RANKERS,
    FinetunedPointwiseRanker,
    Interactions,
    ListwiseConfig,
    ListwiseRanker,
    PointwiseConfig,
    PointwiseRanker,
    Ranker,
    make_ranker,
    train_pointwise_adapter,
    training_interactions,
)
from pllm.rec.runner import RankerResult, run_ranker, summarize, write_report

__all__ = [
    "FinetunedPointwiseRanker", "Interactions", "ListwiseConfig", "ListwiseRanker", "MovieLensRecBuilder",
    "PointwiseConfig", "PointwiseRanker", "RANKERS", "REC_SPEC", "Ranker", "RankerResult", "RecBuildConfig",
    "RecordedRanker", "StackConfig", "StackedRanker", "Stacker", "bootstrap_ranking", "check_rec_question",
    "ensure_task", "fit_stacker", "make_ranker", "mrr", "ndcg_at_k", "rank_of_target", "rec_crowd", "recall_at_k",
    "run_ranker", "summarize", "target_index", "train_pointwise_adapter", "training_interactions", "write_report",
]
