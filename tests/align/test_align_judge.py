"""The style judge: nearest centroid over embeddings, fitted on train-query answers, checked on held-out ones."""

from __future__ import annotations

import json

import pytest
from align_helpers import DSP_PATH, STYLES, dsp_file_fixture, one_thread  # noqa: F401  (fixtures)

from pllm.align.importers import read_dsp
from pllm.align.judge import StyleJudge, dsp_answers, first_words, fit_dsp_judge
from pllm.errors import ArtifactError, InputError


def test_judge_fits_predicts_and_roundtrips(bow_embedder, dsp_file, tmp_path) -> None:
    queries = read_dsp(dsp_file)
    judge, acc = fit_dsp_judge(queries, embedder=bow_embedder, test_fraction=0.3)
    assert judge.labels == sorted(STYLES)
    train_ids = {t for t in dsp_answers(queries, "train", test_fraction=0.3)[0]}
    test_texts, test_labels = dsp_answers(queries, "test", test_fraction=0.3)
    assert test_texts and not train_ids & set(test_texts)
    assert acc.n == len(test_texts) and acc.accuracy == 1.0  # the styles use disjoint words
    assert sum(map(sum, acc.confusion)) == acc.n
    assert judge.predict(["I love this movie , great fun"]) == ["entertainment"]
    judge.save(tmp_path / "judge")
    again = StyleJudge.load(tmp_path / "judge")
    assert again.labels == judge.labels and again.predict(test_texts) == judge.predict(test_texts)
    with pytest.raises(ArtifactError):
        StyleJudge.load(tmp_path / "missing")
    with pytest.raises(InputError):
        StyleJudge.fit(["a"], [], embedder=bow_embedder)
    assert first_words("a b c d", 2) == "a b" and json.loads((tmp_path / "judge" / "judge.json").read_text())


@pytest.mark.slow
def test_minilm_judge_on_held_out_dsp_answers() -> None:
    """Real check: all-MiniLM-L6-v2 centroids from train-query answers (first 24 words, the report's
    setting), accuracy on the held-out queries' answers: 5 styles, chance 0.2; 0.374 was measured."""
    if not DSP_PATH.is_file():
        pytest.skip(f"shared data not available: {DSP_PATH}")
    judge, acc = fit_dsp_judge(read_dsp(DSP_PATH), max_words=24)
    print(f"held-out style accuracy {acc.accuracy:.3f} on {acc.n} answers: {acc.per_label}")
    assert acc.n > 500
    assert acc.accuracy > 0.3
