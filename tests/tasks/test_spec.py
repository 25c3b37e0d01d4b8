from __future__ import annotations

import json

import pytest

from pllm.errors import InputError, UnknownNameError
from pllm.tasks.lamp import read_outputs, read_questions, write_outputs
from pllm.tasks.spec import get_task, load_task_spec, task_names

LAMP_INPUTS = {
    "LaMP-1": ('For an author who has written the paper with the title "Deep nets", which reference is related? '
               'Just answer with [1] or [2] without explanation. [1]: "Conv nets" [2]: "Cooking rice"',
               {"title": "Deep nets", "ref1": "Conv nets", "ref2": "Cooking rice"}),
    "LaMP-2": ("Which tag does this movie relate to among the following tags? Just answer with the tag name "
               "without further explanation. tags: [sci-fi, comedy] description: A robot falls in love.",
               {"description": "A robot falls in love."}),
    "LaMP-3": ("What is the score of the following review on a scale of 1 to 5? just answer with 1, 2, 3, 4, or 5 "
               "without further explanation. review: Works fine.\nSecond line.", {"text": "Works fine.\nSecond line."}),
    "LaMP-4": ("Generate a headline for the following article: Stocks rose today.", {"text": "Stocks rose today."}),
    "LaMP-5": ("Generate a title for the following abstract of a paper: We study X.", {"abstract": "We study X."}),
    "LaMP-6": ("Generate a subject for the following email: Meeting moved to 3pm.", {"text": "Meeting moved to 3pm."}),
    "LaMP-7": ("Paraphrase the following tweet without any explanation before or after it: so happy today",
               {"text": "so happy today"}),
}


def test_all_lamp_tasks_registered():
    names = task_names()
    for i in range(1, 8):
        assert f"LaMP-{i}" in names
    assert "movielens-rating" in names
    assert get_task("LaMP-2").labels and len(get_task("LaMP-2").labels) == 15
    assert get_task("LaMP-3").metrics == ["mae", "rmse"]
    assert get_task("LaMP-1").metrics == ["accuracy", "f1"]
    assert get_task("LaMP-4").metrics == ["rouge-1", "rouge-L"]


@pytest.mark.parametrize("task", sorted(LAMP_INPUTS))
def test_query_fields_extracted_from_raw_input(task):
    raw, expected = LAMP_INPUTS[task]
    fields = get_task(task).parse_query(raw)
    for key, value in expected.items():
        assert fields[key] == value
    assert fields["input"] == raw


def test_query_pattern_mismatch_is_clear():
    with pytest.raises(InputError, match="LaMP-3 query pattern"):
        get_task("LaMP-3").parse_query("no review marker here")


def test_read_questions_with_spec_names_record(tmp_path):
    path = tmp_path / "q.json"
    path.write_text(json.dumps([{"id": "1", "input": "bad input", "profile": []}]))
    with pytest.raises(InputError, match=r"q.json: record 0: field 'input'"):
        read_questions(path, spec=get_task("LaMP-3"))


def test_new_task_from_yaml_without_code(tmp_path):
    spec_file = tmp_path / "stance.yaml"
    spec_file.write_text(
        "name: stance\nkind: classification\nlabels: ['Yes', 'No']\nitem_text: '{statement}'\n"
        "query_text: '{statement}'\nitem_output: '{agrees}'\ndemo_input: 'Statement: {statement}'\n"
        "demo_output_prefix: 'Agrees:'\nparser: label\nmetrics: [accuracy, f1]\n")
    spec = get_task(str(spec_file))
    assert spec.name == "stance" and spec.labels == ["Yes", "No"]
    assert spec.parse_output(" yes, I think so") == "Yes"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("name: x\nkind: nope\nmetrics: [mae]\n", "kind must be one of"),
        ("name: x\nkind: regression\nmetrics: [bleu]\n", "unknown metric 'bleu'"),
        ("name: x\nkind: classification\nmetrics: [accuracy]\n", "label set"),
        ("name: x\nkind: regression\nmetrics: [mae]\nfoo: 1\n", "unknown spec fields ['foo']"),
        ("kind: regression\nmetrics: [mae]\n", "missing 'name'"),
        ("name: x\nkind: generation\nmetrics: [rouge-1]\nquery_pattern: '('\n", "invalid regex"),
        ("name: x\nkind: generation\nmetrics: [rouge-1]\nparser: magic\n", "unknown parser"),
        ("{{{", "cannot parse spec"),
    ],
)
def test_bad_spec_files(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=needle.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        load_task_spec(path)


def test_unknown_task_lists_known():
    with pytest.raises(UnknownNameError, match="LaMP-3"):
        get_task("LaMP-99")


def test_parsers():
    lamp3, lamp2, lamp4 = get_task("LaMP-3"), get_task("LaMP-2"), get_task("LaMP-4")
    assert lamp3.parse_output("4") == "4"
    assert lamp3.parse_output("I'd say 2 stars") == "2"
    assert lamp3.parse_output("nine") is None
    assert lamp3.parse_output("7") is None  # outside the label range: unparseable, not clipped
    assert lamp2.parse_output("dark comedy") == "dark comedy"  # longest label wins over 'comedy'
    assert lamp2.parse_output("It is a classic.") == "classic"
    assert lamp2.parse_output("no idea") is None
    assert lamp4.parse_output("  A headline \n") == "A headline"
    assert lamp4.parse_output("   ") is None


def test_template_missing_field_is_named():
    from pllm.types import ProfileItem

    with pytest.raises(InputError, match="field 'score' is missing"):
        get_task("LaMP-3").output_of(ProfileItem(id="1", fields={"text": "x"}))


def test_outputs_round_trip(tmp_path):
    path = write_outputs(tmp_path / "o.json", "LaMP-3", {"a": "1", "b": "5"})
    assert json.loads(path.read_text()) == {"task": "LaMP-3", "golds": [{"id": "a", "output": "1"},
                                                                        {"id": "b", "output": "5"}]}
    assert read_outputs(path) == {"a": "1", "b": "5"}
    path.write_text(json.dumps({"task": "x", "golds": [{"id": "a"}]}))
    with pytest.raises(InputError, match="record 0: field 'output'"):
        read_outputs(path)
