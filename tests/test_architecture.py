"""Imports go one way: core < retrieval, models, tasks, data < prompting < pipeline < methods < serve, cli.

Every module under src/pllm is parsed (not imported), and every `pllm` import in it, at the top or inside
a function, must name a module of the same layer or a lower one. A shared registry lives at the lowest
layer that needs it (the metric registry is core because task specs check their metrics on loading).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Lower number = lower layer. Keys are the first name under `pllm`; modules directly under `pllm/` by stem.
LAYERS: dict[str, int] = {
    # core: records, errors, registry, files, paths, metrics and their statistics, the user store
    "__init__": 0, "errors": 0, "types": 0, "registry": 0, "io": 0, "paths": 0, "metrics": 0, "stats": 0,
    "users": 0,
    # building blocks
    "retrieval": 1, "models": 1, "tasks": 1, "data": 1,
    "prompting": 2,
    "pipeline": 3,
    # methods and evaluations built on the pipeline
    "eval": 4, "adapt": 4, "align": 4, "rec": 4, "judge": 4, "soft": 4,
    # entry points
    "serve": 5, "cli": 5,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else "__init__"
    assert key in LAYERS, f"{module}: give the new package or module a layer in LAYERS"
    return LAYERS[key]


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every pllm module `path` imports (absolute or relative, at any depth), with its line."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            out.append((base, node.lineno))
    return [(name, line) for name, line in out if name == "pllm" or name.startswith("pllm.")]


MODULES = sorted((SRC / "pllm").rglob("*.py"))


def test_every_module_has_a_layer() -> None:
    assert MODULES
    for path in MODULES:
        _layer(_module_name(path))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_import_reaches_up(path: Path) -> None:
    module = _module_name(path)
    upward = [f"line {line}: {module} (layer {_layer(module)}) imports {name} (layer {_layer(name)})"
              for name, line in _imports(path) if _layer(name) > _layer(module)]
    assert not upward, "\n".join(upward)


def test_packages_of_one_layer_form_no_cycle() -> None:
    """Within a layer imports may go sideways, but never in a circle (eval and judge once imported each other)."""
    edges: dict[str, set[str]] = {}
    for path in MODULES:
        source = _module_name(path).split(".")[:2]
        for name, _ in _imports(path):
            target = name.split(".")[:2]
            if target != source and len(target) > 1 and len(source) > 1:
                edges.setdefault(source[1], set()).add(target[1])

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in edges.get(start, ()))

    cycles = sorted(p for p in edges if reaches(p, p, {p}))
    assert not cycles, f"packages on an import cycle: {cycles}"
