"""Every command the README and docs/*.md show is checked against the real CLI, and the cheap ones are run.

Checked, never executed (no model loads): every `pllm ...` command in a fenced shell block, and every inline
`pllm ...` code span, is parsed by the real click command tree from `typer.main.get_command(app)`: the
sub-command exists, every option named exists on it, and (for whole commands) the arguments parse: required
options present, values of the right type, no stray arguments. Doc conventions understood:

- a trailing `\\` continues a command on the next line; `# ...` is a comment; `a && b`, `a | b`, `X=$(cmd)`
  hold several commands;
- `[--opt VALUE]` is optional: every combination with and without each bracket is parsed;
- `a|b` (no spaces) is a choice: each alternative is parsed;
- `pllm eval ... --soft X` repeats the previous `pllm eval` command of the same file with more options; with
  no previous one (inline spans) only the option names are checked.

`make TARGET` must name a Makefile target.

Executed for real: the `pllm users`, `pllm tasks`, `pllm data example` and `pllm eval` commands of README.md
and examples/README.md, in document order, in a temp folder holding a copy of `examples/` and a temp
PLLM_HOME. Eval runs score `--limit 4` questions; the fast test points them at a tiny random model saved to
disk (`--model PATH`) and leaves out `--baselines` (the knn baseline loads MiniLM); the `slow` test runs them
as written, with the embedded SmolLM2 and MiniLM. Commands that train adapters or encoders, build datasets
from ../shared/data, run benchmark grids for hours or start servers are covered by the parse check only.
"""

from __future__ import annotations

import itertools
import re
import shlex
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from pllm.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "examples" / "README.md"]
SHELL_LANGS = {"", "bash", "sh", "shell", "console"}
OPERATORS = {"&&", "||", "|", ";", "&"}
# Sub-commands the walkthrough executes (cheap, no training, no servers, no ../shared/data).
EXECUTED = {("users", "import"), ("users", "list"), ("users", "show"), ("users", "export"), ("users", "forget"),
            ("tasks", "list"), ("tasks", "show"), ("data", "example"), ("data", "list"), ("eval",)}
WALKTHROUGH_DOCS = (ROOT / "README.md", ROOT / "examples" / "README.md")
EVAL_LIMIT = "4"


# -- extracting commands from markdown ----------------------------------------------------------------------
@dataclass
class DocCommand:
    """One `pllm` command as written in a doc: `argv` excludes the leading `pllm`."""

    source: str  # "README.md:42"
    argv: list[str]
    inline: bool = False
    partial: bool = False  # written with `...`: only option names can be checked
    path: tuple[str, ...] = field(default=())  # the sub-command path, filled by resolve()

    @property
    def text(self) -> str:
        return "pllm " + " ".join(self.argv)


def fenced_blocks(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, body) of every fenced block in a shell language (or none)."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^\s*(```+)\s*(\S*)", lines[i])
        if not m:
            i += 1
            continue
        fence, lang, start = m.group(1), m.group(2).lower(), i + 1
        j = start
        while j < len(lines) and not lines[j].strip().startswith(fence):
            j += 1
        if lang in SHELL_LANGS:
            yield start + 1, "\n".join(lines[start:j])
        i = j + 1


def logical_lines(body: str, first_line: int) -> Iterator[tuple[int, str]]:
    """Shell lines with comments removed and `\\`-newline continuations joined; quotes may span lines."""
    out, quote, line_no, start_no = [], None, first_line, first_line
    i = 0
    while i < len(body):
        c = body[i]
        if quote:
            out.append(c)
            if c == quote:
                quote = None
            elif c == "\n":
                line_no += 1
        elif c in "'\"":
            quote = c
            out.append(c)
        elif c == "#" and (not out or out[-1] in " \t\n"):
            while i < len(body) and body[i] != "\n":
                i += 1
            continue
        elif c == "\\" and body[i + 1:i + 2] == "\n":
            out.append(" ")
            line_no += 1
            i += 2
            continue
        elif c == "\n":
            yield start_no, "".join(out)
            out, line_no = [], line_no + 1
            start_no = line_no
        else:
            out.append(c)
        i += 1
    yield start_no, "".join(out)


