"""Objective-level personalization: per-user preferences, per-user/group DPO adapters, preference soups,
reward-conditioned prompting (RiC), a style judge and evaluation, and the serving hook.

This package module stays light (no torch); the preference tables and the forget hook that deletes
adapters trained on one user's data alone are the `PREFERENCES` feature (`pllm.align.store`); the adapters
themselves are named owners in `pllm.adapt.store.AdapterStore`. Models live in
the submodules (`dpo`, `soup`, `ric`, `adapters`, `serving`).
"""

from pllm.align.store import PreferencePair, PreferenceStore, query_split

__all__ = ["PreferencePair", "PreferenceStore", "query_split"]
