"""The alignment methods, registered in `pllm.adapt.methods.ADAPTER_METHODS` like every adapter method:
DPO (a user's or group's own adapter), soups (a user's vector over one adapter per dimension) and RiC (one
shared adapter conditioned on the vector). Serving tries them in `serve_rank` order: a user's assigned DPO
adapter, else a soup at their vector, else the assigned RiC adapter. Light: models load inside the functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pllm.adapt.methods import register_adapter_method
from pllm.adapt.store import AdapterStore
from pllm.align.config import DPOSettings, RiCSettings
from pllm.align.soup import SoupSpec, SoupStore, pick_soup
from pllm.models.base import Generator

if TYPE_CHECKING:
    from pllm.align.serving import ServeRequest


def _train_dpo(*args: Any, **kwargs: Any) -> Any:
    from pllm.align.dpo import train_dpo

    return train_dpo(*args, **kwargs)


def _train_ric(*args: Any, **kwargs: Any) -> Any:
    from pllm.align.ric import train_ric

    return train_ric(*args, **kwargs)


def _save_soup(spec: SoupSpec, soups: Any) -> Any:
    """A soup trains nothing: its spec (dimension -> stored adapter) is saved and combined per request."""
    return soups.save(spec)


def _serve_dpo(req: ServeRequest) -> Generator | None:
    if not req.assigned:
        return None
    return req.pool.generator(req.pool.load(req.adapters.get_named(req.assigned)))


def _serve_soup(req: ServeRequest) -> Generator | None:
    if req.vector is None:
        return None
    spec = pick_soup(req.soups, req.assigned, req.vector)
    if spec is None:
        return None
    from pllm.align.serving import soup_for

    return soup_for(req.pool, spec, req.adapters).generator(req.vector)


def _serve_ric(req: ServeRequest) -> Generator | None:
    if req.vector is None or not req.assigned:
        return None
    from pllm.align.ric import RiCGenerator

    return RiCGenerator(req.pool, req.adapters.get_named(req.assigned), req.vector)


def _find_adapter(name: str) -> object:
    return AdapterStore().get_named(name)


def _find_soup(name: str) -> object:
    return SoupStore().get(name)


register_adapter_method("dpo", DPOSettings, _train_dpo, serve=_serve_dpo, serve_rank=10, find=_find_adapter)
register_adapter_method("soup", SoupSpec, _save_soup, serve=_serve_soup, serve_rank=20, find=_find_soup)
register_adapter_method("ric", RiCSettings, _train_ric, serve=_serve_ric, serve_rank=30, find=_find_adapter)