def simple_commands(line: str) -> Iterator[list[str]]:
    """Token lists of the simple commands in one shell line (`$(...)` bodies included)."""
    for inner in re.findall(r"\$\(([^()]*)\)", line):
        yield from simple_commands(inner)
    line = re.sub(r"\$\(([^()]*)\)", "SUBST", line)
    tokens = shlex.split(line)
    current: list[str] = []
    for tok in [*tokens, ";"]:
        if tok in OPERATORS:
            while current and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", current[0]):  # VAR=value cmd
                current.pop(0)
            if current:
                yield current
            current = []
        else:
            current.append(tok)


def is_pllm(word: str) -> bool:
    return word == "pllm" or word.endswith("/pllm")


def doc_commands() -> list[DocCommand]:
    """Every `pllm` command in the docs' fenced shell blocks and inline code spans, in document order."""
    found: list[DocCommand] = []
    for doc in DOC_FILES:
        if not doc.is_file():
            continue
        rel = doc.relative_to(ROOT).as_posix()
        text = doc.read_text(encoding="utf-8")
        fenced_lines: set[int] = set()
        for first, body in fenced_blocks(text):
            fenced_lines.update(range(first - 1, first + body.count("\n") + 2))
            for line_no, line in logical_lines(body, first):
                for words in simple_commands(line):
                    if is_pllm(words[0]):
                        found.append(DocCommand(f"{rel}:{line_no}", words[1:]))
        for line_no, line in enumerate(text.splitlines(), start=1):
            if line_no in fenced_lines:
                continue
            for span in re.findall(r"`(pllm [^`]*)`", line):
                found.append(DocCommand(f"{rel}:{line_no}", shlex.split(span)[1:], inline=True, partial=True))
    return found


def make_targets(docs: list[Path]) -> list[tuple[str, str]]:
    """(source, target) for every `make TARGET` in fenced blocks and inline spans."""
    out = []
    for doc in docs:
        if not doc.is_file():
            continue
        rel = doc.relative_to(ROOT).as_posix()
        for line_no, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), start=1):
            for target in re.findall(r"(?:^|`)\s*make ([a-z][\w-]*)", line):
                out.append((f"{rel}:{line_no}", target))
    return out


# -- the doc conventions: optional brackets, a|b choices, `...` ---------------------------------------------
def variants(argv: list[str]) -> list[list[str]]:
    """Every reading of a doc command: each `[...]` group in or out, and each `a|b` alternative."""
    groups: list[tuple[int, int]] = []  # token index ranges of bracket groups
    start = None
    for i, tok in enumerate(argv):
        if tok.startswith("[") and start is None:
            start = i
        if start is not None and tok.endswith("]"):
            groups.append((start, i))
            start = None
    assert start is None, f"unclosed [ in {argv}"
    out: list[list[str]] = []
    for keep in itertools.product((True, False), repeat=len(groups)):
        dropped = {i for (a, b), k in zip(groups, keep) if not k for i in range(a, b + 1)}
        base = [t.removeprefix("[").removesuffix("]") if any(a <= i <= b for a, b in groups) else t
                for i, t in enumerate(argv) if i not in dropped]
        n_alts = max([len(t.split("|")) for t in base if "|" in t and not t.startswith("-")] or [1])
        for k in range(n_alts):
            out.append([_choose(t, k) for t in base])
    return out


def _choose(token: str, k: int) -> str:
    if "|" not in token or token.startswith("-"):
        return token
    alts = token.split("|")
    return alts[min(k, len(alts) - 1)]


ROOT_COMMAND = typer.main.get_command(app)


def resolve(argv: list[str]) -> tuple[tuple[str, ...], object, list[str]]:
    """(sub-command path, leaf click command, remaining args); raises AssertionError naming what is unknown."""
    cmd, path, rest = ROOT_COMMAND, [], list(argv)
    while hasattr(cmd, "commands"):
        if rest and rest[0].startswith("-"):  # group-level options such as --help
            assert rest[0].split("=")[0] in option_names(cmd), f"no option {rest[0]} on `pllm {' '.join(path)}`"
            return tuple(path), cmd, rest
        if not rest:
            return tuple(path), cmd, rest
        if rest[0] == "...":
            return tuple(path), cmd, rest
        name = rest.pop(0)
        assert name in cmd.commands, (f"no sub-command {name!r} in `pllm {' '.join(path)}`; "
                                      f"known: {', '.join(sorted(cmd.commands))}")
        cmd, path = cmd.commands[name], [*path, name]
    return tuple(path), cmd, rest


