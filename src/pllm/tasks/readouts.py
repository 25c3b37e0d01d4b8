"""Readouts: a task's label scores (log-likelihoods, one per label) -> one prediction.

The same scores support several readouts, so a scoring run is done once and the readout is chosen
afterwards on a dev split (`choose_readout`), never on test. Contextual calibration (Zhao et al. 2021)
divides the label distribution by the one the model gives a content-free prompt (the same
demonstrations, the query replaced by "N/A"): it removes the label prior the demonstrations set.

- `argmax`: the most likely label;
- `expected`: the probability-weighted mean of numeric labels (RMSE-optimal);
- `median`: the label where the cumulative probability reaches 1/2 (MAE-optimal for numeric labels).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from pllm.errors import InputError
from pllm.registry import Registry
from pllm.tasks.spec import TaskSpec

Readout = Callable[[np.ndarray, Sequence[str]], str]  # (probabilities (C,), labels) -> prediction
READOUTS: Registry[Readout] = Registry("readout")
NUMERIC_READOUTS = ("expected", "median")


def probabilities(logp: np.ndarray, prior: np.ndarray | None = None) -> np.ndarray:
    """Softmax of label log-likelihoods (C,), optionally divided by a content-free prior's (C,)."""
    z = np.asarray(logp, dtype=np.float64)
    if prior is not None:
        z = z - np.asarray(prior, dtype=np.float64)
    p = np.exp(z - z.max())
    return p / p.sum()


@READOUTS.register("argmax")
def _argmax(p: np.ndarray, labels: Sequence[str]) -> str:
    return labels[int(np.argmax(p))]


@READOUTS.register("expected")
def _expected(p: np.ndarray, labels: Sequence[str]) -> str:
    return f"{float(np.dot(p, [float(x) for x in labels])):.4f}"


@READOUTS.register("median")
def _median(p: np.ndarray, labels: Sequence[str]) -> str:
    order = np.argsort([float(x) for x in labels])  # labels in numeric order
    cum = np.cumsum(p[order])
    return labels[int(order[int(np.searchsorted(cum, 0.5 - 1e-12))])]


def check_readout(spec: TaskSpec, name: str) -> None:
    """Fail before any model loads: the name exists and suits the task's labels."""
    READOUTS.get(name)
    if name in NUMERIC_READOUTS and not spec.numeric_labels:
        raise InputError(f"readout {name!r} needs numeric labels; task {spec.name!r} has "
                         f"{list(spec.labels or [])[:5]}", field="readout")


def read_out(spec: TaskSpec, scores: dict[str, float], name: str, prior: dict[str, float] | None = None) -> str:
    """One prediction from one question's label scores (and its content-free prior, when calibrated)."""
    labels = list(spec.labels or [])
    logp = np.array([scores[lab] for lab in labels])
    pri = np.array([prior[lab] for lab in labels]) if prior is not None else None
    return READOUTS.get(name)(probabilities(logp, pri), labels)


def readouts_for(spec: TaskSpec) -> list[str]:
    return [n for n in READOUTS.names() if n not in NUMERIC_READOUTS or spec.numeric_labels]
