"""Write the committed alignment report (docs/results/alignment/: report.md, report.json, pareto.png).

    python benchmarks/align_report.py --dsp ../shared/data/dsp/domain_specific_preference.test.json

Sizes are `pllm.align.report.ReportConfig`'s defaults (printed in the report); `--quick` is a smoke run;
`--replot` only redraws pareto.png and report.md from the folder's report.json (no model run).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from pllm.align.report import ReportConfig, rerender, run_report

ROOT = Path(__file__).resolve().parents[1]


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsp", type=Path, default=ROOT.parent / "shared" / "data" / "dsp" /
                        "domain_specific_preference.test.json", help="DSP test file")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "alignment", help="output folder")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run, not the committed report")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: fastest on a shared machine)")
    parser.add_argument("--work-dir", type=Path, default=None, help="work folder (resume; default under PLLM_HOME)")
    parser.add_argument("--replot", action="store_true", help="redraw the plot and markdown from OUT/report.json")
    parser.add_argument("--machine-note", default=None, help="how the machine was shared (with --replot: replaces "
                        "the recorded note)")
    args = parser.parse_args(argv)
    if args.replot:
        return rerender(args.out, machine_note=args.machine_note)
    if not args.dsp.is_file():
        parser.error(f"DSP file not found: {args.dsp}")
    cfg = ReportConfig.quick(args.dsp) if args.quick else ReportConfig(dsp=args.dsp)
    cfg.threads, cfg.work_dir = args.threads, args.work_dir
    cfg.machine_note = args.machine_note or ""
    result = run_report(cfg, args.out, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps({"style_share": result["style_share"], "timings": result["timings"]}, indent=1))
    return result


if __name__ == "__main__":
    main()
