"""Objective-level personalization: per-user preferences, per-user/group DPO adapters, preference soups,
reward-conditioned prompting (RiC), a style judge and evaluation, and the serving hook.

Importing this package registers the forget hook that deletes adapters trained on one user's data.
"""

from pllm.align.adapters import AdapterGenerator, AdapterHost, AdapterRecord, AdapterStore, host_for
from pllm.align.store import Assignment, PreferencePair, PreferenceStore, query_split
from pllm.users.store import FORGET_HOOKS

from pllm.align.adapters import forget_user_adapters  # isort: skip

if forget_user_adapters not in FORGET_HOOKS:
    FORGET_HOOKS.append(forget_user_adapters)

__all__ = ["AdapterGenerator", "AdapterHost", "AdapterRecord", "AdapterStore", "Assignment", "PreferencePair",
           "PreferenceStore", "host_for", "query_split"]