def option_names(cmd) -> set[str]:  # noqa: ANN001 - a click command
    ctx = cmd.make_context("pllm", [], resilient_parsing=True)
    return {opt for p in cmd.get_params(ctx) for opt in (*p.opts, *p.secondary_opts) if opt.startswith("-")}


def check_parses(argv: list[str], *, partial: bool) -> tuple[str, ...]:
    """Parse one reading of a command with the real click tree; returns its sub-command path."""
    path, cmd, rest = resolve(argv)
    if partial or hasattr(cmd, "commands"):
        known = option_names(cmd)
        for tok in rest:
            if tok.startswith("-") and tok != "-":
                assert tok.split("=")[0] in known, f"no option {tok} on `pllm {' '.join(path)}`"
        return path
    try:
        cmd.make_context("pllm " + " ".join(path), list(rest))
    except Exception as exc:  # click's UsageError, BadParameter, MissingParameter ...
        if type(exc).__name__ == "Exit":  # --help
            return path
        raise AssertionError(f"`pllm {' '.join(argv)}` does not parse: {exc}") from None
    return path


def expand_ellipses(commands: list[DocCommand]) -> list[DocCommand]:
    """`pllm eval ... --x` -> the previous `pllm eval` command of the same file, plus `--x`."""
    last: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    out = []
    for c in commands:
        doc = c.source.split(":")[0]
        if "..." in c.argv:
            i = c.argv.index("...")
            head = c.argv[:i]
            prev = None if c.inline else last.get((doc, tuple(head)))
            if prev is None:
                out.append(DocCommand(c.source, c.argv, c.inline, partial=True))
                continue
            c = DocCommand(c.source, head + prev + c.argv[i + 1:], c.inline, c.partial)
        if not c.inline and not c.partial:
            path, _, rest = resolve(variants(c.argv)[0])
            last[(doc, path)] = rest
        out.append(c)
    return out


COMMANDS = expand_ellipses(doc_commands())


def test_the_docs_show_commands():
    sources = {c.source.split(":")[0] for c in COMMANDS if not c.inline}
    assert {"README.md", "examples/README.md", "docs/adapters.md", "docs/serving.md"} <= sources
    assert len(COMMANDS) > 50


@pytest.mark.parametrize("command", COMMANDS, ids=[f"{c.source} {c.text[:60]}" for c in COMMANDS])
def test_doc_command_parses(command: DocCommand):
    for argv in variants(command.argv):
        check_parses(argv, partial=command.partial)
        check_names(argv)


def check_names(argv: list[str]) -> None:
    """Names the docs pass that the CLI looks up in a registry: a dataset builder, a task (or a spec path)."""
    from pllm.data import BUILDERS
    from pllm.tasks.spec import task_names

    path, _, rest = resolve(argv)
    if path == ("data", "build") and rest and rest[0] != "...":
        assert rest[0] in BUILDERS, f"no dataset builder {rest[0]!r}; known: {', '.join(BUILDERS.names())}"
    for opt, value in zip(rest, rest[1:]):
        if opt == "--task" and "/" not in value and not value.endswith((".yaml", ".yml", ".json", "...")):
            assert value in task_names(), f"no task {value!r}; known: {', '.join(task_names())}"


@pytest.mark.parametrize(("source", "target"), make_targets(DOC_FILES))
def test_doc_make_target_exists(source: str, target: str):
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(rf"^{re.escape(target)}:", makefile, re.M), f"{source}: no `{target}` target in the Makefile"


# -- the parser understands the conventions (so a check that passes means something) ------------------------
def test_extraction_understands_the_conventions():
    body = ("# a comment with pllm users list\n"
            "KEY=$(pllm keys create --tenant acme)  # printed once\n"
            "pllm eval --task LaMP-3 \\\n    --questions q.json [--profile] [--style a|b]   # trailing\n"
            "pllm align set-vector ada x=1 && pllm align assign ada --soup dsp | jq .\n"
            "curl -d '{\"a\": 1,\n  \"b\": \"# not a comment\"}'\n")
    cmds = [w for _, line in logical_lines(body, 1) for w in simple_commands(line) if is_pllm(w[0])]
    assert [c[1:3] for c in cmds] == [["keys", "create"], ["eval", "--task"], ["align", "set-vector"],
                                      ["align", "assign"]]
    eval_variants = variants(cmds[1][1:])
    assert ["eval", "--task", "LaMP-3", "--questions", "q.json", "--profile", "--style", "b"] in eval_variants
    assert ["eval", "--task", "LaMP-3", "--questions", "q.json"] in eval_variants
    assert len(eval_variants) == 2 + 2 + 1 + 1  # both in: a, b; style only: a, b; profile only; neither


