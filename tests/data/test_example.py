"""The committed `examples/` files are exactly what `pllm data example` writes, and they are valid data."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from typer.testing import CliRunner

from pllm.cli import app
from pllm.data.example import example_files, write_examples
from pllm.tasks.lamp import read_questions
from pllm.tasks.spec import get_task

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE_FILES = list(example_files())


def test_committed_examples_match_a_fresh_run(tmp_path: Path):
    res = CliRunner().invoke(app, ["data", "example", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(EXAMPLE_FILES)
    committed = sorted(p.name for p in EXAMPLES.iterdir() if p.name != "README.md")
    assert committed == sorted(EXAMPLE_FILES), "examples/ holds only generated files and README.md"
    for name in EXAMPLE_FILES:
        assert (tmp_path / name).read_bytes() == (EXAMPLES / name).read_bytes(), (
            f"examples/{name} differs from `pllm data example`: run `pllm data example examples` and commit")


def test_writing_twice_gives_the_same_bytes(tmp_path: Path):
    a, b = write_examples(tmp_path / "a"), write_examples(tmp_path / "b")
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]


def test_lamp3_example_is_valid_and_personal():
    spec = get_task("LaMP-3")
    qs = read_questions(EXAMPLES / "lamp3_questions.json", spec=spec, outputs=EXAMPLES / "lamp3_outputs.json")
    assert len(qs) == 10 and all(q.target in spec.labels for q in qs)
    assert len({q.user_id for q in qs}) == 4
    for q in qs:
        assert q.query["text"] and len(q.profile) == 5
        assert all(spec.output_of(item) in spec.labels and item.timestamp is not None for item in q.profile)
        assert q.query["text"] not in {spec.retrieval_text(item) for item in q.profile}  # no answer leaks
    # the same kind of review gets different scores from different users: history matters
    by_user = {q.user_id: {spec.output_of(i) for i in q.profile} for q in qs}
    assert len({frozenset(s) for s in by_user.values()}) == 4


def test_spec_file_task_loads_and_its_data_follows_it():
    spec = get_task(EXAMPLES / "email_folder.yaml")
    assert spec.name == "email-folder" and spec.kind == "classification"
    qs = read_questions(EXAMPLES / "email_questions.json", spec=spec, outputs=EXAMPLES / "email_outputs.json")
    assert len(qs) == 6 and {q.user_id for q in qs} == {"eve", "finn", "gia"}
    for q in qs:
        assert q.target in spec.labels and q.query["subject"]
        assert all(spec.output_of(item) in spec.labels for item in q.profile)
    # one kind of email (flights) goes to different folders for different users
    flights = {q.user_id: q.target for q in qs if "flight" in q.query["subject"].lower()}
    assert len(set(flights.values())) == len(flights) >= 2
    assert Counter(q.target for q in qs)["family"] >= 1
