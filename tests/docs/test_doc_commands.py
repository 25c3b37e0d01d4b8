"""Every command the README, docs/*.md and examples/README.md show is checked against the real code, without
running it (no model loads, no servers):

- `pllm ...` in fenced shell blocks and inline spans: parsed by the real click tree
  (`typer.main.get_command(app)`), every reading of `[optional]` parts and `a|b` choices; registry names
  (`--task NAME`, `pllm data build NAME`) must be registered;
- `python benchmarks/X.py ARGS`: parsed by the script's own argparse parser;
- `make TARGET`: a Makefile target;
- `curl` requests and `METHOD /path` spans: a route of the server app.

Commands cheap enough to run for real are also run: see test_doc_walkthrough.py.
"""

from __future__ import annotations

import re

import pytest
from docs_helpers import (
    ROOT,
    DocCommand,
    check_names,
    check_parses,
    check_script_parses,
    http_requests,
    logical_lines,
    pllm_commands,
    shell_commands,
    simple_commands,
    variants,
)

PLLM = pllm_commands()
SHELL = shell_commands()
SCRIPTS = [c for c in SHELL if c.program == "python" and c.argv and c.argv[0].endswith(".py")]
MAKE = [c for c in SHELL if c.program == "make"]


def _id(c: DocCommand) -> str:
    return f"{c.source} {c.text[:60]}"


def test_the_docs_show_commands():
    docs = {c.doc for c in PLLM if not c.inline}
    assert {"README.md", "examples/README.md", "docs/adapters.md", "docs/serving.md", "docs/soft.md"} <= docs
    assert len(PLLM) > 80 and len(SCRIPTS) >= 5 and len(MAKE) >= 3


@pytest.mark.parametrize("command", PLLM, ids=[_id(c) for c in PLLM])
def test_pllm_command_parses(command: DocCommand):
    for argv in variants(command.argv):
        check_parses(argv, partial=command.partial)
        check_names(argv)


@pytest.mark.parametrize("command", SCRIPTS, ids=[_id(c) for c in SCRIPTS])
def test_script_command_parses(command: DocCommand):
    for argv in variants(command.argv):
        check_script_parses(argv)


@pytest.mark.parametrize("command", MAKE, ids=[_id(c) for c in MAKE])
def test_make_target_exists(command: DocCommand):
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for target in command.argv:
        assert re.search(rf"^{re.escape(target)}:", makefile, re.M), f"no `{target}` target in the Makefile"


REQUESTS = http_requests()


@pytest.fixture(scope="module")
def routes(tmp_path_factory: pytest.TempPathFactory):
    """The server app's routes (no model loads; its store in a temp folder: module fixtures run before the
    per-test PLLM_HOME is set)."""
    from pllm.serve.app import create_app
    from pllm.serve.config import ServeConfig

    db = tmp_path_factory.mktemp("serve") / "pllm.sqlite3"
    server = create_app(ServeConfig(preload=False, db=str(db)))
    yield [r for r in server.routes if hasattr(r, "methods")]
    server.state.pllm.close()


@pytest.mark.parametrize(("source", "method", "path"), REQUESTS, ids=[f"{s} {m} {p}" for s, m, p in REQUESTS])
def test_http_request_has_a_route(routes, source: str, method: str, path: str):
    assert any(r.path_regex.match(path) and method in r.methods for r in routes), \
        f"{source}: the server has no route for {method} {path}"


# -- the checks catch what they should (a check that cannot fail proves nothing) -----------------------------
def test_extraction_understands_the_conventions():
    body = ("# a comment with pllm users list\n"
            "KEY=$(pllm keys create --tenant acme)  # printed once\n"
            "pllm eval --task LaMP-3 \\\n    --questions q.json [--profile] [--style a|b]   # trailing\n"
            "pllm align set-vector ada x=1 && pllm align assign ada --soup dsp | jq .\n"
            "curl -d '{\"a\": 1,\n  \"b\": \"# not a comment\"}'\n")
    cmds = [w for _, line in logical_lines(body, 1) for w in simple_commands(line)]
    assert [c[:3] for c in cmds] == [["pllm", "keys", "create"], ["pllm", "eval", "--task"],
                                     ["pllm", "align", "set-vector"], ["pllm", "align", "assign"], ["jq", "."],
                                     ["curl", "-d", '{"a": 1,\n  "b": "# not a comment"}']]
    readings = variants(cmds[1][1:])
    assert ["eval", "--task", "LaMP-3", "--questions", "q.json", "--profile", "--style", "b"] in readings
    assert ["eval", "--task", "LaMP-3", "--questions", "q.json"] in readings
    assert len(readings) == 2 + 2 + 1 + 1  # both in (a, b), style only (a, b), profile only, neither


@pytest.mark.parametrize(("argv", "needle"), [
    (["users", "importt", "x.json"], "no sub-command 'importt'"),
    (["users", "import", "x.json", "--output", "o.json"], "No such option"),
    (["eval", "--questions", "q.json"], "Missing parameter: task"),
    (["eval", "--task", "LaMP-3", "--questions", "q", "--k", "four"], "valid integer"),
    (["users", "show", "ada", "ben"], "unexpected extra argument"),
    (["eval", "--task", "LaMP-33", "--questions", "q"], "(unknown|no) task 'LaMP-33'"),
    (["data", "build", "no-such-builder", "--source", "s", "--out", "o"], "no dataset builder 'no-such-builder'"),
])
def test_a_wrong_pllm_command_fails(argv: list[str], needle: str):
    with pytest.raises(AssertionError, match=needle):
        check_parses(argv, partial=False)
        check_names(argv)


def test_a_partial_command_checks_option_names():
    assert check_parses(["eval", "...", "--soft", "x"], partial=True) == ("eval",)
    with pytest.raises(AssertionError, match="no option --sof on `pllm eval`"):
        check_parses(["eval", "--sof", "x"], partial=True)


def test_a_wrong_script_command_fails():
    check_script_parses(["benchmarks/run_all.py", "--list"])
    with pytest.raises(AssertionError, match="unrecognized arguments: --fast"):
        check_script_parses(["benchmarks/run_all.py", "--fast"])
    with pytest.raises(AssertionError, match="no script"):
        check_script_parses(["benchmarks/nope.py"])


def test_a_wrong_route_fails(routes):
    assert not any(r.path_regex.match("/v1/users/ada/memories") and "POST" in r.methods for r in routes)