@pytest.mark.parametrize(("argv", "needle"), [
    (["users", "importt", "x.json"], "no sub-command 'importt'"),
    (["users", "import", "x.json", "--output", "o.json"], "does not parse"),
    (["eval", "--questions", "q.json"], "does not parse"),  # --task is required
    (["eval", "--task", "LaMP-3", "--questions", "q", "--k", "four"], "does not parse"),
    (["eval", "--task", "LaMP-33", "--questions", "q"], "no task 'LaMP-33'"),
    (["data", "build", "movielens-rec", "--source", "s", "--out", "o"], "no dataset builder 'movielens-rec'"),
])
def test_a_wrong_command_fails_the_check(argv: list[str], needle: str):
    with pytest.raises(AssertionError, match=needle):
        check_parses(argv, partial=False)
        check_names(argv)


def test_a_partial_command_checks_option_names():
    assert check_parses(["eval", "--soft", "x"], partial=True) == ("eval",)
    with pytest.raises(AssertionError, match="no option --sof on `pllm eval`"):
        check_parses(["eval", "--sof", "x"], partial=True)


# -- executing the cheap walkthrough ------------------------------------------------------------------------
def walkthrough(*, fast: bool, tiny_model: Path | None = None) -> list[list[str]]:
    """The executed commands, in document order, as argv lists (one reading per command)."""
    runs = []
    for c in COMMANDS:
        doc = ROOT / c.source.split(":")[0]
        if c.inline or c.partial or doc not in WALKTHROUGH_DOCS:
            continue
        argv = variants(c.argv)[0]  # every optional part in, first alternative
        path = resolve(argv)[0]
        if path not in EXECUTED:
            continue
        if path == ("eval",):
            argv = [*argv, "--limit", EVAL_LIMIT]
            if fast:
                argv = [a for a in argv if a != "--baselines"] + ["--model", str(tiny_model)]
        runs.append(argv)
    return runs


def run_walkthrough(tmp_path: Path, runs: list[list[str]]) -> list[tuple[str, str]]:
    """Run each command in-process (one import of pllm) in a temp folder; (command, output) per run."""
    work = tmp_path / "work"
    shutil.copytree(ROOT / "examples", work / "examples")
    runner = CliRunner()
    outputs = []
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        for argv in runs:
            res = runner.invoke(app, argv)
            assert res.exit_code == 0, f"`pllm {' '.join(argv)}` failed:\n{res.output}"
            outputs.append((" ".join(argv), res.output))
    return outputs


def test_walkthrough_covers_users_tasks_and_eval():
    runs = walkthrough(fast=True, tiny_model=Path("tiny"))
    paths = {resolve(a)[0] for a in runs}
    assert {("users", "import"), ("users", "list"), ("users", "show"), ("users", "export"), ("users", "forget"),
            ("tasks", "list"), ("eval",)} <= paths
    evals = [a for a in runs if a[0] == "eval"]
    assert any("examples/email_folder.yaml" in a for a in evals), "the spec-file task is evaluated"
    assert any("LaMP-3" in a for a in evals)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pllm.models.testing import make_tiny_generator

    gen = make_tiny_generator(seed=0)
    folder = tmp_path_factory.mktemp("tiny-model")
    gen.model.save_pretrained(folder)
    gen.tokenizer.save_pretrained(folder)
    return folder


def test_walkthrough_runs(tmp_path: Path, tiny_model_dir: Path, one_torch_thread: None):
    outputs = run_walkthrough(tmp_path, walkthrough(fast=True, tiny_model=tiny_model_dir))
    text = "\n".join(out for _, out in outputs)
    assert "imported 10 questions, 4 new users" in text
    assert "forgot user ada" in text
    assert (tmp_path / "work" / "runs").is_dir()
    reports = sorted((tmp_path / "work").glob("runs/*/report.json"))
    assert len(reports) >= 2, "README and examples/README.md each score at least one eval"


@pytest.mark.slow
def test_walkthrough_runs_as_written_with_the_embedded_model(tmp_path: Path):
    outputs = run_walkthrough(tmp_path, walkthrough(fast=False))
    assert any("knn" in out for cmd, out in outputs if cmd.startswith("eval"))
