"""Recommendation as a personalization application: the `movielens-rec` candidate-ranking task,
classic and LLM rankers behind one registry, ranking metrics with bootstrap intervals, and reports."""

from pllm.rec.data import REC_SPEC, MovieLensRecBuilder, RecBuildConfig, check_rec_question, ensure_task, target_index
from pllm.rec.metrics import bootstrap_ranking, mrr, ndcg_at_k, rank_of_target, recall_at_k
from pllm.rec.rankers import (
    RANKERS,
    Interactions,
    ListwiseConfig,
    ListwiseRanker,
    PointwiseConfig,
    PointwiseRanker,
    Ranker,
    make_ranker,
    training_interactions,
)
from pllm.rec.runner import RankerResult, run_ranker, summarize, write_report

__all__ = [
    "RANKERS", "REC_SPEC", "Interactions", "ListwiseConfig", "ListwiseRanker", "MovieLensRecBuilder",
    "PointwiseConfig", "PointwiseRanker", "RankerResult", "Ranker", "RecBuildConfig", "bootstrap_ranking",
    "check_rec_question", "ensure_task", "make_ranker", "mrr", "ndcg_at_k", "rank_of_target", "recall_at_k",
    "run_ranker", "summarize", "target_index", "training_interactions", "write_report",
]
