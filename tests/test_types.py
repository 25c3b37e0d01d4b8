"""The public surface of the user store, the task spec and the generators names precise types, never `Any`.

Every public method (and `__init__`) of those classes, and every public function and record field of their
modules, is read with `typing.get_type_hints`; an annotation that names a type imported only for the checker
is read from its text.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from collections.abc import Callable, Iterator

import pytest

import pllm.models.base
import pllm.models.hf
import pllm.models.openai_backend
import pllm.tasks.spec
import pllm.users.store

MODULES = [pllm.users.store, pllm.tasks.spec, pllm.models.base, pllm.models.hf, pllm.models.openai_backend]
_ANY_TEXT = re.compile(r"\bAny\b")


def _public(module: types.ModuleType) -> Iterator[tuple[str, object]]:
    for name, obj in vars(module).items():
        if not name.startswith("_") and getattr(obj, "__module__", None) == module.__name__:
            yield name, obj


def _callables() -> Iterator[tuple[str, Callable[..., object]]]:
    """(qualified name, function) for each public function, method, property and `__init__` in MODULES."""
    for module in MODULES:
        for name, obj in _public(module):
            if inspect.isfunction(obj):
                yield f"{module.__name__}.{name}", obj
            elif inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if attr.startswith("_") and attr != "__init__":
                        continue
                    fn = member.fget if isinstance(member, property) else getattr(member, "__func__", member)
                    if inspect.isfunction(fn) and fn.__module__ == module.__name__:
                        yield f"{module.__name__}.{name}.{attr}", fn


def _mentions_any(hint: object) -> bool:
    if hint is typing.Any:
        return True
    if isinstance(hint, str | typing.ForwardRef):
        return bool(_ANY_TEXT.search(hint if isinstance(hint, str) else hint.__forward_arg__))
    return any(_mentions_any(arg) for arg in typing.get_args(hint))


def _hints(fn: Callable[..., object]) -> dict[str, object]:
    """Resolved annotations; those naming a checker-only import stay text."""
    try:
        return typing.get_type_hints(fn)
    except NameError:
        pass
    module_vars = vars(inspect.getmodule(fn))
    out: dict[str, object] = {}
    for name, text in fn.__annotations__.items():
        try:
            out[name] = typing.get_type_hints(types.SimpleNamespace(__annotations__={name: text}), module_vars)[name]
        except NameError:
            out[name] = text
    return out


CALLABLES = dict(_callables())


def test_the_surface_is_found() -> None:
    for name in ("pllm.users.store.UserStore.add_user", "pllm.tasks.spec.TaskSpec.to_dict",
                 "pllm.models.base.Generator.generate", "pllm.models.hf.HFGenerator.from_model",
                 "pllm.models.openai_backend.OpenAIGenerator.generate"):
        assert name in CALLABLES


@pytest.mark.parametrize("name", sorted(CALLABLES))
def test_public_signatures_name_no_any(name: str) -> None:
    fn = CALLABLES[name]
    hints = _hints(fn)
    assert set(inspect.signature(fn).parameters) - {"self", "cls"} <= set(hints), f"{name} has unannotated params"
    bad = sorted(param for param, hint in hints.items() if _mentions_any(hint))
    assert not bad, f"{name}: {bad} typed with Any"


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_public_record_fields_name_no_any(module: types.ModuleType) -> None:
    for name, obj in _public(module):
        if inspect.isclass(obj) and dataclasses.is_dataclass(obj):
            bad = sorted(f for f, hint in typing.get_type_hints(obj).items() if _mentions_any(hint))
            assert not bad, f"{module.__name__}.{name}: fields {bad} typed with Any"


def test_any_is_detected() -> None:
    def loose(x: typing.Any, y: dict[str, typing.Any]) -> list[int]: ...

    assert _mentions_any(_hints(loose)["x"]) and _mentions_any(_hints(loose)["y"])
    assert not _mentions_any(_hints(loose)["return"])
    assert _mentions_any("Sequence[Any] | None") and not _mentions_any("Anything")
