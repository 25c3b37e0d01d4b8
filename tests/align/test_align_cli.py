"""`pllm align ...`: importing, vectors, assignments, soups and errors as one-line exit-2 messages."""

from __future__ import annotations

from align_helpers import dsp_file_fixture, one_thread, save_random_adapter  # noqa: F401  (fixtures)
from typer.testing import CliRunner

from pllm.adapt.store import AdapterStore
from pllm.align.soup import SoupStore
from pllm.cli import app

runner = CliRunner()


def test_every_align_command_has_help() -> None:
    for cmd in ("import-dsp", "import-hh", "set-vector", "assign", "show", "adapters", "dpo", "ric", "soup",
                "judge", "eval", "report"):
        res = runner.invoke(app, ["align", cmd, "--help"])
        assert res.exit_code == 0, (cmd, res.output)
        assert "Usage" in res.output


def test_import_vectors_assignments_and_soups(dsp_file, tmp_path, tiny_generator) -> None:
    db = str(tmp_path / "db.sqlite3")
    res = runner.invoke(app, ["align", "import-dsp", str(dsp_file), "--test-fraction", "0.3", "--db", db])
    assert res.exit_code == 0, res.output
    assert "dsp-academy:" in res.output and "test pairs" in res.output
    res = runner.invoke(app, ["align", "set-vector", "alice", "academy=0.7", "business=0.3", "--db", db])
    assert res.exit_code == 0 and '"academy": 0.7' in res.output
    res = runner.invoke(app, ["align", "show", "dsp-business", "--db", db])
    assert res.exit_code == 0 and '"business": 1.0' in res.output
    # errors: one line, exit code 2
    res = runner.invoke(app, ["align", "set-vector", "alice", "academy", "--db", db])
    assert res.exit_code == 2 and "NAME=WEIGHT" in res.output
    res = runner.invoke(app, ["align", "assign", "alice", "dpo=nope", "--db", db])
    assert res.exit_code == 2 and "no alignment adapter 'nope'" in res.output
    res = runner.invoke(app, ["align", "assign", "alice", "lora=x", "--db", db])
    assert res.exit_code == 2 and "not assigned to users" in res.output
    res = runner.invoke(app, ["align", "show", "ghost", "--db", db])
    assert res.exit_code == 2
    # soups over stored adapters, then served to alice
    store = AdapterStore()
    save_random_adapter(tiny_generator, store, "dim-a", 1)
    save_random_adapter(tiny_generator, store, "dim-b", 2)
    res = runner.invoke(app, ["align", "soup", "ab", "--dim", "academy=dim-a", "--dim", "business=dim-b"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["align", "soup", "bad", "--dim", "academy=missing"])
    assert res.exit_code == 2 and "missing" in res.output
    res = runner.invoke(app, ["align", "assign", "alice", "soup=ab", "--db", db])
    assert res.exit_code == 0 and "soup=ab" in res.output
    res = runner.invoke(app, ["align", "adapters"])
    assert "dim-a" in res.output and "soup ab" in res.output
    res = runner.invoke(app, ["align", "dpo", "--user", "ghost", "--name", "x", "--db", db])
    assert res.exit_code == 2 and "no train pairs" in res.output
    assert SoupStore().get("ab").dimensions["business"] == "dim-b"
