"""Reading the commands and snippets out of README.md, docs/*.md and examples/README.md, and checking them
against the real code without running them (a module of its own: `conftest` is not a unique name to import
from when several test folders run together).

Doc conventions understood in fenced shell blocks and inline `pllm ...` spans:

- a trailing `\\` continues a command on the next line; `# ...` is a comment (quotes may span lines);
  `a && b`, `a | b`, `a; b` and `X=$(cmd)` hold several commands;
- `[--opt VALUE]` is optional: every combination with and without each bracket is a reading;
- `a|b` (no spaces) is a choice: each alternative is a reading;
- `pllm eval ... --soft X` repeats the previous `pllm eval` command of the same file with more options; with
  no previous one (and always in inline spans) the command is partial: only names can be checked.
"""

from __future__ import annotations

import ast
import itertools
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import typer

from pllm.cli import app

ROOT = Path(__file__).resolve().parents[2]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "examples" / "README.md"]
SHELL_LANGS = {"bash", "sh", "shell", "console"}  # untyped blocks hold diagrams and outputs
OPERATORS = {"&&", "||", "|", ";", "&"}
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@dataclass
class DocCommand:
    """One shell command as written in a doc: `argv` excludes the program (`pllm`, `python`, `curl`)."""

    source: str  # "README.md:42"
    program: str
    argv: list[str]
    inline: bool = False
    partial: bool = False  # written with `...`: only names can be checked

    @property
    def doc(self) -> str:
        return self.source.rsplit(":", 1)[0]

    @property
    def text(self) -> str:
        return " ".join([self.program, *self.argv])


# -- markdown -> shell commands -----------------------------------------------------------------------------
def fenced_blocks(text: str) -> Iterator[tuple[int, str, str]]:
    """(line number of the first body line, language, body) of every fenced block."""
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
        yield start + 1, lang, "\n".join(lines[start:j])
        i = j + 1


def logical_lines(body: str, first_line: int) -> Iterator[tuple[int, str]]:
    """(line number, text) of shell lines with comments removed and `\\`-newline continuations joined."""
    out: list[str] = []
    quote, line_no, start_no, i = None, first_line, first_line, 0
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
    """Word lists of the simple commands in one shell line (`$(...)` bodies first)."""
    for inner in re.findall(r"\$\(([^()]*)\)", line):
        yield from simple_commands(inner)
    line = re.sub(r"\$\(([^()]*)\)", "SUBST", line)
    current: list[str] = []
    for word in [*shlex.split(line), ";"]:
        if word in OPERATORS:
            while current and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", current[0]):  # VAR=value cmd
                current.pop(0)
            if current:
                yield current
            current = []
        else:
            current.append(word)


def program(word: str) -> str:
    """`.venv/bin/pllm` -> `pllm`, `python3` -> `python`."""
    name = word.rsplit("/", 1)[-1]
    return "python" if re.fullmatch(r"python3?(\.\d+)?", name) else name


def shell_commands() -> list[DocCommand]:
    """Every command of every fenced shell block, and every inline `pllm ...` span, in document order."""
    found: list[DocCommand] = []
    for doc in DOC_FILES:
        if not doc.is_file():
            continue
        rel = doc.relative_to(ROOT).as_posix()
        text = doc.read_text(encoding="utf-8")
        fenced: set[int] = set()
        for first, lang, body in fenced_blocks(text):
            fenced.update(range(first - 1, first + body.count("\n") + 2))
            if lang not in SHELL_LANGS:
                continue
            for line_no, line in logical_lines(body, first):
                for words in simple_commands(line):
                    found.append(DocCommand(f"{rel}:{line_no}", program(words[0]), words[1:]))
        for line_no, line in enumerate(text.splitlines(), start=1):
            if line_no not in fenced:
                for span in re.findall(r"`((?:pllm|make) [^`]*)`", line):
                    words = shlex.split(span)
                    found.append(DocCommand(f"{rel}:{line_no}", words[0], words[1:], inline=True, partial=True))
    return found


def python_blocks() -> list[tuple[str, str]]:
    """(source, code) of every fenced python block."""
    out = []
    for doc in DOC_FILES:
        if doc.is_file():
            rel = doc.relative_to(ROOT).as_posix()
            for first, lang, body in fenced_blocks(doc.read_text(encoding="utf-8")):
                if lang in ("python", "py"):
                    out.append((f"{rel}:{first}", body))
    return out


