"""Python snippets in the docs name real things: each block is valid Python, every `from pllm... import X`
exists, and calls of imported pllm callables bind to their real signatures. Nothing is run (the snippets
need trained adapters, a running server or data the tests do not have)."""

from __future__ import annotations

import pytest
from docs_helpers import check_snippet, python_blocks

BLOCKS = python_blocks()


def test_the_docs_show_python():
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize(("source", "code"), BLOCKS, ids=[s for s, _ in BLOCKS])
def test_snippet_names_real_things(source: str, code: str):
    assert check_snippet(code) == [], source


def test_a_wrong_snippet_fails():
    problems = check_snippet("from pllm.pipeline import MethodConfig, Personaliser\n"
                             "MethodConfig(retriever='bm25', kk=4)\n")
    assert len(problems) == 2
    assert "Personaliser" in problems[0] and "kk" in problems[1]
