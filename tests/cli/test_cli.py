from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pllm.cli import app
from pllm.users.store import SQLiteUserStore
from pllm_testkit import lamp3_records

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_help_on_every_command():
    """Every command's help renders (rich markup in a help text, e.g. `[/x]`, would break it)."""
    import typer

    def walk(cmd, path):
        yield path
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, [*path, name])

    paths = list(walk(typer.main.get_command(app), []))
    assert ["eval"] in paths and ["users", "import"] in paths
    for args in paths:
        res = invoke(*args, "--help")
        assert res.exit_code == 0, (args, res.output)
        assert "Usage" in res.output


def test_users_import_list_show_export_forget(tmp_path, lamp3_files):
    q, o = lamp3_files
    db = tmp_path / "s.db"
    res = invoke("users", "import", q, "--outputs", o, "--task", "LaMP-3", "--db", db)
    assert res.exit_code == 0, res.output
    assert "imported 3 questions, 2 new users" in res.output
    res = invoke("users", "list", "--db", db, "--json")
    assert [u["id"] for u in json.loads(res.output)] == ["u1", "u2"]
    res = invoke("users", "show", "u1", "--db", db)
    assert "4 items" in res.output and "great phone" in res.output
    out = tmp_path / "export.json"
    res = invoke("users", "export", out, "--db", db)
    assert res.exit_code == 0
    exported = json.loads(out.read_text())
    assert [r["profile"] for r in exported] == [r["profile"] for r in lamp3_records()]
    assert exported[0]["query"]["text"] == "love this great battery life"
    res = invoke("users", "export", tmp_path / "items.json", "--format", "items", "--user", "u2", "--db", db)
    assert res.exit_code == 0 and len(json.loads((tmp_path / "items.json").read_text())[0]["items"]) == 2
    res = invoke("users", "forget", "u1", "--db", db)
    assert res.exit_code == 0 and "forgot user u1" in res.output
    with SQLiteUserStore(db) as store:
        assert [u.id for u in store.list_users()] == ["u2"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["users", "import", "{missing}"], "file not found"),
        (["users", "import", "{bad}"], "record 1: field 'profile'"),
        (["users", "show", "ghost"], "user 'ghost' is not in the store"),
        (["users", "forget", "ghost"], "user 'ghost' is not in the store"),
        (["users", "export", "{out}", "--user", "ghost"], "user 'ghost'"),
        (["users", "export", "{out}", "--format", "xml"], "--format"),
        (["eval", "--task", "LaMP-99", "--questions", "{good}"], "unknown task 'LaMP-99'"),
        (["eval", "--task", "LaMP-3", "--questions", "{good}", "--retriever", "magic", "--backend", "test-echo"],
         "unknown retriever 'magic'"),
        (["eval", "--task", "LaMP-3", "--questions", "{good}", "--backend", "nope"], "unknown generator 'nope'"),
        (["eval", "--task", "LaMP-3", "--questions", "{missing}", "--backend", "test-echo"], "file not found"),
        (["data", "build", "movielens-rating", "--source", "{tmp}", "--out", "{out}"], "no MovieLens-100k files"),
        (["data", "build", "nope", "--source", "{tmp}", "--out", "{out}"], "unknown dataset builder 'nope'"),
    ],
)
def test_bad_input_is_one_clear_error_and_store_unchanged(tmp_path, lamp3_files, echo_backend, args, needle):
    good, o = lamp3_files
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([lamp3_records()[0], {"id": "x", "input": "y"}]))
    db = tmp_path / "s.db"
    assert invoke("users", "import", good, "--db", db).exit_code == 0
    with SQLiteUserStore(db) as store:
        before = [store.execute(f"SELECT * FROM {t} ORDER BY 1") for t in ("users", "items", "questions")]
    subs = {"{missing}": str(tmp_path / "nope.json"), "{bad}": str(bad), "{good}": str(good),
            "{out}": str(tmp_path / "out"), "{tmp}": str(tmp_path)}
    full = [subs.get(a, a) for a in args]
    if full[0] in ("users",) and "--db" not in full:
        full += ["--db", str(db)]
    res = invoke(*full)
    assert res.exit_code == 2, res.output
    assert needle in res.output
    assert res.output.count("error:") == 1 and "Traceback" not in res.output
    with SQLiteUserStore(db) as store:
        after = [store.execute(f"SELECT * FROM {t} ORDER BY 1") for t in ("users", "items", "questions")]
    assert after == before


def test_empty_profile_is_handled_and_counted(tmp_path, echo_backend):
    q = tmp_path / "q.json"
    q.write_text(json.dumps([{"id": "a", "input": "x review: fine", "profile": []}]))
    o = tmp_path / "o.json"
    o.write_text(json.dumps({"task": "LaMP-3", "golds": [{"id": "a", "output": "3"}]}))
    out = tmp_path / "out"
    res = invoke("eval", "--task", "LaMP-3", "--questions", q, "--outputs", o, "--retriever", "bm25",
                 "--backend", echo_backend, "--out", out, "--db", tmp_path / "s.db")
    assert res.exit_code == 0, res.output
    details = json.loads((out / "details_bm25-4.json").read_text())
    assert details[0]["empty_profile"] is True and details[0]["retrieved"] == []


def test_eval_writes_predictions_metrics_and_table(tmp_path, lamp3_files, echo_backend):
    q, o = lamp3_files
    out = tmp_path / "out"
    res = invoke("eval", "--task", "LaMP-3", "--questions", q, "--outputs", o, "--retriever", "bm25", "--k", "1",
                 "--backend", echo_backend, "--baselines", "--out", out, "--db", tmp_path / "s.db")
    assert res.exit_code == 0, res.output
    preds = json.loads((out / "predictions_bm25-1.json").read_text())
    assert preds == {"task": "LaMP-3", "golds": [{"id": "q1", "output": "5"}, {"id": "q2", "output": "3"},
                                                 {"id": "q3", "output": "1"}]}
    report = json.loads((out / "report.json").read_text())
    methods = {m["method"]: m for m in report["methods"]}
    assert methods["bm25@1"]["metrics"]["mae"]["value"] == 0.0
    assert "user-mean" in methods and "global-mean" in methods
    assert "bm25@1" in (out / "report.md").read_text()
    assert json.loads((out / "method_config.json").read_text())["retriever"] == "bm25"
    # Without gold outputs: predictions only.
    res = invoke("eval", "--task", "LaMP-3", "--questions", q, "--backend", echo_backend, "--out", tmp_path / "o2",
                 "--db", tmp_path / "s.db")
    assert res.exit_code == 0 and "not scored" in res.output
