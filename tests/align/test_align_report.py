"""The alignment report reads itself against the issue's targets from report.json alone: met only where every
domain clears the preference bar with its interval above chance, and where enough domains beat the base model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pllm.align.report import rerender, target_lines


def _iv(value: float, low: float, high: float) -> dict[str, float]:
    return {"value": value, "low": low, "high": high}


def _result(dpo_acc: list[tuple[float, float]], dpo_vs_base_low: list[float]) -> dict:
    domains = ["academy", "business", "entertainment", "literature"]
    pref = {d: {"dpo": {"accuracy": _iv(v, lo, 1.0)}, "soup": {"accuracy": _iv(v, lo, 1.0)},
                "ric": {"accuracy": _iv(0.5, 0.4, 0.6)}} for d, (v, lo) in zip(domains, dpo_acc, strict=True)}
    style = {d: {"vs_base": {"dpo": _iv(lo + 0.1, lo, 0.5), "soup": _iv(lo + 0.1, lo, 0.5), "ric": _iv(0.0, -0.1, 0.1)}}
             for d, lo in zip(domains, dpo_vs_base_low, strict=True)}
    return {"preference_accuracy": pref, "style_share": style}


def test_targets_are_met_only_when_every_domain_clears_the_bar() -> None:
    met = target_lines(_result([(0.8, 0.7)] * 4, [0.05, 0.02, 0.01, -0.1]))
    assert "DPO adapter, held-out preference accuracy" in met[0] and "**met** (4 of 4 domains" in met[0]
    assert "**missed** (0 of 4 domains; lowest 0.50)" in met[2]  # RiC
    assert "**met** (3: academy, business, entertainment)" in met[3]
    # one domain at 0.74, or one whose interval reaches down to chance, misses the preference target
    for acc in ([(0.8, 0.7)] * 3 + [(0.74, 0.6)], [(0.8, 0.7)] * 3 + [(0.8, 0.5)]):
        assert "**missed** (3 of 4 domains" in target_lines(_result(acc, [0.1] * 4))[0]
    assert "**missed** (2: academy, business)" in target_lines(_result([(0.8, 0.7)] * 4, [0.1, 0.1, 0.0, -0.2]))[3]


def test_the_committed_report_is_what_its_json_renders(tmp_path):
    """docs/results/alignment/report.md is exactly its report.json rendered (sizes, judge, targets, sharing)."""
    committed = Path(__file__).resolve().parents[2] / "docs" / "results" / "alignment"
    if not (committed / "report.json").is_file():
        pytest.skip("no committed alignment report")
    shutil.copy(committed / "report.json", tmp_path / "report.json")
    rerender(tmp_path)
    assert (tmp_path / "report.md").read_text() == (committed / "report.md").read_text()
    rerender(tmp_path, machine_note="shared with X")  # a new note is rendered and kept in report.json
    assert "Sharing: shared with X" in (tmp_path / "report.md").read_text()
    assert "shared with X" in (tmp_path / "report.json").read_text()
