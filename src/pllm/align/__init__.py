"""Objective-level personalization: per-user preferences, per-user/group DPO adapters, preference soups,
reward-conditioned prompting (RiC), a style judge and evaluation, and the serving hook.

This package module stays light (no torch): importing it registers the forget hook that deletes
adapters trained on one user's data alone. Models live in the submodules (`dpo`, `soup`, `ric`,
`adapters`, `serving`).
"""

from pllm.align.records import AdapterRecord, AdapterStore, forget_user_adapters
from pllm.align.store import PreferencePair, PreferenceStore, query_split
from pllm.users.store import FORGET_HOOKS

if forget_user_adapters not in FORGET_HOOKS:
    FORGET_HOOKS.append(forget_user_adapters)

__all__ = ["AdapterRecord", "AdapterStore", "PreferencePair", "PreferenceStore", "query_split"]
