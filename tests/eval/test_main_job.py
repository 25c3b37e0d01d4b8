from __future__ import annotations

import json

import pytest

from pllm.eval.main_job import MainJobConfig, main_methods, run_main_job
from pllm_testkit import SHARED_DATA


def test_main_methods_cover_the_comparison():
    names = [name for name, _ in main_methods(MainJobConfig())]
    assert names == ["none", "bm25@4", "dense@4", "profile", "ft+stats+crowd/median"]  # the learned cell by default
    assert [name for name, _ in main_methods(MainJobConfig(learned=[]))] == names[:4]
    learned = main_methods(MainJobConfig(learned=["ft+stats+crowd/median"]))[-1]
    assert learned[0] == "ft+stats+crowd/median" and learned[1].ft and learned[1].crowd
    private = main_methods(MainJobConfig(learned=["ft+user+stats+crowd/median"]))[-1]  # `pllm run --learned`
    assert private[0] == "ft+user+stats+crowd/median" and private[1].ft_user and private[1].stats


def test_main_job_learned_option_takes_only_learned_methods():
    from pllm.errors import InputError

    with pytest.raises(InputError, match="takes a learned method"):
        MainJobConfig(learned=["bm25@4"])
    with pytest.raises(InputError, match="ft_pairs"):
        MainJobConfig(ft_pairs=0)


@pytest.mark.slow
def test_main_job_end_to_end_on_real_data(tmp_path):
    """The real pipeline: MovieLens build, embedded SmolLM2, minilm, every method and baseline (8 questions)."""
    if not (SHARED_DATA / "movielens-100k" / "ml-100k.inter").is_file():
        pytest.skip(f"real MovieLens-100k not present at {SHARED_DATA} (../shared/data is optional)")
    config = MainJobConfig(data=str(SHARED_DATA / "movielens-100k"), out=str(tmp_path / "run"), limit=8, styles=False,
                           learned=[])  # the learned cell's training: tests/eval/test_one_engine.py, tiny model
    job = run_main_job(config)
    rows, out = job.rows, job.folder
    by_name = {r.method: r for r in rows}
    assert set(by_name) == {"none", "bm25@4", "dense@4", "profile", "global-mean", "user-mean", "user-median", "bias",
                            "knn"}
    for row in rows:
        assert row.n == 8 and 0.0 <= row.metrics["mae"].value <= 4.0
        assert row.metrics["mae"].low <= row.metrics["mae"].value <= row.metrics["mae"].high
    assert by_name["bm25@4"].mean_prompt_tokens > by_name["none"].mean_prompt_tokens
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "movielens-rating" and len(report["methods"]) == 9
    md = (out / "report.md").read_text()
    assert "| bm25@4 " in md and "best llm method:" in md.lower() and "mae_by_method.png" in md
    saved = json.loads((out / "main_job_config.json").read_text())
    assert saved["data"] == str((SHARED_DATA / "movielens-100k").resolve())
