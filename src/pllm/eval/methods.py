"""Method names as grids and reports write them: `ft+user+stats+bm25@4+cal/median` <-> a MethodConfig.

The one grammar (every command, grid and report reads names here):

    [ft+[user+|soft+]][profile+][stats+][crowd+]<retriever>[+cal][/readout]     (or none, profile, stats, crowd, ft)

`ft+` is the learned method (a task adapter trained on the train split with this rendering, merged into a copy
of the model: `pllm.adapt.learned`); `ft+user+` adds OPPU's second stage, a private adapter per scored user on
top of that merged model (`pllm.adapt.private`); `ft+soft+` adds soft tokens from one user encoder trained on
top of it instead (`pllm.adapt.learned.train_learned_soft`). `MethodConfig.label` writes the same grammar back."""

from __future__ import annotations

import re
from typing import Any

from pllm.errors import InputError
from pllm.pipeline import MethodConfig


def parse_method(name: str, k: int, **common: Any) -> MethodConfig:
    """`[ft+[user+|soft+]][profile+][stats+][crowd+]<retriever>[+cal][/readout]` (or `none`, `profile`, `stats`,
    `crowd`, `ft`, `ft+user`, `ft+soft`) -> a MethodConfig at this k.

    `stats+` prepends the user's output distribution, `crowd+` other users' outputs for the item (train
    split), `ft+` is the learned method (task adapter trained on the train split with this rendering),
    `ft+user+` the learned method with a private adapter per scored user on top (OPPU's second stage), `ft+soft+`
    with a soft-token user encoder on top,
    `+cal` contextual calibration, `/median` (etc.) a readout for this cell instead of the grid's."""
    from pllm.retrieval.base import RETRIEVERS

    head, _, readout = name.partition("/")
    parts = head.split("+")
    ft = parts[0] == "ft"
    parts = parts[1:] if ft else parts
    ft_user = ft and parts[:1] == ["user"]
    parts = parts[1:] if ft_user else parts
    ft_soft = ft and parts[:1] == ["soft"]
    parts = parts[1:] if ft_soft else parts
    calibrate = parts[-1:] == ["cal"]
    parts = parts[:-1] if calibrate else parts
    profile = parts[:1] == ["profile"]
    parts = parts[1:] if profile else parts
    stats = parts[:1] == ["stats"]
    parts = parts[1:] if stats else parts
    crowd = parts[:1] == ["crowd"]
    parts = parts[1:] if crowd else parts
    retriever = parts[0] if len(parts) == 1 else "none" if not parts else ""
    if retriever not in RETRIEVERS:
        raise InputError(f"unknown method {name!r}; use [ft+[user+|soft+]][profile+][stats+][crowd+]<retriever>"
                         f"[+cal][/readout] with a retriever among {', '.join(RETRIEVERS.names())} (or none, profile, "
                         "stats, crowd, ft, ft+user, ft+soft)",
                         field="methods")
    if readout:
        common = {**common, "readout": readout}
    if calibrate:
        common = {**common, "calibrate": True}
    return MethodConfig(retriever=retriever, k=k if retriever != "none" else 0, profile=profile, stats=stats,
                        crowd=crowd, ft=ft, ft_user=ft_user, ft_soft=ft_soft, **common)


def method_from_name(name: str, **common: Any) -> MethodConfig:
    """A method written the way reports label it, k included: `ft+bm25@4/median`, `stats+dense@8+cal`."""
    head, slash, readout = name.partition("/")
    match = re.fullmatch(r"(.*?)@(\d+)(\+cal)?", head)
    if match:
        return parse_method(f"{match[1]}{match[3] or ''}{slash}{readout}", int(match[2]), **common)
    return parse_method(name, 4, **common)

