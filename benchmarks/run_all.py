"""The one entry point for performance benchmarks: runs every `benchmarks/*.py` that defines
`main(argv)`, each with `--quick` unless `--full`, and writes one combined JSON.

Each benchmark runs in its own subprocess (a crash or a leaked thread in one cannot affect the others;
peak memory is per benchmark); the dict its `main()` returns is collected into the combined JSON, so
every benchmark is collected the same way whatever its own output flags are.

    python benchmarks/run_all.py                       # quick runs of everything
    python benchmarks/run_all.py --full --out all.json
    python benchmarks/run_all.py --only eval_loop retrieval
"""

from __future__ import annotations

import argparse
import ast
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Benchmarks that discovery finds but that must not run here, with why (reported in the JSON).
SKIP = {"align_report": "writes the committed report in docs/results/alignment by default; run it on its own"}

# Loads one benchmark file, calls its main(argv) and saves the returned value as JSON.
_RUNNER = """
import importlib.util, json, sys
path, out = sys.argv[1], sys.argv[2]
spec = importlib.util.spec_from_file_location("bench_under_test", path)
mod = importlib.util.module_from_spec(spec)
sys.modules["bench_under_test"] = mod
spec.loader.exec_module(mod)
result = mod.main(sys.argv[3:])
with open(out, "w", encoding="utf-8") as fh:
    json.dump(result if isinstance(result, dict) else {"returned": result}, fh, default=str)
"""


def discover(folder: Path = HERE) -> list[str]:
    """Names of the benchmark modules: files here (not this one) with a top-level `main` taking argv."""
    names = []
    for path in sorted(folder.glob("*.py")):
        if path.name == Path(__file__).name or path.name.startswith("_"):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name == "main" and (node.args.args or node.args.vararg):
                names.append(path.stem)
                break
    return names


def run_one(name: str, *, full: bool, timeout: float, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"{name}.json"
        argv = [*([] if full else ["--quick"]), *extra]
        cmd = [sys.executable, "-c", _RUNNER, str(HERE / f"{name}.py"), str(out), *argv]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=HERE.parent)
        except subprocess.TimeoutExpired:
            return {"status": "timeout", "seconds": round(time.perf_counter() - t0, 1), "argv": argv}
        entry = {"status": "ok" if proc.returncode == 0 else "failed", "returncode": proc.returncode,
                 "seconds": round(time.perf_counter() - t0, 1), "argv": argv}
        if out.is_file():
            try:
                entry["result"] = json.loads(out.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                entry["status"], entry["error"] = "failed", f"unreadable JSON: {exc}"
        elif proc.returncode == 0:
            entry["status"], entry["error"] = "failed", "main() returned nothing"
        if entry["status"] != "ok":
            entry["stderr_tail"] = proc.stderr[-3000:]
        return entry


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description="Run every benchmark and write one combined JSON.")
    ap.add_argument("--full", action="store_true", help="Full runs (default: each with --quick).")
    ap.add_argument("--quick", action="store_true", help="Accepted for symmetry; quick is the default.")
    ap.add_argument("--only", nargs="*", default=None, help="Run only these benchmark names.")
    ap.add_argument("--timeout", type=float, default=3600, help="Seconds per benchmark.")
    ap.add_argument("--out", type=Path, default=Path("benchmarks-results.json"), help="Combined JSON.")
    ap.add_argument("--list", action="store_true", help="List the benchmarks found and exit.")
    args = ap.parse_args(argv)
    names = discover()
    if args.list:
        print("\n".join(names))
        return {"benchmarks": names}
    if args.only:
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            ap.error(f"unknown benchmarks {unknown}; found: {', '.join(names)}")
        names = [n for n in names if n in args.only]
    results: dict = {n: {"status": "skipped", "why": SKIP[n], "seconds": 0} for n in names if n in SKIP}
    for name in [n for n in names if n not in SKIP]:
        print(f"== {name} ({'full' if args.full else 'quick'})", file=sys.stderr, flush=True)
        results[name] = run_one(name, full=args.full, timeout=args.timeout, extra=[])
        print(f"   {results[name]['status']} in {results[name]['seconds']} s", file=sys.stderr, flush=True)
    combined = {"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "mode": "full" if args.full else "quick",
                "machine": {"platform": platform.platform(), "python": platform.python_version()},
                "benchmarks": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(combined, indent=2) + "\n")
    print(f"{'benchmark':<20} {'status':<8} {'seconds':>8}")
    for name, r in results.items():
        print(f"{name:<20} {r['status']:<8} {r['seconds']:>8}")
    print(f"combined JSON: {args.out}")
    return combined


if __name__ == "__main__":
    main()
