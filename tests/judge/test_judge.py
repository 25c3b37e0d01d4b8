import pytest

from pllm.errors import InputError
from pllm.judge import RECORD_METRICS, Judge, JudgeConfig, Vote, aggregate, parse_choice, summarize_verdicts
from pllm.judge.agreement import known_truth_pairs
from pllm.models import load_generator
from pllm.tasks.spec import get_task
from pllm.types import ProfileItem, Question


def _question(uid: str = "u1") -> Question:
    profile = [ProfileItem(id="p1", fields={"text": "I walk my dogs every morning", "context": "hi"}),
               ProfileItem(id="p2", fields={"text": "I work as a nurse", "context": "job?"})]
    return Question(id=f"q-{uid}", user_id=uid, input="Partner: what do you do on weekends?",
                    query={"context": "what do you do on weekends?"}, profile=profile, target="x")


def test_both_orders_asked_and_swapped(keyword_judge):
    gen = load_generator(keyword_judge)
    judge = Judge(gen, JudgeConfig(retriever="recency", k=2), spec=get_task("persona-chat-reply"))
    v = judge.compare(_question(), "I take my dogs to the park", "I go shopping")
    assert v.winner == "A" and [x.preferred for x in v.votes] == ["A", "A"]
    assert len(gen.prompts) == 2
    first, second = gen.prompts
    assert "Response A: I take my dogs" in first.text and "Response B: I take my dogs" in second.text
    assert "- I walk my dogs every morning" in first.text  # the user's profile is shown
    assert first.question.user_id == "u1"
    v = judge.compare(_question(), "I go shopping", "I take my dogs to the park")
    assert v.winner == "B"


def test_position_bias_becomes_a_tie(keyword_judge):
    # A judge that always prefers slot A votes A then B in original labels: a split, reported as a tie.
    gen = load_generator(keyword_judge, bias=5.0)
    judge = Judge(gen, JudgeConfig(retriever="none"))
    verdicts = judge.compare_many([(_question(), "I take my dogs out", "I go shopping"),
                                   (_question("u2"), "nothing", "also nothing")])
    assert [v.winner for v in verdicts] == ["tie", "tie"]
    s = summarize_verdicts(verdicts)
    assert (s.wins, s.losses, s.ties) == (0, 0, 2)
    assert s.as_dict()["first_position_rate"] == 1.0 and s.score == 0.5


def test_generate_readout_parses_and_counts_unparseable(keyword_judge):
    judge = Judge(load_generator(keyword_judge, scoring=False), JudgeConfig(retriever="none"))
    assert judge.mode == "generate"
    assert judge.compare(_question(), "no", "my dogs").winner == "B"
    garbled = Judge(load_generator(keyword_judge, scoring=False, garble=True), JudgeConfig(retriever="none"))
    v = garbled.compare(_question(), "my dogs", "no")
    assert v.winner == "tie" and v.unparseable == 2
    with pytest.raises(InputError):
        Judge(load_generator(keyword_judge, scoring=False), JudgeConfig(readout="score"))


def test_aggregate_rules():
    assert aggregate([Vote("A", "A"), Vote("B", "A")]) == "A"
    assert aggregate([Vote("A", "B"), Vote("B", "B")]) == "B"
    assert aggregate([Vote("A", "A"), Vote("B", "B")]) == "tie"
    assert aggregate([Vote("A", "A"), Vote("B", None)]) == "tie"
    assert parse_choice("Response B is better") == "B" and parse_choice("neither") is None


def test_judge_metric_for_generation_tasks(keyword_judge):
    metric = RECORD_METRICS.get("judge")(generator=load_generator(keyword_judge),
                                         config=JudgeConfig(retriever="none"))
    qs = [_question("u1"), _question("u2"), _question("u3")]
    score = metric.compute(qs, ["my dogs and I", "nothing", None], ["nothing", "my dogs", "nothing"])
    assert metric.last["wins"] == 1 and metric.last["losses"] == 1 and metric.last["ties"] == 1
    assert score == pytest.approx((1 + 0.5) / 3)
    with pytest.raises(InputError):
        metric.compute(qs, ["a"], ["b"])


def test_known_truth_pairs_use_another_users_output():
    qs = [Question(id=f"q{i}", user_id=f"u{i % 3}", input="c", query={"context": "c"}, target=f"reply {i}")
          for i in range(9)]
    pairs = known_truth_pairs(qs, 5, seed=1)
    assert len(pairs) == 5
    by_target = {q.target: q for q in qs}
    for q, real, other in pairs:
        assert real == q.target and by_target[other].user_id != q.user_id
    assert pairs == known_truth_pairs(qs, 5, seed=1)


def test_tiny_model_scores_letters(tiny_generator):
    judge = Judge(tiny_generator, JudgeConfig(retriever="bm25", k=1), spec=get_task("persona-chat-reply"))
    v = judge.compare(_question(), "good", "bad")
    assert v.winner in ("A", "B", "tie") and len(v.votes) == 2 and all(x.margin is not None for x in v.votes)


def test_judge_retrieves_through_the_pipeline_and_needs_a_spec_to_retrieve(keyword_judge):
    from pllm.pipeline import Personalizer

    spec = get_task("persona-chat-reply")
    judge = Judge(load_generator(keyword_judge), JudgeConfig(retriever="bm25", k=1), spec=spec)
    q = _question()
    assert isinstance(judge.retrieval, Personalizer)
    assert judge.profile(q) == judge.retrieval.retrieve(q) and len(judge.profile(q)) == 1
    with pytest.raises(InputError, match="spec"):
        Judge(load_generator(keyword_judge), JudgeConfig(retriever="bm25", k=1))


def test_known_truth_agreement_resumes_and_records_device(tiny_generator, tmp_path):
    from pllm.judge.agreement import known_truth_agreement
    from pllm_testkit import write_persona_csv

    src = write_persona_csv(tmp_path / "persona" / "test.csv", n=12).parent
    ckpt = tmp_path / "judge.jsonl"
    first = known_truth_agreement(tiny_generator, source=src, n_pairs=4, checkpoint=ckpt)
    lines = ckpt.read_text().splitlines()
    assert first["n"] == len(lines) > 0 and all('"device": "cpu"' in x for x in lines)
    again = known_truth_agreement(tiny_generator, source=src, n_pairs=4, checkpoint=ckpt, score_missing=False)
    assert again["devices"] == first["devices"] == {"cpu": len(lines)}
    assert again["agreement"] == first["agreement"] and len(ckpt.read_text().splitlines()) == len(lines)
