"""The style judge: a registered classifier fitted on train-query answers, checked on held-out ones."""

from __future__ import annotations

import json

import pytest
from align_helpers import DSP_PATH, STYLES, dsp_file_fixture, one_thread  # noqa: F401  (fixtures)

from pllm.align.importers import read_dsp
from pllm.align.judge import STYLE_CLASSIFIERS, StyleJudge, dsp_answers, first_words, fit_dsp_judge
from pllm.errors import ArtifactError, InputError, UnknownNameError


def test_judge_fits_predicts_and_roundtrips(bow_embedder, dsp_file, tmp_path) -> None:
    queries = read_dsp(dsp_file)
    judge, acc = fit_dsp_judge(queries, kind="centroid", embedder=bow_embedder, test_fraction=0.3)
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


@pytest.mark.parametrize("kind", STYLE_CLASSIFIERS.names())
def test_every_kind_fits_scores_and_roundtrips(kind, bow_embedder, dsp_file, tmp_path) -> None:
    queries = read_dsp(dsp_file)
    judge, acc = fit_dsp_judge(queries, kind=kind, embedder=bow_embedder, test_fraction=0.3)
    test_texts, _ = dsp_answers(queries, "test", test_fraction=0.3)
    assert judge.kind == kind and acc.accuracy > 0.6 and not judge.selection
    scores = judge.scores(test_texts)
    assert scores.shape == (len(test_texts), len(judge.labels))
    again = StyleJudge.load(judge.save(tmp_path / kind))
    assert again.kind == kind and again.predict(test_texts) == judge.predict(test_texts)
    assert again.with_max_words(2).max_words == 2 and judge.scores([]).shape == (0, len(judge.labels))


def test_auto_picks_the_kind_by_cross_validation_on_train_queries(bow_embedder, dsp_file, tmp_path) -> None:
    judge, acc = fit_dsp_judge(read_dsp(dsp_file), kind="auto", embedder=bow_embedder, test_fraction=0.3)
    assert set(judge.selection) == set(STYLE_CLASSIFIERS.names())
    assert judge.selection[judge.kind] == max(judge.selection.values())
    assert StyleJudge.load(judge.save(tmp_path / "auto")).selection == judge.selection
    with pytest.raises(UnknownNameError):
        fit_dsp_judge(read_dsp(dsp_file), kind="nope", embedder=bow_embedder)


@pytest.mark.slow
def test_trained_judge_on_held_out_dsp_answers() -> None:
    """Real check, the report's setting (first 24 words): the classifier chosen by cross-validation on
    train queries, accuracy on the held-out queries' answers. 5 styles, chance 0.2; the centroid judge
    measured 0.374 and TF-IDF logistic regression 0.508."""
    if not DSP_PATH.is_file():
        pytest.skip(f"shared data not available: {DSP_PATH}")
    judge, acc = fit_dsp_judge(read_dsp(DSP_PATH), kind="tfidf-lr", max_words=24)
    print(f"held-out style accuracy {acc.accuracy:.3f} on {acc.n} answers: {acc.per_label}")
    assert acc.n > 500
    assert acc.accuracy > 0.45