# -- readings: optional brackets and a|b choices --------------------------------------------------------------
def variants(argv: list[str]) -> list[list[str]]:
    """Every reading of a doc command: each `[...]` group in or out, and each `a|b` alternative.

    The first reading has every optional group in and takes the first alternatives."""
    groups: list[tuple[int, int]] = []  # word index ranges of bracket groups
    start = None
    for i, word in enumerate(argv):
        if word.startswith("[") and start is None:
            start = i
        if start is not None and word.endswith("]"):
            groups.append((start, i))
            start = None
    assert start is None, f"unclosed [ in {argv}"
    out: list[list[str]] = []
    for keep in itertools.product((True, False), repeat=len(groups)):
        dropped = {i for (a, b), k in zip(groups, keep) if not k for i in range(a, b + 1)}
        base = [w.removeprefix("[").removesuffix("]") if any(a <= i <= b for a, b in groups) else w
                for i, w in enumerate(argv) if i not in dropped]
        n_alts = max([len(w.split("|")) for w in base if _is_choice(w)] or [1])
        out.extend([_choose(w, k) for w in base] for k in range(n_alts))
    return out


def _is_choice(word: str) -> bool:
    return "|" in word and not word.startswith("-")


def _choose(word: str, k: int) -> str:
    if not _is_choice(word):
        return word
    alts = word.split("|")
    return alts[min(k, len(alts) - 1)]


# -- pllm commands against the click tree ---------------------------------------------------------------------
ROOT_COMMAND = typer.main.get_command(app)


def resolve(argv: list[str]) -> tuple[tuple[str, ...], Any, list[str]]:
    """(sub-command path, click command, remaining words); AssertionError names an unknown sub-command."""
    cmd, path, rest = ROOT_COMMAND, [], list(argv)
    while hasattr(cmd, "commands"):
        if not rest or rest[0].startswith("-") or rest[0] == "...":  # group options (--help), or a fragment
            break
        name = rest.pop(0)
        assert name in cmd.commands, (f"no sub-command {name!r} in `pllm {' '.join(path)}`; "
                                      f"known: {', '.join(sorted(cmd.commands))}")
        cmd, path = cmd.commands[name], [*path, name]
    return tuple(path), cmd, rest


def option_names(cmd: Any) -> set[str]:
    ctx = cmd.make_context("pllm", [], resilient_parsing=True)
    return {opt for p in cmd.get_params(ctx) for opt in (*p.opts, *p.secondary_opts) if opt.startswith("-")}


def check_parses(argv: list[str], *, partial: bool) -> tuple[str, ...]:
    """Parse one reading of a `pllm` command with the real click tree (nothing runs); its sub-command path.

    Whole commands are parsed by click itself: unknown options, missing required ones, values of the wrong
    type and stray arguments all fail. Partial ones (and groups) only have their option names checked."""
    path, cmd, rest = resolve(argv)
    where = f"`pllm {' '.join(path)}`".replace(" `", "`")
    if partial or hasattr(cmd, "commands"):
        known = option_names(cmd)
        for word in rest:
            if word.startswith("-") and word != "-":
                assert word.split("=")[0] in known, f"no option {word} on {where}"
        return path
    # A `--task` given as a folder or spec path a previous step builds cannot resolve here; the option's
    # callback resolves tasks while parsing, so such a value stands in as a registered task.
    rest = ["movielens-rating" if i and rest[i - 1] == "--task" and ("/" in w or w.endswith((".yaml", ".json")))
            and not Path(w).exists() else w for i, w in enumerate(rest)]
    try:
        cmd.make_context(f"pllm {' '.join(path)}", list(rest))
    except Exception as exc:  # click's UsageError, BadParameter, MissingParameter; Exit for --help
        if type(exc).__name__ != "Exit":
            raise AssertionError(f"`pllm {' '.join(argv)}` does not parse: {exc}") from None
    return path


def check_names(argv: list[str]) -> None:
    """Names the CLI looks up in a registry: a dataset builder, a task (unless it is a spec path)."""
    from pllm.data import BUILDERS
    from pllm.tasks.spec import task_names

    path, _, rest = resolve(argv)
    if path == ("data", "build") and rest and not rest[0].startswith("-") and rest[0] != "...":
        assert rest[0] in BUILDERS, f"no dataset builder {rest[0]!r}; known: {', '.join(BUILDERS.names())}"
    for opt, value in zip(rest, rest[1:]):
        if opt == "--task" and "/" not in value and not value.endswith((".yaml", ".yml", ".json", "...")):
            assert value in task_names(), f"no task {value!r}; known: {', '.join(task_names())}"


def pllm_commands() -> list[DocCommand]:
    """The `pllm` commands, with `pllm X ... --more` expanded from the previous `pllm X` of the same doc."""
    last: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    out = []
    for c in shell_commands():
        if c.program != "pllm":
            continue
        if "..." in c.argv:
            i = c.argv.index("...")
            prev = None if c.inline else last.get((c.doc, tuple(c.argv[:i])))
            if prev is None:
                out.append(DocCommand(c.source, c.program, c.argv, c.inline, partial=True))
                continue
            c = DocCommand(c.source, c.program, c.argv[:i] + prev + c.argv[i + 1:])
        if not c.partial:
            path, _, rest = resolve(variants(c.argv)[0])
            last[(c.doc, path)] = rest
        out.append(c)
    return out


# -- python scripts (benchmarks) against their argparse parsers -----------------------------------------------
class _Parsed(Exception):
    pass


def check_script_parses(argv: list[str]) -> None:
    """Load `python SCRIPT ARGS`'s module and call its `main(ARGS)`, stopped right after argparse parsed ARGS
    (every benchmark parses its arguments first). AssertionError with argparse's message when they do not."""
    import argparse
    import contextlib
    import importlib.util
    import io

    script = ROOT / argv[0]
    assert script.is_file(), f"no script {argv[0]}"
    spec = importlib.util.spec_from_file_location(f"_doc_script_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert hasattr(module, "main"), f"{argv[0]} has no main(argv)"
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self: argparse.ArgumentParser, args: Any = None, namespace: Any = None) -> Any:
        raise _Parsed(original(self, args, namespace))

    err = io.StringIO()
    argparse.ArgumentParser.parse_args = parse_then_stop
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            module.main(list(argv[1:]))
    except _Parsed:
        return
    except SystemExit as exc:
        if exc.code in (0, None):  # --help
            return
        raise AssertionError(f"`python {' '.join(argv)}` does not parse: {err.getvalue().strip()}") from None
    finally:
        argparse.ArgumentParser.parse_args = original
    raise AssertionError(f"{argv[0]}'s main() returned without parsing its arguments")


# -- HTTP endpoints against the server's routes ---------------------------------------------------------------
def http_requests() -> list[tuple[str, str, str]]:
    """(source, method, path) of every `curl` command, and every `METHOD /path` span in the docs' prose."""
    out = []
    for c in shell_commands():
        if c.program != "curl":
            continue
        url = next(w for w in c.argv if w.startswith("http"))
        method = next((b for a, b in zip(c.argv, c.argv[1:]) if a in ("-X", "--request")), None)
        if method is None:
            method = "POST" if any(w in ("-d", "--data", "--data-raw", "--json") for w in c.argv) else "GET"
        out.append((c.source, method, urlparse(url).path))
    for doc in DOC_FILES:
        if doc.is_file():
            rel = doc.relative_to(ROOT).as_posix()
            for line_no, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), start=1):
                pattern = rf"`((?:{'|'.join(HTTP_METHODS)})(?:/(?:{'|'.join(HTTP_METHODS)}))*) (/[^`?\s]*)"
                for methods, path in re.findall(pattern, line):
                    out.extend((f"{rel}:{line_no}", m, path) for m in methods.split("/"))
    return out


# -- python snippets against the package ---------------------------------------------------------------------
def check_snippet(code: str) -> list[str]:
    """Problems with a python snippet: syntax, `from pllm... import` names that do not exist, and calls of
    imported pllm callables whose arguments do not bind to the real signature. Nothing is run."""
    import importlib
    import inspect

    tree = ast.parse(code)
    problems: list[str] = []
    imported: dict[str, Any] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "pllm":
            module = importlib.import_module(node.module)
            for alias in node.names:
                if hasattr(module, alias.name):
                    imported[alias.asname or alias.name] = getattr(module, alias.name)
                else:
                    problems.append(f"`from {node.module} import {alias.name}`: no such name")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "pllm":
                    importlib.import_module(alias.name)
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in imported):
            continue
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            continue
        target = imported[node.func.id]
        try:
            sig = inspect.signature(target)
        except (TypeError, ValueError):
            continue
        try:
            sig.bind(*[None] * len(node.args), **{k.arg: None for k in node.keywords})
        except TypeError as exc:
            problems.append(f"line {node.lineno}: {ast.unparse(node)[:80]}: {exc}")
    return problems
